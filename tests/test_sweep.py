"""Sweeps without Slurm: definitions and their validation, run identity, sweep files, the
dummy / local / submitit_local launchers, states, relaunch and delete_incomplete."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdgdml import launchers, sweep, sweep_config, train
from sdgdml.launchers import ATTEMPT_FILE, JOB_FILE, TrainJob
from sdgdml.sweep_config import SweepDefinition, SweepError
from sdgdml.records import read_records
from helpers import REPO

TINY = "--steps 1 --checkpoint_freq 1 --metrics recall@1 --quiet"
SPLIT = "DigitsDG:mnist->sketch"


def definition(**kw) -> SweepDefinition:
    base = dict(splits=[SPLIT], algorithms=[sweep_config._algorithm_entry("ProxyAnchor")],
                n_hparams=1, n_trials=2, train_args=TINY.split())
    return SweepDefinition(**{**base, **kw})


def launch(out, *extra, algorithms=("ProxyAnchor",), trials=2, train_args=TINY):
    sweep.main(["launch", "--splits", SPLIT, "--algorithms", *algorithms, "--n_trials",
                str(trials), "--train_args", train_args, "--output_dir", str(out), *extra])


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "sweep.json"}


# ----------------------------------------------------------------------------- definitions
def test_run_ids_name_the_experiment_not_the_machine(tmp_path):
    d = definition(n_hparams=2, algorithms=[sweep_config._algorithm_entry(a)
                                            for a in ("ProxyAnchor", "NormSoftmax")])
    jobs = sweep_config.make_jobs(d, tmp_path / "a", ["--data_dir", "/x", "--device", "cpu"])
    moved = sweep_config.make_jobs(d, tmp_path / "b", ["--data_dir", "/y", "--num_workers", "4"])
    assert len(jobs) == 2 * 2 * 2 and len({j.run_id for j in jobs}) == 8
    assert [j.run_id for j in jobs] == [j.run_id for j in moved]     # paths/knobs not hashed
    assert all(j.run_dir == tmp_path / "a" / j.run_id for j in jobs)
    assert jobs[0].info == {"dataset": "DigitsDG", "source": "mnist", "targets": ["sketch"],
                            "algorithm": "ProxyAnchor", "label": "ProxyAnchor",
                            "hparams_seed": 0, "trial_seed": 0}
    longer = sweep_config.make_jobs(definition(train_args=["--steps", "2"]), tmp_path)
    assert jobs[0].run_id not in {j.run_id for j in longer}
    dup = definition(splits=[SPLIT, SPLIT])
    assert len(sweep_config.make_jobs(dup, tmp_path)) == 2             # duplicates removed


def test_splits_expand_like_the_registry():
    assert sweep_config.parse_split("DigitsDG") == [
        ("DigitsDG", "mnist", ["uci", "sketch", "negative", "colour", "rotate"])]
    every = sweep_config.parse_split("DigitsDG:*")
    assert [s for _, s, _ in every] == ["mnist", "uci", "sketch", "negative", "colour", "rotate"]
    assert all(s not in t and len(t) == 5 for _, s, t in every)
    assert sweep_config.parse_split("DigitsDG:uci->mnist,rotate") == [
        ("DigitsDG", "uci", ["mnist", "rotate"])]


def test_hparam_ranges_are_sampled_per_seed_and_reach_the_run(tmp_path):
    d = definition(n_hparams=6, n_trials=1,
                   hparams={"embed_dim": 32},
                   hparam_ranges={"lr": {"log_uniform": [1e-4, 1e-2]},
                                  "batch_size": {"choice": [32, 64]},
                                  "pa_margin": {"uniform": [0.0, 0.3]}})
    jobs = sweep_config.make_jobs(d, tmp_path)
    overrides = [json.loads(j.argv[j.argv.index("--sweep_hparams") + 1]) for j in jobs]
    assert overrides[0] == {"embed_dim": 32}                  # seed 0: defaults + fixed values
    for o in overrides[1:]:
        assert 1e-4 <= o["lr"] <= 1e-2 and o["batch_size"] in (32, 64)
        assert 0 <= o["pa_margin"] <= 0.3 and o["embed_dim"] == 32
    assert len({o["lr"] for o in overrides[1:]}) == 5
    again = sweep_config.make_jobs(d, tmp_path)
    assert [j.argv for j in again] == [j.argv for j in jobs]   # deterministic


def test_bad_sweep_file_lists_every_problem_with_known_names(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("splits: ['NoSuchData:a->b', 'DigitsDG:mnist->nowhere']\n"
                 "algorithms: [ProxyAnchor, NoSuchLoss, 'ProxyAnchor+Nope']\n"
                 "hparams: {not_an_hparam: 1}\n"
                 "train_args: {not_a_flag: 3}\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        sweep.main(["launch", "--config", str(f), "--output_dir", str(out)])
    msg = str(e.value)
    assert "unknown dataset 'NoSuchData'; known: " in msg and "DigitsDG" in msg
    assert "unknown domain 'nowhere' in 'DigitsDG:mnist->nowhere'; DigitsDG has: mnist, uci" \
        in msg
    assert "unknown algorithm 'NoSuchLoss'" in msg and "known base losses: " in msg
    assert "ProxyAnchor, ProxyNCA" in msg
    assert "unknown plug-in 'Nope'" in msg
    assert "unknown hparam 'not_an_hparam' for ProxyAnchor on DigitsDG; known:" in msg
    assert "unknown train_args ['--not_a_flag', '3']; known train flags:" in msg
    assert not out.exists()                                    # nothing launched or written
    f.write_text("splits: [DigitsDG]\nalgorithms: [ProxyAnchor]\nn_trails: 3\n")
    with pytest.raises(SweepError, match=r"unknown keys \['n_trails'\]; known: name"):
        sweep_config.from_file(f)
    f.write_text("splits: [DigitsDG]\nalgorithms: [ProxyAnchor]\n"
                 "hparam_ranges: {lr: {gaussian: [0, 1]}}\ntrain_args: {trial_seed: 3}\n")
    with pytest.raises(SweepError) as e:
        sweep_config.validate(sweep_config.from_file(f))
    assert "range of 'lr' must be one of" in str(e.value)
    assert "are set by the sweep for each run" in str(e.value)


def test_shipped_sweep_files_validate():
    files = sorted((REPO / "sweeps").glob("*.yaml"))
    assert len(files) == 20                          # glyphs_compare.yaml is the 20th
    for f in files:
        d = sweep_config.from_file(f)
        assert d.splits and d.algorithms, f
        sweep_config.validate(d)                      # every name known, every range valid
    tiny = sweep_config.from_file(REPO / "sweeps" / "digits_tiny.yaml")
    assert len(sweep_config.make_jobs(tiny, "/tmp/x")) == 2 * 2 * 2


def test_explicit_trial_seeds(tmp_path):
    """``trial_seeds`` (UEM's 2024/2025/2026) replaces range(n_trials); a bad list is an error."""
    d = sweep_config.from_file(REPO / "sweeps" / "uem_table4.yaml")
    jobs = sweep_config.make_jobs(d, "/tmp/x")
    assert {j.info["trial_seed"] for j in jobs} == {2024, 2025, 2026}
    assert len(jobs) == 2 * 5 * 3
    assert all(j.argv[j.argv.index("--trial_seed") + 1] == str(j.info["trial_seed"])
               for j in jobs)
    bad = tmp_path / "bad.yaml"
    bad.write_text("splits: [DigitsDG]\nalgorithms: [ProxyAnchor]\ntrial_seeds: [1, x]\n")
    with pytest.raises(sweep_config.SweepError, match="trial_seeds"):
        sweep_config.from_file(bad)


# ----------------------------------------------------------------------------- states
def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_states_from_files_when_no_scheduler_answers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now, host = time.time(), socket.gethostname()
    runs = {}
    cases = {
        "not_launched": (None, None),
        "queued": ({"launcher": "nope", "job_id": "1", "submitted": now}, None),
        "stale_attempt": ({"launcher": "nope", "job_id": "1", "submitted": now},
                          {"host": host, "pid": dead.pid, "started": now - 100}),
        "running_elsewhere": ({"launcher": "nope", "job_id": "2", "submitted": now},
                              {"host": "other-host", "pid": 1, "started": now + 1}),
        "crashed": ({"launcher": "nope", "job_id": "3", "submitted": now, "log": "L"},
                    {"host": "other", "pid": 1, "started": now + 1,
                     "error": "Traceback\nValueError: boom\n"}),
        "process_gone": ({"launcher": "local", "job_id": f"{host}:{dead.pid}", "host": host,
                          "pid": dead.pid, "submitted": now},
                         {"host": host, "pid": dead.pid, "started": now + 1}),
        "running_here": ({"launcher": "local", "job_id": f"{host}:{os.getpid()}", "host": host,
                          "pid": os.getpid(), "submitted": now},
                         {"host": host, "pid": os.getpid(), "started": now + 1}),
    }
    for name, (job, attempt) in cases.items():
        d = tmp_path / name
        d.mkdir()
        if job:
            _write(d / JOB_FILE, job)
        if attempt:
            _write(d / ATTEMPT_FILE, attempt)
        runs[name] = (d, {})
    (tmp_path / "done_run").mkdir()
    (tmp_path / "done_run" / "done").write_text("done\n")
    runs["done_run"] = (tmp_path / "done_run", {})
    states = {s.run_id: s for s in sweep.run_states(runs)}
    assert {k: s.state for k, s in states.items()} == {
        "not_launched": "NOT_LAUNCHED", "queued": "QUEUED", "stale_attempt": "QUEUED",
        "running_elsewhere": "RUNNING", "crashed": "FAILED", "process_gone": "FAILED",
        "running_here": "RUNNING", "done_run": "DONE"}
    assert "ValueError: boom" in states["crashed"].detail and "log: L" in states["crashed"].detail


def test_a_requeued_slurm_job_is_queued_not_failed(tmp_path, monkeypatch):
    """A job Slurm holds queued again is a requeue, whatever its last attempt recorded."""
    d = tmp_path / "run"
    _write(d / JOB_FILE, {"launcher": "slurm", "job_id": "7_0", "submitted": 1.0})
    _write(d / ATTEMPT_FILE, {"host": "n1", "pid": 1, "started": 2.0,
                              "error": "Traceback\nCalledProcessError: scontrol requeue\n"})
    for sched, want in (("QUEUED", "QUEUED"), ("FAILED", "FAILED"), ("RUNNING", "FAILED")):
        monkeypatch.setattr(launchers.SlurmLauncher, "scheduler_states",
                            classmethod(lambda cls, recs, s=sched: {"7_0": s}))
        (state,) = sweep.run_states({"run": (d, {})})
        assert state.state == want, sched


def test_an_exception_during_preemption_is_not_recorded_as_a_crash(tmp_path, monkeypatch):
    """Slurm kills a requeued job's processes, submitit's own `scontrol requeue` included: what
    the job raises after its checkpoint() was called is the requeue, not a failure."""
    def preempted_midway(argv):
        job.checkpoint()
        raise subprocess.CalledProcessError(-15, ["scontrol", "requeue", "7"])

    def crashes(argv):
        raise ValueError("boom")

    for fake, recorded in ((preempted_midway, "preempted"), (crashes, "error")):
        monkeypatch.setattr(train, "main", fake)
        job = TrainJob(["--output_dir", str(tmp_path / fake.__name__)])
        with pytest.raises(Exception):
            job()
        attempt = json.loads((job.run_dir / ATTEMPT_FILE).read_text())
        assert {"preempted", "error"} & attempt.keys() == {recorded}
        assert isinstance(job.checkpoint().function, TrainJob)     # a fresh job is requeued


def test_a_run_started_by_hand_is_kept_and_resumed(tmp_path, capsys):
    """A folder with training output but no job.json (its command run by hand, killed) is not
    deleted by delete_incomplete, and launch resumes it."""
    out = tmp_path / "sweep"
    launch(out, "--launcher", "dummy", trials=1)
    command = capsys.readouterr().out.splitlines()[1].split()
    argv = command[command.index("sdgdml.train") + 1:]
    run = Path(argv[argv.index("--output_dir") + 1])
    train.main(argv)
    (run / "done").unlink()                               # as if killed after its first record
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    (run / "results.jsonl").write_text(lines[0])
    (run / "args.json").write_text('{"dataset": "Digi')   # ... while writing args.json
    sweep.main(["delete_incomplete", "--output_dir", str(out), "--yes"])
    assert "0 failed/incomplete run folders to delete" in capsys.readouterr().out
    assert (run / "results.jsonl").exists()
    launch(out, "--launcher", "local", trials=1)
    assert "ran 1 runs (in-process, serially); 0 failed" in capsys.readouterr().out
    assert (run / "done").exists() and [r["step"] for r in read_records(run / "results.jsonl")] \
        == [0, 1]


def test_abbreviated_train_flags_are_refused():
    with pytest.raises(SweepError, match="unknown train_args"):
        sweep_config._check_train_args(["--trial", "7"])


# ----------------------------------------------------------------------------- launchers
def test_dummy_launcher_prints_commands_and_writes_nothing(tmp_path, capsys):
    launch(tmp_path / "out", "--launcher", "dummy")
    out = capsys.readouterr().out
    assert "2 runs: 2 new" in out and out.count("-m sdgdml.train --dataset DigitsDG") == 2
    assert not (tmp_path / "out").exists()


def test_local_sweep_lifecycle(tmp_path, capsys):
    """launch (2 subprocesses at a time) -> relaunch skips -> other args refused, nothing lost
    -> a failed run and foreign running/queued runs -> delete_incomplete removes only the
    failed one -> relaunch runs only it (in-process)."""
    out = tmp_path / "sweep"
    launch(out, "--launcher", "local", "--local_workers", "2")
    text = capsys.readouterr().out
    assert "2 runs: 2 new" in text and "ran 2 runs (2 at a time in subprocesses); 0 failed" in text
    states = sweep.status(sweep.build_parser().parse_args(["status", "--output_dir", str(out)]))
    assert [s.state for s in states] == ["DONE", "DONE"]
    run_a, run_b = (out / s.run_id for s in states)
    assert json.loads((run_a / JOB_FILE).read_text())["launcher"] == "local"

    launch(out, "--launcher", "local")
    text = capsys.readouterr().out
    assert "0 new" in text and "skipped: 2 done" in text and "nothing to launch" in text

    before = snapshot(out)
    with pytest.raises(SystemExit) as e:           # the same folder, other experiment args
        launch(out, "--launcher", "local", train_args=TINY.replace("--steps 1", "--steps 2"))
    msg = str(e.value)
    assert "holds a sweep with another definition" in msg and "--steps" in msg
    assert "2 of its 2 runs are not in the new one. Nothing was launched and nothing deleted" \
        in msg and "--extend" in msg
    assert snapshot(out) == before

    (run_b / "done").unlink()                       # run b crashed
    _write(run_b / ATTEMPT_FILE, {"host": "elsewhere", "pid": 1, "started": time.time() + 5,
                                  "error": "Traceback\nRuntimeError: out of memory\n"})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        args = json.loads((run_a / "args.json").read_text())
        for name, job in (("foreign_running", {"launcher": "local", "host": socket.gethostname(),
                                               "pid": sleeper.pid, "job_id": "x"}),
                          ("foreign_queued", {"launcher": "slurm", "job_id": "987654321"})):
            _write(out / name / "args.json", args)
            _write(out / name / JOB_FILE, {**job, "submitted": time.time()})
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:        # FAILED runs: exit status 1
            sweep.main(["status", "--output_dir", str(out)])
        assert e.value.code == "error: 1 runs FAILED (relaunch resumes them; --allow_failed " \
                               "to exit 0 anyway)"
        text = capsys.readouterr().out
        sweep.main(["status", "--output_dir", str(out), "--allow_failed"])      # relaxed
        assert capsys.readouterr().out == text
        total = [line for line in text.splitlines() if line.startswith("total")][0].split()
        assert total[1:] == ["1", "1", "1", "1", "0", "0", "4"]  # done running queued failed
        # cancelled not_launched runs
        assert "RuntimeError: out of memory" in text
        sweep.main(["delete_incomplete", "--output_dir", str(out), "--yes"])
        text = capsys.readouterr().out
        assert "1 failed/incomplete run folders to delete; kept: 1 done, 1 queued, 1 running" \
            in text
        assert not run_b.exists() and run_a.exists()
        assert (out / "foreign_running").exists() and (out / "foreign_queued").exists()
    finally:
        sleeper.kill()
        sleeper.wait()

    launch(out, "--launcher", "local")               # only the missing run is launched
    text = capsys.readouterr().out
    assert "2 runs: 1 new" in text and "skipped: 1 done" in text
    assert "ran 1 runs (in-process, serially); 0 failed" in text
    assert (run_b / "done").exists()


def test_submitit_local_launcher(tmp_path, capsys):
    out = tmp_path / "sweep"
    launch(out, "--launcher", "submitit_local", "--timeout_min", "10", trials=1)
    text = capsys.readouterr().out
    assert "submitit_local: submitted 1 runs" in text and "submitit logs:" in text
    (run,) = [p for p in out.iterdir() if (p / JOB_FILE).exists()]
    job = json.loads((run / JOB_FILE).read_text())
    assert job["launcher"] == "submitit_local" and job["job_id"] == str(job["pid"])
    deadline = time.time() + 300
    while not (run / "done").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (run / "done").exists(), Path(job["log"]).read_text()[-2000:]
    deadline = time.time() + 30                      # until submitit has written its result
    while not list(Path(job["submitit_folder"]).glob("*_result.pkl")) and time.time() < deadline:
        time.sleep(0.2)
    (state,) = sweep.run_states({run.name: (run, {})})
    assert state.state == "DONE"


def test_missing_data_is_reported_before_anything_is_launched(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="PACS need --data_dir"):
        sweep.main(["launch", "--datasets", "PACS", "--algorithms", "ProxyAnchor",
                    "--output_dir", str(out)])
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit) as e:
        sweep.main(["launch", "--datasets", "PACS:photo", "--algorithms", "ProxyAnchor",
                    "--output_dir", str(out), "--data_dir", str(tmp_path / "data")])
    msg = str(e.value)
    assert "the data of this sweep is not usable (nothing was launched" in msg
    assert "dataset folder not found" in msg and "expected layout:" in msg
    assert not out.exists()


