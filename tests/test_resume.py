"""A run that is killed and restarted resumes from checkpoint.pt and writes exactly the records
of an uninterrupted run with the same seed (CPU; every metric and loss compared exactly, only
timing/memory keys and machine paths left out)."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

import sdgdml.train as train_mod
from helpers import PYTHON, TINY_RESUME as ARGS, run_records, subprocess_env


class Crash(Exception):
    """Stands for the process dying at a chosen point."""


def _train(out, extra=()):
    return train_mod.train(train_mod.build_parser().parse_args(
        ARGS + list(extra) + ["--output_dir", str(out)]))


@pytest.fixture
def reference(tiny_reference):
    """The uninterrupted run's records (conftest)."""
    return tiny_reference


def _crash_on_call(monkeypatch, name, n):
    """Make ``sdgdml.train.<name>`` raise Crash on its n-th call (1-based)."""
    real, calls = getattr(train_mod, name), []

    def wrapped(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise Crash(f"{name} call {n}")
        return real(*a, **k)

    monkeypatch.setattr(train_mod, name, wrapped)


@pytest.mark.parametrize("name,n,resume_step", [
    ("atomic_save", 2, 0),    # record of step 2 written, its checkpoint not: dropped, redone
    ("atomic_save", 3, 2),    # the same for the last record, just before `done`
])
def test_crash_between_record_and_checkpoint(tmp_path, monkeypatch, reference, name, n,
                                             resume_step):
    _crash_on_call(monkeypatch, name, n)
    with pytest.raises(Crash):
        _train(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "done").exists()
    _train(tmp_path)
    assert f"resumed from {tmp_path / 'checkpoint.pt'} at step {resume_step}" in \
        (tmp_path / "out.txt").read_text()
    assert run_records(tmp_path) == reference
    assert not (tmp_path / "checkpoint.pt").exists()   # removed once done


def test_crash_right_after_the_step0_checkpoint(tmp_path, monkeypatch, reference):
    """Resuming from the step-0 checkpoint must not evaluate (and record) step 0 twice."""
    from sdgdml.algorithms import MetricLearning

    def die(self, batch):
        raise Crash("first update")

    monkeypatch.setattr(MetricLearning, "update", die)
    with pytest.raises(Crash):
        _train(tmp_path)
    monkeypatch.undo()
    _train(tmp_path)
    assert "at step 0" in (tmp_path / "out.txt").read_text()
    assert run_records(tmp_path) == reference


def test_half_written_last_line_is_dropped_on_resume(tmp_path, monkeypatch, reference):
    _crash_on_call(monkeypatch, "append_record", 3)    # dies while evaluating step 4
    with pytest.raises(Crash):
        _train(tmp_path)
    monkeypatch.undo()
    with open(tmp_path / "results.jsonl", "a") as f:  # what a killed writer leaves
        f.write('{"step": 4, "loss": 0.')
    _train(tmp_path)
    assert "at step 2 (dropped 1 later records)" in (tmp_path / "out.txt").read_text()
    assert run_records(tmp_path) == reference


def test_sigkill_mid_run_then_restart(tmp_path, reference, train_forks):
    """A real training process (forked ready to train: ``forked_train.py``) killed with SIGKILL
    after a checkpoint, restarted with the command ``python -m sdgdml.train``."""
    cmd = [PYTHON, "-m", "sdgdml.train", *ARGS, "--output_dir", str(tmp_path)]
    env = subprocess_env()
    proc = train_forks.start([*ARGS, "--output_dir", str(tmp_path)])
    results = tmp_path / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = [json.loads(line)["step"] for line in results.read_text().splitlines()
                 if line.endswith("}")] if results.exists() else []
        if steps and steps[-1] >= 2 and (tmp_path / "checkpoint.pt").exists():
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended (exit {proc.returncode}) before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "done").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    assert "resumed from" in (tmp_path / "out.txt").read_text()
    assert (tmp_path / "done").exists()
    assert run_records(tmp_path) == reference
