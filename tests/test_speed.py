"""Speed flags (``sdgdml/speed.py``): bf16 trains like fp32, a compiled run gives the eager
run's records, fp16's gradient scaler skips overflowing steps, worker defaults follow the job's
CPUs, and JPEG draft decoding barely changes a crop."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sdgdml import speed
from sdgdml.datasets.samples import FileSamples
from sdgdml.datasets import transforms as T
from sdgdml.train import build_parser, train
from sdgdml.train_args import experiment_identity

from helpers import SMALL_IMAGES, TINY_TRAIN

# bf16 vs fp32 after 20 steps on 16-pixel images (helpers.SMALL_IMAGES; measured on the 2-core
# CPU: losses within 0.14% of each other, recall@1 within 0.011): tolerances a few times wider
# than that, far tighter than what training moves (the loss falls by ~23% from step 10 to 20)
LOSS_RTOL = 0.01
RECALL_ATOL = 0.05


def _run(tmp_path, name, extra, steps=20, freq=10):
    args = build_parser().parse_args(TINY_TRAIN + ["--steps", str(steps), "--checkpoint_freq",
                                                   str(freq), "--output_dir",
                                                   str(tmp_path / name), *extra])
    return train(args)


def test_bf16_trains_like_fp32(tmp_path):
    fp32 = _run(tmp_path, "fp32", ["--no_eval_at_start", *SMALL_IMAGES])
    bf16 = _run(tmp_path, "bf16", ["--no_eval_at_start", "--precision", "bf16",
                                   "--channels_last", *SMALL_IMAGES])
    assert bf16[0]["args"]["precision"] == "bf16"
    for run in (fp32, bf16):        # both train: the loss falls
        assert [r["step"] for r in run] == [10, 20] and run[1]["loss"] < 0.95 * run[0]["loss"]
    for a, b in zip(fp32, bf16):
        assert math.isclose(a["loss"], b["loss"], rel_tol=LOSS_RTOL), (a["loss"], b["loss"])
        for key in ("mnist_val_recall@1", "sketch_test_recall@1"):
            assert abs(a[key] - b[key]) <= RECALL_ATOL, (key, a[key], b[key])
    assert fp32[0]["loss"] != bf16[0]["loss"]     # bf16 really ran


def test_compile_gives_the_eager_records(tmp_path):
    """aot_eager: Dynamo capture + AOTAutograd's joint graph, without generating code (the
    inductor backend takes ~150 s to compile this model on the 2-core CPU; it is measured in
    benchmarks/bench_train_throughput.py instead)."""
    why = speed.compile_unavailable(torch.device("cpu"), "aot_eager")
    if why:
        pytest.skip(f"torch.compile unavailable here: {why}")
    extra = ["--no_eval_at_start", *SMALL_IMAGES]     # the capture does not depend on the size
    eager = _run(tmp_path, "eager", extra, steps=2, freq=2)
    compiled = _run(tmp_path, "compiled", extra + ["--compile", "aot_eager"], steps=2, freq=2)
    assert math.isclose(eager[-1]["loss"], compiled[-1]["loss"], rel_tol=1e-5)
    assert abs(eager[-1]["sketch_test_recall@1"] - compiled[-1]["sketch_test_recall@1"]) < 0.01


def test_compile_falls_back_with_one_line(monkeypatch, caplog):
    monkeypatch.setattr(speed, "compile_unavailable", lambda device, backend: "no C++ compiler")
    net = torch.nn.Linear(3, 2)
    holder = torch.nn.Module()
    holder.network = net
    with caplog.at_level(logging.WARNING, logger="sdgdml"):
        compiled = speed.configure(holder, "fp32", False, "inductor", torch.device("cpu"))
    assert not compiled and net._compiled_call_impl is None
    assert [r.getMessage() for r in caplog.records] == [
        "--compile: no C++ compiler; running eager"]


def test_bad_compile_backend_is_refused_before_anything(tmp_path, capsys):
    from sdgdml.train import main

    with pytest.raises(SystemExit, match="error: --compile nope: unknown backend; known: "
                                         "inductor, aot_eager"):
        main(TINY_TRAIN + ["--compile", "nope", "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_config_file_compile_true_means_the_default_backend(tmp_path):
    from sdgdml.run_config import parse_with_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text("compile: true\nprecision: bf16\n")
    args = parse_with_config(build_parser(), ["--config", str(cfg), "--output_dir", "x"])
    assert (args.compile, args.precision) == ("inductor", "bf16")
    cfg.write_text("compile: false\n")
    assert parse_with_config(build_parser(), ["--config", str(cfg), "--output_dir", "x"]) \
        .compile is None


def test_fp16_scaler_skips_an_overflowing_step():
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prec = speed.Precision("fp16", "cpu")
    before = net.weight.detach().clone()
    prec.backward_step(net(torch.full((2, 4), float("inf"))).sum(), opt, net)
    assert torch.equal(net.weight, before)                  # inf gradients: step skipped
    assert prec.scaler.get_scale() == 2.0 ** 16 * 0.5       # and the scale halved
    prec.backward_step(net(torch.ones(2, 4)).sum(), opt, net)
    assert torch.allclose(net.weight, before - 0.1 * 2)     # d(sum)/dw = 2 per weight: stepped
    restored = speed.Precision("fp16", "cpu")
    restored.load_state_dict(prec.state_dict())
    assert restored.scaler.get_scale() == prec.scaler.get_scale()


def test_precision_is_part_of_the_experiment_layout_is_not():
    p = build_parser()
    base = experiment_identity(p.parse_args(["--output_dir", "x"]))
    assert experiment_identity(p.parse_args(["--output_dir", "x", "--channels_last",
                                             "--compile", "--num_workers", "3"])) == base
    assert experiment_identity(p.parse_args(["--output_dir", "x", "--precision", "bf16"])) \
        == {**base, "precision": "bf16"}


def test_default_workers_follow_the_job(monkeypatch):
    assert speed.default_num_workers(has_files=False) == 0      # DigitsDG: in memory
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert speed.default_num_workers(has_files=True) == 5
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert speed.default_num_workers(has_files=True) == 2


def _photo(h: int, w: int) -> np.ndarray:
    """A smooth, photo-like test image: gradients, a few discs and mild texture."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(0)
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0, 1, 2)], -1)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, 1, 3) * (h / max(h, w), w / max(h, w), 0.15)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# mean |difference| of the evaluation crop with and without draft decoding, in units of the
# [0, 1] pixel range. Measured for this 1600x1200 photo: 0.00094 (a quarter of a grey level;
# max 0.031) for a 224 crop from the 1/2-scale decode, 0.00094 (max 0.016) for a 112 crop
# from the 1/4-scale one; the decode itself took 15 ms instead of 33 ms
DRAFT_MAX_MEAN_DIFF = 0.004


def test_jpeg_draft_barely_changes_the_crop(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo(1200, 1600)).save(path, quality=90)
    full = FileSamples("d", [path], [0])
    draft = FileSamples("d", [path], [0])
    draft.draft_size = 2 * 224
    assert full.load(0).size == (1600, 1200)
    assert draft.load(0).size == (800, 600)         # decoded at 1/2: short side 600 >= 448
    tf = T.standard_eval(224, mean=(0, 0, 0), std=(1, 1, 1))
    diff = (tf(full.load(0)) - tf(draft.load(0))).abs()
    assert diff.mean() < DRAFT_MAX_MEAN_DIFF, float(diff.mean())
    draft.draft_size = 2 * 112                      # a smaller crop: 1/4 scale, still close
    assert draft.load(0).size == (400, 300)
    tf = T.standard_eval(112, mean=(0, 0, 0), std=(1, 1, 1))
    assert (tf(full.load(0)) - tf(draft.load(0))).abs().mean() < DRAFT_MAX_MEAN_DIFF