def test_a_run_that_crashes_is_failed_with_its_error(tmp_path, capsys, monkeypatch):
    from sdgdml.algorithms import MetricLearning

    def crash(self, batch):
        raise RuntimeError("CUDA out of memory (planted)")

    monkeypatch.setattr(MetricLearning, "update", crash)
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as e:            # a failed run: exit status 1
        launch(out, "--launcher", "local", trials=1)
    assert e.value.code.startswith("error: 1 of the 1 runs launched failed (e.g. ")
    assert "out of memory (planted)" in e.value.code
    assert "ran 1 runs (in-process, serially); 1 failed" in capsys.readouterr().out
    (state,) = sweep.status(sweep.build_parser().parse_args(["status", "--output_dir", str(out),
                                                             "--allow_failed"]))
    assert state.state == "FAILED" and "out of memory (planted)" in state.detail
    assert "log:" in state.detail


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("text,message", [
    ("n_trials: two", "n_trials must be an integer >= 1, got 'two'"),
    ("n_hparams: 0", "n_hparams must be an integer >= 1, got 0"),
    ("hparam_ranges: {lr: {log_uniform: [1e-5]}}", "needs two numbers [low, high]"),
    ("hparam_ranges: {lr: {log_uniform: [0, 1.0e-3]}}", "needs low > 0"),
    ("hparam_ranges: {lr: {log_uniform: [1e-4, 1e-3]}}", "YAML reads 1e-3 as text"),
    ("hparam_ranges: {lr: {uniform: [0.3, 0.1]}}", "has low > high"),
    ("hparam_ranges: {batch_size: {int_uniform: [32, 64.5]}}", "needs two integers"),
    ("hparam_ranges: {batch_size: {choice: []}}", "needs at least one value"),
    ("train_args: {steps: -3}", "train_args: --steps must be >= 1, got -3"),
])
def test_bad_sweep_values_are_one_clear_line(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(f"splits: [DigitsDG]\nalgorithms: [ProxyAnchor]\n{text}\n")
    with pytest.raises(SystemExit) as e:
        sweep.main(["launch", "--config", str(f), "--output_dir", str(tmp_path / "out"),
                    "--launcher", "dummy"])
    assert message in str(e.value) and str(e.value).startswith("error: ")
    assert "Traceback" not in str(e.value) and not (tmp_path / "out").exists()


def test_a_cancelled_slurm_job_is_resubmitted_only_when_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launchers, "_sacct", lambda mains: {"7_0": "CANCELLED by 0",
                                                            "7_1": "FAILED"})
    assert launchers.SlurmLauncher.scheduler_states(
        [{"job_id": "7_0"}, {"job_id": "7_1"}]) == {"7_0": "CANCELLED", "7_1": "FAILED"}
    out = tmp_path / "sweep"
    for job in sweep_config.make_jobs(definition(), out):
        _write(job.run_dir / JOB_FILE, {"launcher": "slurm", "job_id": "7_0", "submitted": 1.0})
        _write(job.run_dir / ATTEMPT_FILE, {"host": "n1", "pid": 1, "started": 2.0,
                                            "error": "Traceback\nKeyboardInterrupt\n"})
    (state,) = sweep.run_states({"r": (job.run_dir, {})})
    assert state.state == "CANCELLED" and "--resubmit_cancelled" in state.detail
    launch(out, "--launcher", "dummy")
    text = capsys.readouterr().out
    assert "2 cancelled (kept; --resubmit_cancelled)" in text and "sdgdml.train" not in text
    launch(out, "--launcher", "dummy", "--resubmit_cancelled")
    assert capsys.readouterr().out.count("-m sdgdml.train") == 2


def test_status_reads_the_run_folders_when_sweep_json_is_corrupt(tmp_path, capsys):
    out = tmp_path / "sweep"
    jobs = sweep_config.make_jobs(definition(), out)
    for job in jobs:
        _write(job.run_dir / "args.json", {"dataset": "DigitsDG", "algorithm": "ProxyAnchor"})
    (jobs[0].run_dir / "done").write_text("done\n")
    _write(jobs[1].run_dir / JOB_FILE, {"job_id": "5"})         # names no launcher
    (out / "sweep.json").write_text('{"runs": {"abc')
    with pytest.warns(UserWarning) as warned:
        states = sweep.status(sweep.build_parser().parse_args(
            ["status", "--output_dir", str(out)]))
    assert sorted(s.state for s in states) == ["DONE", "NOT_LAUNCHED"]
    text = " ".join(str(w.message) for w in warned)
    assert "sweep.json is unreadable" in text and "names no launcher" in text
