"""One run across 2 processes (gloo on the CPU, launched by torchrun): the loss sees the global
batch B x N, equals a one-process run on the concatenated batch (step 1, and after an SGD step,
which only an exact gradient reproduces), and a run killed mid-way resumes to identical
records."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time

import pytest

from sdgdml.train import build_parser, train

from helpers import PYTHON, STYLE_SPLIT, TINY_TRAIN, run_records, subprocess_env

B, N = 16, 2
# frozen BatchNorm: per-process batch statistics would differ from the whole batch's (DDP's
# behaviour too); SGD: Adam would hide a wrong gradient scale
HPARAMS = {"freeze_bn": True, "optimizer": "sgd"}
ARGS = TINY_TRAIN + STYLE_SPLIT + ["--algorithm", "ProxyAnchor+SEE", "--steps", "4",
                                   "--checkpoint_freq", "1", "--no_eval_at_start",
                                   "--metrics", "recall@1"]


def _torchrun(out, wait=True):
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(N),
           "-m", "sdgdml.train", *ARGS, "--hparams", json.dumps({**HPARAMS, "batch_size": B}),
           "--output_dir", str(out)]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    if wait:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return None
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so
    killing its process group would leave them running)."""
    children: dict[int, list[int]] = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="module")
def ddp_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _torchrun(out)
    return run_records(out)


def test_two_processes_equal_one_on_the_concatenated_batch(tmp_path, ddp_records):
    one = train(build_parser().parse_args(
        ARGS[:ARGS.index("--steps")] + ["--steps", "2", "--checkpoint_freq", "1",
                                         "--no_eval_at_start", "--metrics", "recall@1",
                                         "--hparams", json.dumps({**HPARAMS, "batch_size": B * N}),
                                         "--output_dir", str(tmp_path)]))
    assert [r["step"] for r in ddp_records] == [1, 2, 3, 4]
    for r in ddp_records:           # the loss saw the global batch
        assert r["loss_batch"] == B * N
        assert r["args"]["world_size"] == N and r["args"]["global_batch_size"] == B * N
        assert r["args"]["lr_scale"] == 1 and r["hparams"]["batch_size"] == B
    assert math.isclose(ddp_records[0]["loss"], one[0]["loss"], rel_tol=1e-5)
    # after one SGD step: only the exact global-batch gradient (network and proxies) gives this
    assert math.isclose(ddp_records[1]["loss"], one[1]["loss"], rel_tol=1e-4)
    assert ddp_records[1]["loss"] != ddp_records[0]["loss"]


def test_killed_ddp_run_resumes_to_identical_records(tmp_path, ddp_records):
    proc = _torchrun(tmp_path, wait=False)
    results, ckpt = tmp_path / "results.jsonl", tmp_path / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = [json.loads(line)["step"] for line in results.read_text().splitlines()
                 if line.endswith("}")] if results.exists() else []
        if steps and steps[-1] >= 2 and ckpt.exists():
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
    for pid in [*_descendants(proc.pid), proc.pid]:     # both workers, then torchrun
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "done").exists()
    _torchrun(tmp_path)
    assert "resumed from" in (tmp_path / "out.txt").read_text()
    assert run_records(tmp_path) == ddp_records


@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("srun") is None,
                    reason="Slurm is not installed: submitit's Slurm executor needs srun "
                           "(as root: bash tests/slurm/setup_slurm.sh; `make test` does it)")
def test_slurm_gpus_per_node_are_tasks_of_one_run(tmp_path):
    import argparse

    from sdgdml.launchers import SlurmLauncher

    p = argparse.ArgumentParser()
    SlurmLauncher.add_arguments(p)
    for gpus, tasks in ((None, 1), (1, 1), (4, 4)):
        argv = [] if gpus is None else ["--gpus_per_node", str(gpus)]
        ex = SlurmLauncher(p.parse_args(argv), tmp_path)._executor()
        assert ex._executor.parameters["ntasks_per_node"] == tasks


def test_processes_come_from_torchrun_or_an_srun_step(monkeypatch):
    from sdgdml.distributed import env_world

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS",
              "SLURM_LOCALID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "4")         # an allocation, no srun step: one process
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert env_world() == (2, 4, 2)
    monkeypatch.setenv("RANK", "1")                 # torchrun's variables come first
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (1, 2, 1)


def test_algorithms_with_per_process_state_are_refused(tmp_path, monkeypatch):
    from sdgdml import distributed
    from sdgdml.train import main

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(SystemExit, match="error: UEM does not train across processes yet "
                                         r"\(UEM: its memory banks are indexed"):
        main(["--algorithm", "UEM", "--targets", "uci", "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit, match=r"ProxyAnchor\+CenterPolar does not train across "
                                         r"processes yet \(CenterPolar: C3E expands"):
        main(["--algorithm", "ProxyAnchor+CenterPolar", "--targets", "uci",
              "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
