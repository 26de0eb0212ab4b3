"""A run survives being killed anywhere: 10 SIGKILLs of a real DigitsDG training process at
random points (while it starts, steps, evaluates or writes its checkpoint), each followed by
the same command, end in exactly the records of an uninterrupted run (timing and memory
fields aside) and leave no temporary file."""
from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

import sdgdml.train as train_mod
from helpers import PYTHON, TINY_TRAIN, run_records, subprocess_env

ARGS = TINY_TRAIN + ["--steps", "8", "--checkpoint_freq", "2"]
KILLS = 10
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


def _kill_once(run, attempt: int, mode: str, rng: random.Random) -> bool:
    """Start the run, SIGKILL it at a point chosen by ``mode``; False if it finished first."""
    proc = subprocess.Popen([PYTHON, "-m", "sdgdml.train", *ARGS, "--output_dir", str(run)],
                            env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # this attempt's setup is logged (attempts before it logged theirs)
    _wait(lambda: _count(run / "out.txt", "checkpoint every") > attempt, 120, proc)
    if mode == "checkpoint":        # while checkpoint.pt.tmp is being written
        _wait(lambda: (run / "checkpoint.pt.tmp").exists(), 60, proc)
    elif mode == "step":            # just after a record: stepping or saving its checkpoint
        seen = _records(run)
        _wait(lambda: _records(run) > seen, 60, proc)
        time.sleep(rng.uniform(0, 0.05))
    else:                           # a random moment: mostly evaluating
        time.sleep(rng.uniform(0, 3))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train_mod.train(train_mod.build_parser().parse_args(ARGS + ["--output_dir", str(out)]))
    records = run_records(out)
    assert [r["step"] for r in records] == [0, 2, 4, 6, 8]
    return records


def test_ten_random_sigkills_then_identical_records(tmp_path, reference):
    seed = time.time_ns() % 10 ** 6
    rng = random.Random(seed)
    run = tmp_path / "run"
    kills = [_kill_once(run, i, MODES[i % len(MODES)], rng) for i in range(KILLS)]
    assert all(kills), f"the run finished before all {KILLS} kills (seed {seed})"
    assert not (run / "done").exists()
    subprocess.run([PYTHON, "-m", "sdgdml.train", *ARGS, "--output_dir", str(run)],
                   env=subprocess_env(), check=True, stdout=subprocess.DEVNULL)
    assert (run / "done").exists()
    assert run_records(run) == reference, f"seed {seed}"
    assert not list(run.glob("*.tmp")), f"seed {seed}"
