"""python -m sdgdml.evaluate on a finished tiny DigitsDG run: the run's last record reproduced
exactly, other protocols equal to a direct computation, exports consistent with the metrics,
figures written, and one clear error line for every wrong or missing file."""
from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from sdgdml import evaluation
from sdgdml.datasets import DigitsDG
from sdgdml.datasets import transforms as T
from sdgdml.evaluate import build_parser, evaluate_run, load_network, main, run_evaluation
from sdgdml.networks import create_model
from sdgdml.records import read_records
from sdgdml.train import build_parser as train_parser, train
from helpers import TINY_TRAIN

FAST = ["--map_points", "15", "--gallery_queries", "3", "--gallery_k", "4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 2-step run, evaluated once at its end (its only record), that kept model.pt
    and checkpoint.pt: what every test here evaluates again."""
    out = tmp_path_factory.mktemp("run")
    train(train_parser().parse_args([*TINY_TRAIN, "--output_dir", str(out), "--steps", "2",
                                     "--checkpoint_freq", "2", "--no_eval_at_start",
                                     "--save_model", "--keep_checkpoint"]))
    return out


def _evaluate(run_dir, *extra):
    return evaluate_run(build_parser().parse_args([str(run_dir), *extra]))


def _network(run_dir):
    """The network by hand: the run's hparams, model.pt's weights."""
    hparams = json.loads((run_dir / "hparams.json").read_text())
    net = create_model(hparams)
    net.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return net.eval(), hparams


def _embed(net, hparams, split):
    tf = DigitsDG().eval_transform(hparams["image_size"], T.data_config(hparams))
    return evaluation.embed_split(lambda x: torch.nn.functional.normalize(net(x), dim=1),
                                  split, tf, 256)


@pytest.mark.parametrize("weights", ["model.pt", "checkpoint.pt"])
def test_reproduces_the_last_record_exactly(run_dir, weights, capsys):
    last = read_records(run_dir / "results.jsonl")[-1]
    metrics = _evaluate(run_dir, "--weights", weights)
    assert set(metrics) == {f"{s}_{m}" for s in ("mnist_val", "mnist_test", "sketch_test")
                            for m in ("recall@1", "recall@2", "map@r")}
    assert metrics == {k: last[k] for k in metrics}          # bit-identical, not approx
    shown = capsys.readouterr().out
    assert f"{100 * last['sketch_test_recall@1']:.2f}" in shown and weights in shown


def test_a_bf16_run_is_evaluated_under_its_autocast(tmp_path):
    out = tmp_path / "bf16"
    # one step, 8-pixel images: bf16 convolutions are slow on a CPU without AVX-512 (see
    # helpers.SMALL_IMAGES), and what is tested is the autocast, not the network's size
    records = train(train_parser().parse_args([*TINY_TRAIN, "--output_dir", str(out), "--steps",
                                               "1", "--checkpoint_freq", "1", "--save_model",
                                               "--no_eval_at_start", "--precision", "bf16",
                                               "--hparams", '{"image_size": 8}']))
    metrics = _evaluate(out)
    assert metrics == {k: records[-1][k] for k in metrics}   # bit-identical, not approx
    fp32 = run_evaluation(load_network(out, records[-1]["hparams"], None),
                          argparse.Namespace(**{**records[-1]["args"], "precision": "fp32"}),
                          records[-1]["hparams"])[0]
    assert fp32 != metrics                  # so the autocast is what made them equal


def test_another_target_and_protocol_equal_a_direct_computation(run_dir):
    metrics = _evaluate(run_dir, "--targets", "uci", "--protocol", "cross", "--metrics",
                        "recall@1", "class_recall@1", "map@r", "nmi", "ami")
    net, hparams = _network(run_dir)
    ds = DigitsDG(source="mnist", targets=["uci"])
    uci, mnist = _embed(net, hparams, ds.test_split("uci")), _embed(net, hparams,
                                                                    ds.test_split("mnist"))
    direct = evaluation.retrieval_metrics(
        uci, ds.test_split("uci").labels, mnist, ds.test_split("mnist").labels,
        metrics=["recall@1", "class_recall@1", "map@r", "nmi", "ami"])
    assert {k: metrics[f"uci->mnist_test_{k}"] for k in direct} == direct
    assert "uci_test_recall@1" not in metrics and "sketch_test_recall@1" not in metrics
    assert 0 < direct["recall@1"] <= 1 and 0 < direct["nmi"] < 1


def test_ucdr_protocol_equals_cross_domain_metrics(run_dir):
    metrics = _evaluate(run_dir, "--ucdr", "open", "--ucdr_metrics", "map@all", "precision@5")
    net, hparams = _network(run_dir)
    from sdgdml.datasets import ucdr

    ds = DigitsDG(source="mnist", targets=["sketch"])
    (ev,) = ucdr.eval_splits(ds, ucdr.make_protocol(ds, "open", 0))
    direct = evaluation.cross_domain_metrics(
        _embed(net, hparams, ev.query), ev.query.labels, _embed(net, hparams, ev.gallery),
        ev.gallery.labels, ["map@all", "precision@5"], evaluation.OpenSetRule(seed=0))
    assert metrics == {f"mnist->sketch_open_{k}": v for k, v in direct.items()}
    assert {"open_acc", "open_auroc", "map@all"} <= set(direct)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_export_embeddings_and_rankings_agree_with_the_metrics(run_dir, tmp_path):
    metrics = _evaluate(run_dir, "--export", str(tmp_path), "--top_k", "5")
    emb = np.load(tmp_path / "sketch_test.npy")
    images = _read_csv(tmp_path / "sketch_test.csv")
    ds = DigitsDG(source="mnist", targets=["sketch"])
    test = ds.test_split("sketch")
    embed_dim = json.loads((run_dir / "hparams.json").read_text())["embed_dim"]
    assert emb.shape == (len(test), embed_dim) and len(images) == len(test)
    assert [int(r["label"]) for r in images] == test.labels.tolist()
    assert {r["domain"] for r in images} == {"sketch"}
    assert images[0]["class"] == DigitsDG.CLASSES[test.labels[0]]
    ranks = _read_csv(tmp_path / "sketch_test_top5.csv")
    assert len(ranks) == 5 * len(test)
    top1 = [r for r in ranks if r["rank"] == "1"]
    assert np.mean([int(r["correct"]) for r in top1]) == pytest.approx(
        metrics["sketch_test_recall@1"], abs=1e-12)
    for r in ranks[:25]:                  # similarity = inner product of the exported rows
        q, g = int(r["query"]), int(r["gallery"])
        assert q != g and float(r["similarity"]) == pytest.approx(float(emb[q] @ emb[g]),
                                                                  abs=1e-5)
        assert int(r["correct"]) == (r["query_label"] == r["gallery_label"])


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.rows, self.frames = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.rows += tag == "tr"
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "img":
            self.frames.append(re.search(r"border:4px solid (#\w+)", attrs["style"]).group(1))


def test_figures_are_written_and_the_html_ships_what_it_references(run_dir, tmp_path):
    _evaluate(run_dir, "--figures", str(tmp_path / "a"), "--protocol", "both", *FAST)
    out = tmp_path / "a"
    names = {p.name for p in out.iterdir()}
    figs = {"gallery_sketch_test", "gallery_sketch_to_mnist_test", "embedding_map",
            "training_curves"}
    assert names == ({f"{f}.{ext}" for f in figs for ext in ("png", "pdf")}
                     | {"gallery_sketch_test.html", "gallery_sketch_to_mnist_test.html"})
    for name in {n for n in names if n.endswith(".png")}:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert len(np.unique(np.asarray(im.convert("L")))) > 10   # not a blank canvas
    page = _Links()
    page.feed((out / "gallery_sketch_test.html").read_text())
    for link in page.links:                                 # inline images or shipped files
        assert link.startswith("data:image/png;base64,") or (out / link).is_file()
    assert "gallery_sketch_test.png" in page.links
    assert page.rows == 1 + 3 and len(page.frames) == 3 * (1 + 4)    # rank header + queries
    assert set(page.frames) <= {"#4d4d4d", "#1a9850", "#d73027"}
    # the same queries and results every time
    _evaluate(run_dir, "--figures", str(tmp_path / "b"), "--protocol", "both", *FAST)
    for name in ("gallery_sketch_test.html", "gallery_sketch_to_mnist_test.html"):
        assert (tmp_path / "b" / name).read_text() == (out / name).read_text()


def test_gallery_frames_follow_the_ranking(run_dir, tmp_path):
    from sdgdml import figures

    net, hparams = _network(run_dir)
    test = DigitsDG(source="mnist", targets=["sketch"]).test_split("sketch")
    emb = _embed(net, hparams, test)
    figures.retrieval_gallery(test, emb, None, None, tmp_path / "g", DigitsDG.CLASSES,
                              n_queries=5, k=3, seed=1)
    page = _Links()
    page.feed((tmp_path / "g.html").read_text())
    chosen = figures.choose_queries(test.labels, 5, seed=1)
    _, idx = evaluation.knn(emb, emb, 3, exclude_self=True)
    expected = []
    for q in chosen:
        expected += ["#4d4d4d"] + ["#1a9850" if test.labels[g] == test.labels[q] else "#d73027"
                                   for g in idx[q].tolist()]
    assert page.frames == expected


def test_choose_queries_is_seeded_and_class_balanced():
    from sdgdml.figures import choose_queries

    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    chosen = choose_queries(labels, 7, seed=3)
    assert chosen == choose_queries(labels, 7, seed=3) != choose_queries(labels, 7, seed=4)
    assert labels[chosen].tolist() == [0, 1, 2, 0, 1, 2, 0] and len(set(chosen)) == 7
    assert sorted(choose_queries(labels[:3], 10)) == [0, 1, 2]    # fewer images than asked


def test_training_curves_and_embedding_map_from_arrays(tmp_path):
    from sdgdml import figures

    records = [{"step": s, "loss": 1 / (s + 1), "loss_see": 0.1, "lr": 0.01, "step_time": 0.2,
                "a_test_recall@1": 0.1 * s, "a_test_map@r": 0.5} for s in range(1, 5)]
    path, _ = figures.training_curves(records, tmp_path / "c.png")
    assert path.stat().st_size > 5000
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (30, 8)), rng.normal(5, 1, (30, 8))])
    path, _ = figures.embedding_map(x, ["a"] * 30 + ["b"] * 30, [True, False] * 30,
                                    tmp_path / "m.png", method="tsne")
    assert path.stat().st_size > 5000
    if not figures.umap_available():
        with pytest.raises(ValueError, match="umap-learn"):
            figures.project_2d(x, "umap")


def _error(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_wrong_or_missing_files_are_one_clear_line(run_dir, tmp_path):
    assert "run folder not found" in _error([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert "args.json is missing" in _error([str(tmp_path / "empty")])
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("args.json", "hparams.json", "results.jsonl"):
        (bare / name).write_text((run_dir / name).read_text())
    assert "neither model.pt nor checkpoint.pt" in _error([str(bare)])
    (bare / "model.pt").write_bytes(b"not a torch file at all")
    assert "not a readable weights file" in _error([str(bare)])
    assert "weights file not found" in _error([str(bare), "--weights", "other.pt"])
    torch.save({"x": torch.zeros(3)}, bare / "model.pt")
    assert "does not fit the network" in _error([str(bare)])
    torch.save([1, 2], bare / "model.pt")
    assert "holds no network weights" in _error([str(bare)])
    assert "unknown metric" in _error([str(run_dir), "--metrics", "ndcg"])
    assert "unknown domain" in _error([str(run_dir), "--targets", "svhn"])
    assert "--top_k must be at least 1" in _error([str(run_dir), "--top_k", "0"])


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/sdgdml_pwned_by_pickle", "w"))


def test_a_weights_file_never_executes_code(run_dir, tmp_path):
    bare = tmp_path / "evil"
    bare.mkdir()
    for name in ("args.json", "hparams.json"):
        (bare / name).write_text((run_dir / name).read_text())
    marker = "/tmp/sdgdml_pwned_by_pickle"
    if os.path.exists(marker):
        os.remove(marker)
    with open(bare / "model.pt", "wb") as f:
        pickle.dump(_Exploit(), f, protocol=2)
    assert "not a readable weights file" in _error([str(bare)])
    assert not os.path.exists(marker)


def test_device_errors_and_args_of_an_older_run(run_dir, tmp_path):
    assert "is not a device" in _error([str(run_dir), "--device", "gpu0"])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _error([str(run_dir), "--device", "cuda"])
    old = tmp_path / "old"
    old.mkdir()
    args = json.loads((run_dir / "args.json").read_text())
    for newer_flag in ("ucdr", "open_rule", "val_protocol"):      # unknown to an older run
        del args[newer_flag]
    (old / "args.json").write_text(json.dumps(args))
    for name in ("hparams.json", "model.pt"):
        (old / name).write_bytes((run_dir / name).read_bytes())
    last = read_records(run_dir / "results.jsonl")[-1]
    metrics = _evaluate(old, "--metrics", "recall@1")
    assert metrics == {k: last[k] for k in metrics}


def test_help_explains_every_flag():
    for action in build_parser()._actions:
        assert action.help and len(action.help) > 8, action.dest


def test_umap_projection_when_umap_learn_is_installed(tmp_path):
    pytest.importorskip("umap")
    from sdgdml import figures

    x = np.random.default_rng(0).normal(size=(60, 8))
    xy, name = figures.project_2d(x, "auto", seed=0)
    assert name == "UMAP" and xy.shape == (60, 2) and np.isfinite(xy).all()


def test_split_and_source_overrides_name_the_evaluated_domains(run_dir):
    metrics = _evaluate(run_dir, "--split", "DigitsDG:mnist->negative", "--metrics", "recall@1")
    assert set(metrics) == {"mnist_val_recall@1", "mnist_test_recall@1",
                            "negative_test_recall@1"}
    metrics = _evaluate(run_dir, "--source", "uci", "--metrics", "recall@1")
    assert {k.split("_")[0] for k in metrics} == set(DigitsDG.DOMAINS)     # uci + every other
    assert "uci_val_recall@1" in metrics
    assert "already names the dataset" in _error([str(run_dir), "--split", "DigitsDG:mnist",
                                                  "--targets", "uci", "--source", "mnist"])
