"""Files a run writes and reads back: atomic writes on a full disk leave no temporary file and
no damage, and a checkpoint is loaded without ever running code from it."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sdgdml import atomic
from sdgdml.atomic import DiskFullError
from sdgdml.records import append_record, read_records, truncate_records, write_json
from sdgdml.runstate import (CheckpointError, atomic_save, load_checkpoint, rng_state,
                             set_aside, set_rng_state)


@contextlib.contextmanager
def small_disk(folder: Path, size_kib: int, monkeypatch):
    """A filesystem of ``size_kib``: a real tmpfs when root may mount one, else a writer
    that raises ENOSPC once ``size_kib`` have been written through it."""
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
        capture_output=True).returncode == 0
    if not mounted:
        written = [sum(p.stat().st_size for p in folder.iterdir())]
        real = atomic._ErrorKeepingWriter.write

        def write(self, data):
            written[0] += len(data)
            if written[0] > size_kib * 1024:
                err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.error = err
                raise err
            return real(self, data)

        monkeypatch.setattr(atomic._ErrorKeepingWriter, "write", write)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_damages_nothing_and_leaves_no_tmp(tmp_path, monkeypatch):
    with small_disk(tmp_path / "fs", 512, monkeypatch) as disk:
        small = {"algorithm": {"w": torch.arange(10.0)}, "rng": rng_state(), "step": 2}
        atomic_save(small, disk / "checkpoint.pt")
        write_json(disk / "args.json", {"lr": 1})
        with pytest.raises(DiskFullError) as e:
            atomic_save({**small, "algorithm": {"w": torch.zeros(2 ** 18)}},   # 1 MiB
                        disk / "checkpoint.pt")
        message = str(e.value)
        assert str(disk / "checkpoint.pt") in message and "MiB free" in message
        assert "unexpected pos" not in message
        assert not list(disk.glob("*.tmp"))
        assert torch.equal(load_checkpoint(disk / "checkpoint.pt", "cpu")["algorithm"]["w"],
                           torch.arange(10.0))
        with pytest.raises(DiskFullError):
            write_json(disk / "args.json", {"x": "y" * 2 ** 20})
        assert json.loads((disk / "args.json").read_text()) == {"lr": 1}
        assert not list(disk.glob("*.tmp"))


def test_a_full_disk_leaves_no_half_record(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    with small_disk(tmp_path / "fs", 64, monkeypatch) as disk:
        path = disk / "results.jsonl"
        append_record(path, {"step": 0})
        before = path.read_bytes()
        with pytest.raises(DiskFullError, match="results.jsonl"):
            append_record(path, {"step": 1, "pad": "x" * 2 ** 17})
        assert path.read_bytes() == before
        append_record(path, {"step": 1})        # space was not the record's: it appends
        assert [r["step"] for r in read_records(path)] == [0, 1]


def test_any_failure_removes_the_tmp_file(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    path.write_text('{"step": 0}\n{"step": 2}\n')

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        truncate_records(path, 0)
    assert path.read_text() == '{"step": 0}\n{"step": 2}\n'
    assert list(tmp_path.iterdir()) == [path]


class RunsCode:
    """A pickle that runs a command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"algorithm": {}, "rng": RunsCode(marker), "step": 1}, ckpt)
    with pytest.raises(CheckpointError, match="nothing in it ran"):
        load_checkpoint(ckpt, "cpu")
    assert not marker.exists()
    torch.load(ckpt, weights_only=False)         # what the unsafe load did
    assert marker.exists()


def test_unreadable_checkpoints_are_reported_and_set_aside(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"algorithm": {}, "rng": rng_state(), "step": 3}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100])               # cut short
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(ckpt, "cpu")
    torch.save([1, 2], ckpt)
    with pytest.raises(CheckpointError, match="not an sdgdml checkpoint"):
        load_checkpoint(ckpt, "cpu")
    aside = set_aside(ckpt)
    assert not ckpt.exists() and aside.name.startswith("checkpoint.pt.bad-")
    assert torch.load(aside, weights_only=True) == [1, 2]


@pytest.mark.parametrize("legacy", [False, True])
def test_rng_states_survive_the_safe_load(tmp_path, legacy):
    """Every RNG draws the same after save -> safe load -> restore; ``legacy``: NumPy's
    state stored as an ndarray, as checkpoints of earlier versions hold it."""
    state = rng_state()
    if legacy:
        state["numpy"] = np.random.get_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    atomic_save({"algorithm": {}, "rng": state, "step": 0}, tmp_path / "c.pt")
    random.random(), np.random.rand(), torch.rand(1)        # move every RNG on
    set_rng_state(load_checkpoint(tmp_path / "c.pt", "cpu")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
