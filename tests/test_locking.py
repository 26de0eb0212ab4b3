"""No run trains twice at once: the run lock (held by a training process, refused to any
other, released by the kernel when its holder dies) and the launch lock (concurrent `sweep
launch`es into one folder submit each run once)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import PYTHON, REPO, subprocess_env
from sdgdml.launchers import ATTEMPT_FILE, TrainJob
from sdgdml.locking import LAUNCH_LOCK, FileLock, LockedError, RunLock, launch_lock
from sdgdml.records import read_records

HOLD = ("import sys, time\nfrom sdgdml.locking import {cls}\n"
        "lock = {cls}(sys.argv[1]); lock.{enter}\nprint('locked', flush=True)\ntime.sleep(600)")


def hold_in_subprocess(path: Path, cls: str = "RunLock", enter: str = "__enter__()"):
    """A separate process holding a lock until killed."""
    proc = subprocess.Popen([PYTHON, "-c", HOLD.format(cls=cls, enter=enter), str(path)],
                            stdout=subprocess.PIPE, text=True, env=subprocess_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_with_the_holders_name(tmp_path):
    holder = hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(LockedError) as e:
            with RunLock(tmp_path):
                pass
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(e.value)
        assert str(tmp_path) in str(e.value) and "nothing was written" in str(e.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = hold_in_subprocess(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(tmp_path):           # the kernel released it with the process
        pass


def test_the_lock_is_per_thread_and_reentrant_within_one(tmp_path):
    errors = []
    with RunLock(tmp_path):
        with RunLock(tmp_path):       # the sweep's job, then the training it calls
            pass

        def other_thread():
            try:
                with RunLock(tmp_path):
                    pass
            except LockedError as e:
                errors.append(e)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert len(errors) == 1 and f"pid {os.getpid()}" in str(errors[0])
    with RunLock(tmp_path):           # released by the outermost exit
        pass


def test_a_job_on_a_locked_run_exits_without_writing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_in_subprocess(run)
    try:
        before = sorted(p.name for p in run.iterdir())
        with pytest.raises(SystemExit) as e:
            TrainJob(["--steps", "1", "--output_dir", str(run)])()
        assert "in use by" in str(e.value.code) and f"pid {holder.pid}" in str(e.value.code)
        assert sorted(p.name for p in run.iterdir()) == before
        assert not (run / ATTEMPT_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_launch_lock_waits_for_its_holder(tmp_path):
    said, order = [], []
    with launch_lock(tmp_path):
        def second():
            with launch_lock(tmp_path, announce=said.append):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=1)
        assert t.is_alive() and not order          # blocked while held
        order.append("first done")
    t.join(timeout=10)
    assert order == ["first done", "second"]
    assert "waiting for another launch" in said[0] and f"pid {os.getpid()}" in said[0]


def read_until(proc, text: str) -> str:
    """A process's output up to the first line holding ``text`` (all of it if it ends)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


SWEEP = ["launch", "--splits", "DigitsDG:mnist->sketch", "--algorithms", "ProxyAnchor",
         "--n_trials", "2", "--train_args",
         "--steps 2 --checkpoint_freq 1 --metrics recall@1 --quiet --no_eval_at_start"]


def test_concurrent_launches_run_each_run_once(tmp_path):
    """Two `sweep launch` processes started while the folder's launch lock is held (so both
    decide at the same moment): every run is submitted once, trained once, and its records'
    steps strictly increase."""
    out = tmp_path / "sweep"
    out.mkdir()
    gate = FileLock(out / LAUNCH_LOCK)
    gate.acquire()
    cmd = [PYTHON, "-m", "sdgdml.sweep", *SWEEP, "--output_dir", str(out),
           "--launcher", "local"]
    env = {**subprocess_env(), "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, cwd=REPO) for _ in range(2)]
    waiting = [read_until(p, "waiting for another launch") for p in procs]  # both at the lock
    gate.release()
    texts = [w + p.communicate(timeout=600)[0] for w, p in zip(waiting, procs)]
    assert all(p.returncode == 0 for p in procs), texts
    assert all("waiting for another launch" in w for w in waiting), texts
    assert sorted(("2 new" in t, "skipped: 0 done, 2 running" in t) for t in texts) == \
        [(False, True), (True, False)], texts
    runs = [d for d in out.iterdir() if d.is_dir()]
    assert len(runs) == 2
    for run in runs:
        assert [r["step"] for r in read_records(run / "results.jsonl")] == [1, 2]
        starts = [line for line in (run / "out.txt").read_text().splitlines()
                  if " | ProxyAnchor | " in line]
        assert len(starts) == 1, starts             # trained once


def test_concurrent_dummy_launches_write_nothing(tmp_path):
    out = tmp_path / "sweep"
    cmd = [PYTHON, "-m", "sdgdml.sweep", *SWEEP, "--output_dir", str(out), "--launcher", "dummy"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=subprocess_env(),
                              cwd=REPO) for _ in range(2)]
    texts = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 and t.count("-m sdgdml.train") == 2
               for p, t in zip(procs, texts))
    assert not out.exists()
