"""``python -m sdgdml.datasets check`` and what training does with the same findings: a removed
domain and corrupt files are reported precisely, training on an incomplete dataset fails with
the same report before a model is built, corrupt files fail loudly or are skipped by flag, and
file indexes are built once and cached."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import datatrees as T
import sdgdml.train
from sdgdml import sweep
from sdgdml.records import read_records
from sdgdml.datasets import PACS, FileDataset, create_dataset
from sdgdml.datasets.__main__ import main as datasets_main

TINY = json.dumps({"backbone": "digits_cnn", "pretrained": False, "image_size": 16,
                   "embed_dim": 8, "batch_size": 8, "freeze_bn": False, "warmup_epochs": 0})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def pacs(tmp_path):
    data = tmp_path / "data"
    images = T.folder_tree(data / "PACS", {d: d for d in PACS.DOMAINS}, PACS.CLASSES, 4)
    return data, images


def _truncated_jpeg(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])


def _no_model(*args, **kwargs):
    raise AssertionError("a model was built")


def _train(data, out, *extra):
    return sdgdml.train.main(["--split", "PACS:photo->sketch", "--data_dir", str(data),
                              "--output_dir", str(out), "--quiet", "--hparams", TINY,
                              "--metrics", "recall@1", *extra])


def test_check_reports_a_removed_domain_and_corrupt_files(pacs, capsys):
    data, images = pacs
    assert datasets_main(["check", "--data_dir", str(data), "--dataset", "PACS"]) == 0
    out = capsys.readouterr().out
    assert "PACS: ready" in out and out.count("ok (verified)") == 4

    import shutil
    shutil.rmtree(data / "PACS" / "cartoon")
    garbage = data / "PACS" / "photo" / "dog" / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    truncated = data / "PACS" / "sketch" / "house" / "truncated.jpg"
    _truncated_jpeg(truncated)
    assert datasets_main(["check", "--data_dir", str(data), "--dataset", "PACS"]) == 1
    out = capsys.readouterr().out
    assert f"cartoon: domain folder not found: {data / 'PACS' / 'cartoon'}" in out
    assert (f"photo: corrupt image file {garbage} (UnidentifiedImageError: cannot identify "
            f"image file '{garbage}')") in out
    assert f"sketch: corrupt image file {truncated} (OSError: image file is truncated" in out
    assert "3 problem(s)" in out and "PACS: NOT READY" in out
    assert "expected layout:" in out and "PACS/<domain>/<class>/<image>" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (
        ["art_painting"], ["cartoon"], ["photo"], ["sketch"])}
    assert rows["cartoon"].split()[1] == "0" and rows["cartoon"].endswith("MISSING")
    assert rows["photo"].split()[1] == "29" and rows["photo"].endswith("1 corrupt")
    assert rows["art_painting"].endswith("ok (verified)")
    # without decoding, only the structure is checked
    assert datasets_main(["check", "--data_dir", str(data), "--dataset", "PACS",
                          "--no_verify"]) == 1
    out = capsys.readouterr().out
    assert "corrupt" not in out and "1 problem(s)" in out


def test_check_runs_as_a_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "sdgdml.datasets", "check", "--data_dir",
                             str(tmp_path), "--dataset", "Office31"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert f"dataset folder not found (tried {tmp_path / 'office31'}" in result.stdout
    assert "<domain>/images/<class>/<image>" in result.stdout


def test_training_on_an_incomplete_dataset_fails_before_building_a_model(pacs, tmp_path,
                                                                         monkeypatch, capsys):
    data, _ = pacs
    import shutil
    shutil.rmtree(data / "PACS" / "sketch")
    datasets_main(["check", "--data_dir", str(data), "--dataset", "PACS", "--no_verify"])
    problem = next(line for line in capsys.readouterr().out.splitlines() if "sketch:" in line)
    monkeypatch.setattr(sdgdml.train, "create_model", _no_model)
    with pytest.raises(SystemExit) as e:
        _train(data, tmp_path / "run")
    assert problem in str(e.value)                       # the check's very line
    assert "expected layout:" in str(e.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_corrupt_files_stop_training_with_their_name_or_are_skipped(pacs, tmp_path, capsys):
    data, images = pacs
    bad = data / "PACS" / "photo" / "dog" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(SystemExit, match=f"cannot decode image file {bad}"):
        _train(data, tmp_path / "a", "--steps", "2")
    _train(data, tmp_path / "b", "--steps", "2", "--skip_corrupt")
    log = (tmp_path / "b" / "out.txt").read_text()
    assert "skipped 1 corrupt image files of photo (--skip_corrupt)" in log
    ds = create_dataset("PACS", data, "photo", skip_corrupt=True)
    assert str(bad) not in ds.domain("photo").paths and len(ds.domain("photo")) == 28
    assert ds.skipped == {"photo": [str(bad)]}


def test_known_corrupt_files_fail_fast_before_a_model(pacs, tmp_path, monkeypatch, capsys):
    data, _ = pacs
    bad = data / "PACS" / "sketch" / "dog" / "zz_broken.jpg"
    bad.write_bytes(b"garbage")
    datasets_main(["check", "--data_dir", str(data), "--dataset", "PACS"])  # remembers it
    # a sweep checks its data as its runs will read it: refused, unless they skip corrupt files
    argv = ["launch", "--splits", "PACS:photo->sketch", "--algorithms", "ProxyAnchor",
            "--data_dir", str(data), "--output_dir", str(tmp_path / "sweep"),
            "--launcher", "local", "--hparams", TINY]
    with pytest.raises(SystemExit, match=f"the data of this sweep is not usable(.|\n)*{bad}"):
        sweep.main(argv)
    sweep.main(argv + ["--train_args=--skip_corrupt --steps 2 --quiet"])
    assert "ran 1 runs (in-process, serially); 0 failed" in capsys.readouterr().out
    monkeypatch.setattr(sdgdml.train, "create_model", _no_model)
    with pytest.raises(SystemExit) as e:
        _train(data, tmp_path / "run")
    assert f"sketch: corrupt image file {bad}" in str(e.value)
    assert "--skip_corrupt" in str(e.value)
    T.write_image(bad)                                   # repaired in place: usable again
    create_dataset("PACS", data, "photo", ["sketch"]).validate()


def test_indexes_are_built_once_and_rebuilt_only_after_changes(pacs, monkeypatch):
    data, _ = pacs
    built = []
    original = PACS.build_index
    monkeypatch.setattr(PACS, "build_index",
                        lambda self, d: built.append(d) or original(self, d))
    create_dataset("PACS", data, "photo", ["sketch"]).validate()
    assert sorted(built) == ["photo", "sketch"]
    create_dataset("PACS", data, "photo", ["sketch"]).validate()
    assert len(built) == 2                                        # from the cache
    new = data / "PACS" / "sketch" / "guitar" / "new.jpg"
    T.write_image(new)
    ds = create_dataset("PACS", data, "photo", ["sketch"])
    ds.validate()
    assert built[2:] == ["sketch"] and str(new) in ds.domain("sketch").paths
    new.unlink()
    ds = create_dataset("PACS", data, "photo", ["sketch"])
    assert len(ds.domain("sketch")) == 28 and built[3:] == ["sketch"]


def test_training_never_walks_the_dataset_again(pacs, tmp_path, monkeypatch):
    data, _ = pacs
    create_dataset("PACS", data, "photo", ["sketch"]).validate()     # index cached

    def no_walk(*args, **kwargs):
        raise AssertionError("directory walk during training")

    monkeypatch.setattr(FileDataset, "build_index", no_walk)
    monkeypatch.setattr("sdgdml.datasets.files.list_images", no_walk)
    monkeypatch.setattr("sdgdml.datasets.files.list_folders", no_walk)
    _train(data, tmp_path / "run", "--epochs", "3", "--checkpoint_freq", "1")
    records = read_records(tmp_path / "run" / "results.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]         # 9 images, batch 8: 1 step
    assert (tmp_path / "run" / "done").exists()
