"""A run survives faults: 6 SIGKILLs of a real DigitsDG training process at random points
(while it starts, steps, evaluates or writes its checkpoint; each process forked ready to train
by ``forked_train.py``), then one more such process that finishes it, end in exactly the
records of an uninterrupted run (timing and memory fields aside) and leave no temporary file
(the command ``python -m sdgdml.train`` resuming a killed run: test_resume); a second process
on a running run, a planted checkpoint, a NaN loss and a full disk each stop with one line and
lose nothing."""
from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch

import sdgdml.train as train_mod
from forked_train import TrainForks
from helpers import STYLE_SPLIT, TINY_RESUME as ARGS, TINY_TRAIN, run_records, train_main_message
from sdgdml import atomic
from sdgdml.records import read_records
from sdgdml.runstate import load_checkpoint

# the kill loop's run checkpoints 9 times (steps 0-8): a kill lets it gain one checkpoint at
# most, or two when a loaded machine makes the test miss the moment a checkpoint's temporary
# file exists, so it does not finish before the 6th kill. Each mode (the phase a kill aims at)
# gets 2 of the 6 kills; the style-domain split (helpers.STYLE_SPLIT) halves each evaluation
KILL_ARGS = TINY_TRAIN + STYLE_SPLIT + ["--steps", "8", "--checkpoint_freq", "1"]
KILLS = 6
MODES = ("checkpoint", "eval", "step")


def _count(path, text: str) -> int:
    return path.read_text().count(text) if path.exists() else 0


def _records(run) -> int:
    path = run / "results.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}")) \
        if path.exists() else 0


def _wait(condition, timeout: float, proc) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not condition():
        time.sleep(0.002)


def _kill_once(forks: TrainForks, run, attempt: int, mode: str, rng: random.Random) -> bool:
    """Start the run (a training process forked from ``forks``, ready to train without the
    command's seconds of imports), SIGKILL it at a point chosen by ``mode``; False if it
    finished first."""
    proc = forks.start([*KILL_ARGS, "--output_dir", str(run)])
    # this attempt's setup is logged (attempts before it logged theirs)
    _wait(lambda: _count(run / "out.txt", "checkpoint every") > attempt, 120, proc)
    if mode == "checkpoint":        # while checkpoint.pt.tmp is being written
        _wait(lambda: (run / "checkpoint.pt.tmp").exists(), 60, proc)
    elif mode == "step":            # just after a record: stepping or saving its checkpoint
        seen = _records(run)
        _wait(lambda: _records(run) > seen, 60, proc)
        time.sleep(rng.uniform(0, 0.05))
    else:       # a random moment of the restore, first step and evaluation: mostly evaluating
        seen, end = _records(run), time.time() + rng.uniform(0, 0.6)
        # or as soon as its record is written (then while its checkpoint is): one record at most
        _wait(lambda: time.time() > end or _records(run) > seen, 60, proc)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.fixture
def reference(tiny_reference):
    """The uninterrupted ``ARGS`` run's records (conftest)."""
    return tiny_reference


@pytest.fixture(scope="module")
def kill_reference(tmp_path_factory):
    return _uninterrupted(tmp_path_factory, KILL_ARGS, list(range(9)))


def _uninterrupted(tmp_path_factory, args: list[str], steps: list[int]) -> list[dict]:
    out = tmp_path_factory.mktemp("uninterrupted")
    train_mod.train(train_mod.build_parser().parse_args(args + ["--output_dir", str(out)]))
    records = run_records(out)
    assert [r["step"] for r in records] == steps
    return records


def test_six_random_sigkills_then_identical_records(tmp_path, kill_reference, train_forks):
    seed = time.time_ns() % 10 ** 6
    rng = random.Random(seed)
    run = tmp_path / "run"
    kills = [_kill_once(train_forks, run, i, MODES[i % len(MODES)], rng) for i in range(KILLS)]
    assert all(kills), f"the run finished before all {KILLS} kills (seed {seed})"
    assert not (run / "done").exists()
    assert train_forks.start([*KILL_ARGS, "--output_dir", str(run)]).wait() == 0, f"seed {seed}"
    assert (run / "done").exists()
    assert run_records(run) == kill_reference, f"seed {seed}"
    assert not list(run.glob("*.tmp")), f"seed {seed}"


