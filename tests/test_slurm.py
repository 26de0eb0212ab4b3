"""On a real single-node Slurm (tests/slurm/setup_slurm.sh): a DigitsDG sweep through
``--launcher slurm`` (one job array) whose collected tables match the records, and a preempted
job that resumes from its checkpoint and ends with the records of an uninterrupted run."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import submitit
from scipy import stats

from sdgdml import sweep
from sdgdml.launchers import JOB_FILE, SlurmLauncher
from sdgdml.records import read_records
from helpers import PYTHON, REPO, run_records, subprocess_env

pytestmark = pytest.mark.slurm
SLURM = ["--launcher", "slurm", "--cpus_per_task", "1", "--timeout_min", "10"]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / JOB_FILE).exists())


def wait_done(out: Path, timeout: float = 900) -> list:
    deadline = time.time() + timeout
    while True:
        runs = {d.name: (d, {}) for d in run_dirs(out)}
        states = sweep.run_states(runs)
        if all(s.state == "DONE" for s in states):
            return states
        failed = [s for s in states if s.state == "FAILED"]
        if failed or time.time() > deadline:
            logs = [Path(json.loads((out / s.run_id / JOB_FILE).read_text())["log"])
                    for s in failed or states]
            tails = "\n".join(p.with_suffix(".err").read_text()[-1500:] for p in logs
                              if p.with_suffix(".err").exists())
            pytest.fail(f"runs did not finish: {[(s.state, s.detail) for s in states]}\n{tails}")
        time.sleep(0.5)


def test_slurm_sweep_one_array_then_tables(slurm, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["launch", "--splits", "DigitsDG:mnist->sketch,negative",
            "--algorithms", "ProxyAnchor", "--n_trials", "2",
            "--train_args", "--steps 2 --checkpoint_freq 2 --metrics recall@1 map@r --quiet",
            "--output_dir", str(out), *SLURM]
    sweep.main(argv)
    text = capsys.readouterr().out
    assert "2 runs: 2 new" in text and "slurm: submitted 2 runs in 1 submission(s)" in text
    jobs = [json.loads((d / JOB_FILE).read_text()) for d in run_dirs(out)]
    mains = {j["job_id"].split("_")[0] for j in jobs}
    assert len(mains) == 1                                         # one sbatch: a job array
    assert sorted(j["job_id"].split("_")[1] for j in jobs) == ["0", "1"]

    wait_done(out)
    deadline = time.time() + 120       # `done` is written just before the job process exits
    while set(SlurmLauncher.scheduler_states(jobs).values()) != {"FINISHED"}:   # sacct
        assert time.time() < deadline, SlurmLauncher.scheduler_states(jobs)
        time.sleep(0.2)
    sweep.main(argv)                                               # relaunch: nothing to do
    assert "0 new" in (t := capsys.readouterr().out) and "2 done" in t and "nothing" in t

    res = subprocess.run([PYTHON, str(REPO / "collect_results.py"), "--input_dir", str(out),
                          "--format", "plain", "--digits", "2", "--metrics", "recall@1", "map@r"],
                         capture_output=True, text=True, env=subprocess_env(), check=True)
    for metric in ("recall@1", "map@r"):
        name = "R@1" if metric == "recall@1" else "MAP@R"      # the per-dataset table
        block = res.stdout.split(f"DigitsDG: {name} (%), selection: source_val")[1]
        for alg in ("ProxyAnchor",):
            chosen = []
            for d in run_dirs(out):
                recs = read_records(d / "results.jsonl")
                if recs[0]["args"]["algorithm"] == alg:    # best source val, earliest step
                    chosen.append(max(recs, key=lambda r: (r["mnist_val_recall@1"], -r["step"])))
            assert len(chosen) == 2
            cells = []
            for t in ("sketch", "negative", None):
                v = np.array([np.mean([r[f"{x}_test_{metric}"] for x in ("sketch", "negative")])
                              if t is None else r[f"{t}_test_{metric}"] for r in chosen])
                cells.append(f"{100 * v.mean():.2f} ± {100 * stats.sem(v):.2f}")
            line = [l for l in block.splitlines() if l.startswith(alg)][0]
            assert line.split() == [alg, *" ".join(cells).split()], (metric, line)


def test_slurm_preempted_job_resumes_to_identical_records(slurm, tmp_path, capsys):
    argv = ["launch", "--splits", "DigitsDG:mnist->sketch", "--algorithms", "ProxyAnchor",
            "--train_args", "--steps 12 --checkpoint_freq 4 --metrics recall@1 --quiet", *SLURM]
    sweep.main(argv + ["--output_dir", str(tmp_path / "plain")])
    sweep.main(argv + ["--output_dir", str(tmp_path / "preempted")])
    capsys.readouterr()
    (run,) = run_dirs(tmp_path / "preempted")
    job = json.loads((run / JOB_FILE).read_text())

    deadline = time.time() + 600                       # wait for its first checkpoint
    while time.time() < deadline:
        steps = [r["step"] for r in read_records(run / "results.jsonl")]
        if steps and steps[-1] >= 4 and (run / "checkpoint.pt").exists():
            break
        assert not (run / "done").exists(), "the run ended before it could be preempted"
        time.sleep(0.2)
    submitit.SlurmJob(job["submitit_folder"], job["job_id"])._interrupt()   # preemption

    deadline = time.time() + 120                       # requeued: pending, held ~2 min by
    while time.time() < deadline:                      # Slurm; release it now
        st = subprocess.run(["squeue", "-h", "-j", job["job_id"], "-o", "%T %r"],
                            capture_output=True, text=True).stdout.split()
        if st[:1] == ["PENDING"]:
            # not "now": a job restarted within the second its previous run's credential was
            # revoked is killed by slurmd ("Job credential revoked"), the reason Slurm itself
            # holds requeued jobs; a few seconds are enough
            subprocess.run(["scontrol", "update", f"JobId={job['job_id']}", "StartTime=now+3"],
                           check=True)
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"job {job['job_id']} was not requeued")

    wait_done(tmp_path / "plain")
    wait_done(tmp_path / "preempted")
    log = (run / "out.txt").read_text()
    assert "resumed from" in log and "at step 0 " not in log
    assert json.loads((run / "attempt.json").read_text())["restarts"] >= 1
    (plain,) = run_dirs(tmp_path / "plain")
    assert plain.name == run.name                      # same experiment, same run id
    assert [r["step"] for r in run_records(run)] == [0, 4, 8, 12]
    assert run_records(run) == run_records(plain)


def test_slurm_refused_submission_is_a_clear_error(slurm, tmp_path):
    argv = ["launch", "--splits", "DigitsDG:mnist->sketch", "--algorithms", "ProxyAnchor",
            "--output_dir", str(tmp_path / "sweep"), *SLURM]
    with pytest.raises(SystemExit) as e:
        sweep.main(argv + ["--slurm_partition", "no_such_partition"])
    assert "slurm: the submission failed, nothing was submitted" in str(e.value)
    assert "invalid partition" in str(e.value).lower()
    with pytest.raises(SystemExit, match="--slurm_additional_parameters is a JSON object of sbatch"):
        sweep.main(argv + ["--slurm_additional_parameters", "{hold: yes}"])
    states = sweep.status(sweep.build_parser().parse_args(
        ["status", "--output_dir", str(tmp_path / "sweep")]))
    assert [s.state for s in states] == ["NOT_LAUNCHED"]
