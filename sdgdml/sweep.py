"""Sweeps: launch every run of a definition, see their states, clean up failed ones.

    python -m sdgdml.sweep launch --config sweeps/digits_tiny.yaml --output_dir sweeps_out/ \\
        --launcher slurm --slurm_partition gpu --timeout_min 600 --gpus_per_node 1
    python -m sdgdml.sweep launch --datasets DigitsDG --algorithms ProxyAnchor NormSoftmax \\
        --n_hparams 4 --n_trials 3 --output_dir sweeps_out/ --launcher local
    python -m sdgdml.sweep status --output_dir sweeps_out/
    python -m sdgdml.sweep delete_incomplete --output_dir sweeps_out/
    python collect_results.py --input_dir sweeps_out/

Idempotent: a run's folder is the hash of its experiment args; ``launch`` again submits only
what is missing (never launched, or failed: those resume from their checkpoint) and skips
runs that are done, queued or running. ``<output_dir>/sweep.json`` keeps the definition(s) and
every run; relaunching with another definition is refused (nothing launched, nothing lost)
unless ``--extend`` adds the new runs next to the old ones. Concurrent launches into one
folder are safe: each takes the folder's launch lock (``locking.py``) to decide what is new,
submit it and write its ``job.json``, so every run is submitted once; a run's job takes the
run's own lock, so no run ever trains twice at once. ``status`` reads the run folders
when ``sweep.json`` is unreadable.

Exit status 1 (``error: ...``) when a run that ``launch`` ran or submitted has FAILED by the
time it returns (a local launcher's runs have finished), and when ``status`` shows FAILED runs
(``--allow_failed`` relaxes that).

States: NOT_LAUNCHED, QUEUED, RUNNING, FAILED, CANCELLED, DONE. DONE = the run's ``done``
file; CANCELLED = Slurm says a user cancelled the job (``launch`` resubmits it only with
``--resubmit_cancelled``); FAILED = an error recorded by the job in ``attempt.json`` (unless
Slurm holds the job queued again: a requeue); otherwise the scheduler says (Slurm:
``sacct``, else ``squeue``; local launchers: the process), and when it cannot, the run folder
does (never started = QUEUED, started = RUNNING unless its process on this host is gone).
``delete_incomplete`` deletes FAILED runs and empty never-launched folders only (a folder
with training output but no ``job.json``, a run started by hand, is kept).
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from . import sweep_config
from .launchers import (ATTEMPT_FILE, JOB_FILE, LAUNCHERS, SubmissionError, option_problems,
                        pid_alive)
from .locking import launch_lock
from .records import read_json, write_json
from .sweep_config import Job, SweepError

STATES = ("DONE", "RUNNING", "QUEUED", "FAILED", "CANCELLED", "NOT_LAUNCHED")
SWEEP_FILE = "sweep.json"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has one."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


@dataclass
class RunState:
    run_id: str
    info: dict
    state: str
    job_id: str | None = None
    detail: str = ""


# ----------------------------------------------------------------------------- states
def _fallback(job: dict | None, attempt: dict | None) -> tuple[str, str]:
    """State from the run folder alone (no scheduler answer)."""
    if attempt is None:
        return ("QUEUED", "submitted, not started (no scheduler answer)") if job else \
            ("NOT_LAUNCHED", "")
    if attempt.get("error"):
        return "FAILED", attempt["error"].strip().splitlines()[-1]
    if attempt.get("host") == socket.gethostname() and not pid_alive(int(attempt["pid"])):
        return "FAILED", "its process is gone"
    return "RUNNING", "started (not verified: no scheduler answer)"


def _job_record(run_dir: Path) -> dict | None:
    """The run's job.json; None if missing, unreadable or not naming a launcher (then the
    state comes from the run folder alone)."""
    job = read_json(run_dir / JOB_FILE)
    if job is not None and not isinstance(job.get("launcher"), str):
        warnings.warn(f"{run_dir / JOB_FILE} names no launcher: ignored", stacklevel=2)
        return None
    return job


def _started(run_dir: Path) -> bool:
    return any((run_dir / f).exists() for f in ("args.json", "results.jsonl", "checkpoint.pt"))


def run_states(run_dirs: dict[str, tuple[Path, dict]]) -> list[RunState]:
    """States of runs {run_id: (run_dir, info)}; one scheduler query per launcher kind."""
    files = {}
    for rid, (d, _) in run_dirs.items():
        if (d / "done").exists():
            files[rid] = "DONE"
            continue
        job, attempt = _job_record(d), read_json(d / ATTEMPT_FILE)
        if job and attempt and attempt.get("started", 0) < job.get("submitted", 0):
            attempt = None          # left by an earlier submission of this run
        files[rid] = (job, attempt)
    by_launcher: dict[str, list[dict]] = {}
    for v in files.values():
        if v != "DONE" and v[0]:
            by_launcher.setdefault(v[0]["launcher"], []).append(v[0])
    sched = {}
    for name, recs in by_launcher.items():
        if name in LAUNCHERS:
            sched.update({(name, k): s for k, s in LAUNCHERS[name].scheduler_states(recs).items()})
    out = []
    for rid, (d, info) in run_dirs.items():
        v = files[rid]
        if v == "DONE":
            out.append(RunState(rid, info, "DONE"))
            continue
        job, attempt = v
        job_id = job.get("job_id") if job else None
        s = sched.get((job["launcher"], job_id)) if job else None
        err = (attempt or {}).get("error")
        if s == "QUEUED":                        # requeued: an earlier attempt's error is old
            state, detail = s, f"{job['launcher']} job {job_id}"
        elif s == "CANCELLED":                   # by a user (scancel), whatever it recorded
            state = s
            detail = (f"{job['launcher']} job {job_id} was cancelled; `launch "
                      f"--resubmit_cancelled` resubmits it")
        elif err:                                # the job recorded its own crash
            state, detail = "FAILED", err.strip().splitlines()[-1]
        elif s == "RUNNING":
            state, detail = s, f"{job['launcher']} job {job_id}"
        elif s in ("FINISHED", "FAILED"):
            state = "FAILED"
            detail = f"{job['launcher']} job {job_id} ended ({s.lower()}) without `done`"
        else:
            state, detail = _fallback(job, attempt)
            if state == "NOT_LAUNCHED" and _started(d):
                detail = "started outside the sweep (no job.json): kept, launch resumes it"
        if state == "FAILED" and job and job.get("log"):
            detail += f"; log: {job['log']}"
        out.append(RunState(rid, info, state, job_id, detail))
    return out


# ----------------------------------------------------------------------------- sweep file
def _load_sweep(output_dir: Path) -> dict | None:
    path = output_dir / SWEEP_FILE
    if not path.exists():
        return None
    data = read_json(path)
    if data is None or not isinstance(data.get("runs"), dict) or not isinstance(
            data.get("definitions"), list):
        raise SweepError(f"{path} is unreadable; move it away to start a new sweep here")
    return data


def _known_runs(output_dir: Path) -> dict[str, tuple[Path, dict]]:
    """Runs of sweep.json plus any other run folder found in ``output_dir`` (all of them
    when sweep.json is unreadable: every run folder tells its own state)."""
    try:
        data = _load_sweep(output_dir) or {"runs": {}}
    except SweepError as e:
        warnings.warn(f"{e}; reading the run folders instead", stacklevel=2)
        data = {"runs": {}}
    runs = {rid: (output_dir / rid, info) for rid, info in data["runs"].items()}
    if output_dir.exists():
        for d in sorted(output_dir.iterdir()):
            if d.name not in runs and d.is_dir() and (d / "args.json").exists():
                args = read_json(d / "args.json") or {}
                runs[d.name] = (d, {k: args.get(k) for k in ("dataset", "source", "algorithm",
                                                            "hparams_seed", "trial_seed")}
                                | {"note": "not in sweep.json"})
    return runs


def _definition_diff(old: dict, new: dict) -> str:
    keys = [k for k in new if old.get(k) != new.get(k)]
    return "; ".join(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in keys)


def _check_relaunch(output_dir: Path, prev: dict | None, jobs: list[Job], definition: dict,
                    extend: bool) -> None:
    if prev is None or extend:
        return
    missing = set(prev["runs"]) - {j.run_id for j in jobs}
    if missing:
        raise SweepError(
            f"{output_dir} holds a sweep with another definition "
            f"({_definition_diff(prev['definitions'][-1], definition) or 'other runs'}); "
            f"{len(missing)} of its {len(prev['runs'])} runs are not in the new one. Nothing "
            f"was launched and nothing deleted. Use --extend to add the new runs next to the "
            f"old ones (collect_results reads both), or another --output_dir.")


# ----------------------------------------------------------------------------- commands
def _check_data(jobs: list[Job], args) -> None:
    """Every domain of every split loads (the dataset check) before anything is submitted."""
    from .datasets import DatasetError, create_dataset

    problems = {}
    for key in sorted({(j.info["dataset"], j.info["source"], tuple(j.info["targets"]),
                        "--skip_corrupt" in j.argv) for j in jobs}):
        try:
            create_dataset(key[0], args.data_dir, key[1], list(key[2]),
                           config_file=args.dataset_config, skip_corrupt=key[3]).validate()
        except DatasetError as e:
            problems.setdefault(str(e), key)
    if problems:
        raise SweepError("the data of this sweep is not usable (nothing was launched; "
                         "--skip_data_check to launch anyway):\n" + "\n".join(problems))


def _jobs(args, output_dir: Path) -> tuple[sweep_config.SweepDefinition, list[Job]]:
    """The launched sweep's definition and every run; every problem of the definition, the train args and
    the launcher's options is reported at once (:class:`SweepError`) before anything is
    written."""
    from .datasets import DatasetError, load_dataset_config

    from .validation import InvalidValueError, check_output_dir

    problems = option_problems(args)
    try:
        if not str(args.output_dir).strip():
            raise InvalidValueError("--output_dir is empty: name the sweep folder")
        check_output_dir(Path(args.output_dir))
    except InvalidValueError as e:
        problems.append(str(e))
    if args.max_runs < 1:
        problems.append(f"--max_runs must be >= 1, got {args.max_runs}")
    try:
        load_dataset_config(args.data_dir, args.dataset_config)   # user-registered datasets
        definition, read = sweep_config.read_cli(args)
        problems += read
        machine = []
        for flag in ("data_dir", "dataset_config"):
            if getattr(args, flag):
                machine += [f"--{flag}", str(Path(getattr(args, flag)).resolve())]
        if not problems:
            return definition, sweep_config.make_jobs(definition, output_dir, machine,
                                                      args.max_runs)
        sweep_config.validate(definition)
    except DatasetError as e:
        problems.append(str(e))
    except SweepError as e:
        problems += e.problems
    raise SweepError.of(problems)


def launch(args) -> None:
    from .datasets import get_dataset_class

    output_dir = Path(args.output_dir).resolve()
    definition, jobs = _jobs(args, output_dir)
    if not args.data_dir:
        need = sorted({j.info["dataset"] for j in jobs
                       if get_dataset_class(j.info["dataset"]).NEEDS_DATA_DIR})
        if need:
            raise SweepError(f"{', '.join(need)} need --data_dir, the folder holding the "
                             f"datasets (check it: python -m sdgdml.datasets check --data_dir D)")
    launcher = LAUNCHERS[args.launcher](args, output_dir)
    if launcher.records_jobs and not args.skip_data_check:
        _check_data(jobs, args)
    try:
        if not launcher.records_jobs:        # a dry run: writes nothing, needs no lock
            lines = launcher.submit(_todo(output_dir, jobs, definition, args, record=False))
        else:   # one launch at a time decides what is new and submits it (see locking.py)
            with launch_lock(output_dir):
                todo = _todo(output_dir, jobs, definition, args, record=True)
                lines = launcher.submit(todo)
            lines += launcher.run(todo)
    except SubmissionError as e:
        raise SweepError(str(e)) from None
    for line in lines:
        print(line)
    if launcher.records_jobs and lines:
        print(f"status: python -m sdgdml.sweep status --output_dir {output_dir}")
        failed = [s for s in run_states({j.run_id: (j.run_dir, j.info) for j in todo})
                  if s.state == "FAILED"]
        if failed:
            raise SweepError(f"{len(failed)} of the {len(todo)} runs launched failed "
                             f"(e.g. {failed[0].run_id}: {failed[0].detail})")


def _todo(output_dir: Path, jobs: list[Job], definition, args, record: bool) -> list[Job]:
    """The runs to submit (new, failed, and cancelled ones if asked); ``record``: add the
    definition and runs to sweep.json."""
    prev = _load_sweep(output_dir)
    _check_relaunch(output_dir, prev, jobs, definition.to_dict(), args.extend)
    states = {s.run_id: s for s in run_states({j.run_id: (j.run_dir, j.info) for j in jobs})}
    counts = Counter(s.state for s in states.values())
    again = ("NOT_LAUNCHED", "FAILED") + (("CANCELLED",) if args.resubmit_cancelled else ())
    todo = [j for j in jobs if states[j.run_id].state in again]
    print(f"sweep {output_dir}: {len(jobs)} runs: {counts['NOT_LAUNCHED']} new, "
          f"{counts['FAILED']} failed (resubmitted; they resume from their checkpoint), "
          f"{counts['CANCELLED']} cancelled ("
          f"{'resubmitted' if args.resubmit_cancelled else 'kept; --resubmit_cancelled'}), "
          f"skipped: {counts['DONE']} done, {counts['RUNNING']} running, "
          f"{counts['QUEUED']} queued")
    if record:
        data = prev or {"version": 1, "definitions": [], "runs": {}}
        if definition.to_dict() not in data["definitions"]:
            data["definitions"].append(definition.to_dict())
        data["runs"].update({j.run_id: {**j.info, "argv": list(j.argv)} for j in jobs})
        write_json(output_dir / SWEEP_FILE, data)
    if not todo:
        print("nothing to launch")
    return todo


def status(args) -> list[RunState]:
    output_dir = Path(args.output_dir).resolve()
    runs = _known_runs(output_dir)
    if not runs:
        raise SweepError(f"no sweep in {output_dir} (no {SWEEP_FILE}, no run folders)")
    states = run_states(runs)
    groups: dict[tuple, Counter] = {}
    for s in states:
        key = (s.info.get("dataset"), s.info.get("source"), s.info.get("algorithm"))
        groups.setdefault(key, Counter())[s.state] += 1
    rows = [[*k, *(c[st] for st in STATES), sum(c.values())] for k, c in sorted(
        groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]
    total = Counter(s.state for s in states)
    rows.append(["total", "", "", *(total[st] for st in STATES), len(states)])
    print(tabulate(rows, headers=["dataset", "source", "algorithm", *(s.lower() for s in STATES),
                                  "runs"]))
    shown = states if args.runs else [s for s in states if s.state == "FAILED"]
    if shown:
        print()
        print(tabulate([[s.run_id[:12], s.info.get("algorithm"), s.info.get("hparams_seed"),
                         s.info.get("trial_seed"), s.state, s.job_id or "", s.detail]
                        for s in shown],
                       headers=["run", "algorithm", "hseed", "trial", "state", "job", "detail"]))
    if total["FAILED"] and not args.allow_failed:
        raise SweepError(f"{total['FAILED']} runs FAILED (relaunch resumes them; "
                         f"--allow_failed to exit 0 anyway)")
    return states


def delete_incomplete(args) -> None:
    output_dir = Path(args.output_dir).resolve()
    states = run_states(_known_runs(output_dir))
    doomed = [s for s in states if s.state == "FAILED" or (  # and empty never-launched folders
        s.state == "NOT_LAUNCHED" and (output_dir / s.run_id).exists()
        and not _started(output_dir / s.run_id))]
    kept = Counter(s.state for s in states if s not in doomed)
    print(f"{len(doomed)} failed/incomplete run folders to delete; kept: "
          + ", ".join(f"{n} {st.lower()}" for st, n in sorted(kept.items())))
    if not doomed:
        return
    if not args.yes:
        if not sys.stdin.isatty():
            raise SweepError("refusing to delete without --yes (stdin is not a terminal)")
        if input("delete them? [y/N] ").strip().lower() != "y":
            print("nothing deleted")
            return
    for s in doomed:
        shutil.rmtree(output_dir / s.run_id, ignore_errors=True)
        print(f"deleted {output_dir / s.run_id} ({s.detail or s.state.lower()})")


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdgdml.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    la = sub.add_parser("launch", help="submit every missing run of a sweep",
                        formatter_class=_Help)
    a = la.add_argument
    a("--config", default=None, help="sweep file (YAML, see sweeps/); flags below override it")
    a("--datasets", nargs="*", default=None,
      help="datasets (default source, every other domain a target); Dataset:* = all sources")
    a("--splits", nargs="*", default=None,
      help="explicit splits: 'Dataset:source->target1,target2'")
    a("--algorithms", nargs="*", default=None,
      help="names or compositions (ProxyAnchor+SEE); list them: python -m sdgdml.list algorithms")
    a("--n_hparams", type=int, default=None,
      help="hparams seeds 0..N-1 per algorithm (0 = defaults); default: the file's, else 1")
    a("--n_trials", type=int, default=None,
      help="trial seeds 0..N-1; default: the file's, else 1")
    a("--hparams", default=None, help="JSON hparams fixed for every run")
    a("--train_args", default=None,
      help="other sdgdml.train flags for every run, one string: "
           "--train_args='--steps 1000 --protocol both'")
    a("--data_dir", default=None, help="datasets root (a machine path: not in the run hash)")
    a("--dataset_config", default=None,
      help="YAML registering image-folder datasets (default: <data_dir>/sdgdml_datasets.yaml)")
    a("--output_dir", required=True, help="sweep folder: one sub-folder per run")
    a("--launcher", choices=list(LAUNCHERS), default="local", help="how runs are executed")
    a("--skip_data_check", action="store_true",
      help="do not check that every dataset domain loads before launching")
    a("--extend", action="store_true",
      help="allow adding runs to a sweep folder that holds another definition")
    a("--max_runs", type=int, default=sweep_config.MAX_RUNS,
      help="refuse a sweep of more runs (its size is printed; sweep.json grows ~1 KiB a run)")
    a("--resubmit_cancelled", action="store_true",
      help="also resubmit runs whose Slurm job a user cancelled (default: leave them)")
    for cls in LAUNCHERS.values():
        cls.add_arguments(la)
    st = sub.add_parser("status", help="count runs per state (from the scheduler and files)")
    st.add_argument("--output_dir", required=True, help="sweep folder")
    st.add_argument("--runs", action="store_true", help="list every run, not only failed ones")
    st.add_argument("--allow_failed", action="store_true",
                    help="exit 0 even when some runs FAILED (default: exit 1)")
    de = sub.add_parser("delete_incomplete",
                        help="delete FAILED run folders and empty never-launched ones (never "
                             "running, queued, done or hand-started ones)")
    de.add_argument("--output_dir", required=True, help="sweep folder")
    de.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        {"launch": launch, "status": status, "delete_incomplete": delete_incomplete}[
            args.command](args)
    except SweepError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