# ----------------------------------------------------------------------------- other faults
def _main(run, *extra):
    """This file's run of ``python -m sdgdml.train`` in this process (``train_main_message``)."""
    return train_main_message(ARGS + list(extra) + ["--output_dir", str(run)])


def test_a_second_train_on_a_locked_run_exits_without_writing(tmp_path):
    from test_locking import hold_in_subprocess

    run = tmp_path / "run"
    run.mkdir()
    holder = hold_in_subprocess(run)
    try:
        message = _main(run)
        assert message.startswith("error: ") and f"pid {holder.pid}" in message
        assert "\n" not in message
        assert [p.name for p in run.iterdir()] == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_planted_checkpoint_never_runs_and_can_be_set_aside(tmp_path, tiny_reference_run,
                                                              reference):
    from test_safe_files import RunsCode

    run, marker = tmp_path / "run", tmp_path / "ran"
    shutil.copytree(tiny_reference_run, run)        # a run of ARGS with its records (0, 2, 4)
    (run / "done").unlink()
    torch.save({"algorithm": {}, "rng": RunsCode(marker), "step": 4}, run / "checkpoint.pt")
    message = _main(run)
    assert message.startswith("error: ") and "nothing in it ran" in message
    assert "--discard_bad_checkpoint" in message and not marker.exists()
    assert _main(run, "--discard_bad_checkpoint") is None
    assert not marker.exists() and len(list(run.glob("checkpoint.pt.bad-*"))) == 1
    assert run_records(run) == reference             # restarted from scratch


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from sdgdml.algorithms import MetricLearning

    real, calls = MetricLearning.update, []

    def update(self, batch):
        calls.append(1)
        out = real(self, batch)
        return {**out, "loss": float("nan")} if len(calls) == 3 else out

    monkeypatch.setattr(MetricLearning, "update", update)
    run = tmp_path / "run"
    message = _main(run)
    assert message.startswith("error: ") and "loss is nan at step 3" in message
    assert "step 2" in message
    assert [r["step"] for r in read_records(run / "results.jsonl")] == [0, 2]
    assert load_checkpoint(run / "checkpoint.pt", "cpu")["step"] == 2
    assert not (run / "done").exists()


def test_a_full_disk_stops_with_one_line_and_the_run_resumes(tmp_path, monkeypatch, reference):
    """The disk fills up before the step-2 checkpoint (a real 4 MiB tmpfs when root, else a
    writer that raises ENOSPC): one line naming the file and the free space, no *.tmp, the
    step-0 checkpoint intact; with space again the run resumes to the reference records."""
    disk = tmp_path / "fs"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode == 0
    run, saves = disk / "run", []
    real_save, real_write = train_mod.atomic_save, atomic._ErrorKeepingWriter.write

    def no_space(self, data):
        self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise self.error

    def save(obj, path):
        saves.append(path)
        if len(saves) == 2:          # room for half a checkpoint
            if mounted:
                free = shutil.disk_usage(disk).free - path.stat().st_size // 2
                (disk / "filler").write_bytes(b"\0" * free)
            else:
                monkeypatch.setattr(atomic._ErrorKeepingWriter, "write", no_space)
        return real_save(obj, path)

    monkeypatch.setattr(train_mod, "atomic_save", save)
    try:
        message = _main(run)
        assert message.startswith("error: cannot write ") and "\n" not in message
        assert str(run / "checkpoint.pt") in message and "MiB free" in message
        assert not list(run.glob("*.tmp"))
        assert load_checkpoint(run / "checkpoint.pt", "cpu")["step"] == 0
        monkeypatch.setattr(train_mod, "atomic_save", real_save)
        monkeypatch.setattr(atomic._ErrorKeepingWriter, "write", real_write)
        (disk / "filler").unlink(missing_ok=True)
        assert _main(run) is None
        assert run_records(run) == reference
    finally:
        for handler in list(train_mod.log.handlers):      # out.txt, open on the tmpfs
            handler.close()
            train_mod.log.removeHandler(handler)
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
