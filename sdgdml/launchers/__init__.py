"""Launchers: how a sweep's runs are executed, and how their state is asked back.

Registry ``LAUNCHERS`` (``--launcher NAME``): a :class:`Launcher` subclass registers itself
with ``@register_launcher`` (under its ``name``); importing this package imports every module
in it, so adding a launcher is one new file here (a test module may register one too).
Built in:

- ``dummy``: prints each run's command; submits and writes nothing (a dry run).
- ``local``: runs here and waits: serially in this process, or N at a time in subprocesses
  (``--local_workers N``, ``--local_mode subprocess``).
- ``submitit_local``: submitit's local executor (one detached process per run).
- ``slurm``: submitit's ``AutoExecutor`` on Slurm; all runs of a launch go in *one* job-array
  submission (``--slurm_array_parallelism`` at a time).

A run is the callable :class:`TrainJob` (a ``submitit.helpers.Checkpointable``, not a shell
string): on preemption or timeout submitit calls its ``checkpoint()``, which requeues a fresh
``TrainJob`` that resumes from the run's ``checkpoint.pt``.

Files in a run folder: ``job.json`` (written at submission: launcher, job id, host, log
paths) and ``attempt.json`` (written by the job when it starts: host, pid, Slurm ids, restart
count; ``error`` is added if it raises, ``preempted`` when submitit requeues it).
"""
from __future__ import annotations

import importlib
import json
import math
import os
import pkgutil
import shlex
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import submitit

from ..locking import LockedError, RunLock
from ..progress import Progress
from ..records import write_json

JOB_FILE, ATTEMPT_FILE = "job.json", "attempt.json"
# scheduler states -> sweep states (anything else, with no `done` file: FAILED)
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                "CONFIGURING", "RESIZING"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED"}


class SubmissionError(RuntimeError):
    """The scheduler refused a submission."""


class TrainJob(submitit.helpers.Checkpointable):
    """One training run as a picklable callable: ``TrainJob(argv)()`` trains (or resumes)."""

    def __init__(self, argv):
        self.argv = list(argv)
        self._attempt: dict | None = None     # this attempt's record, once it runs
        self._preempted = False               # set by checkpoint(): submitit is requeueing

    @property
    def run_dir(self) -> Path:
        return Path(self.argv[self.argv.index("--output_dir") + 1])

    def __call__(self) -> str:
        from .. import train  # imported here: unpickling a job stays cheap
        from ..distributed import env_world

        if env_world()[0] > 0:      # a task of a multi-GPU run: rank 0 holds the lock, writes
            train.main(self.argv)
            return str(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            with RunLock(self.run_dir):    # train takes it again (re-entrant): one holder
                return self._train(train)
        except LockedError as e:         # another process trains this run: write nothing
            raise SystemExit(f"error: {e}") from None

    def _train(self, train) -> str:
        env = os.environ
        attempt = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                   "slurm_job_id": env.get("SLURM_JOB_ID"),
                   "slurm_array": (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
                                   if "SLURM_ARRAY_JOB_ID" in env else None),
                   "restarts": int(env.get("SLURM_RESTART_COUNT", 0))}
        self._attempt = attempt
        write_json(self.run_dir / ATTEMPT_FILE, attempt)
        try:
            train.main(self.argv)
        except SystemExit as e:   # train's clear user errors carry a message; submitit's
            if isinstance(e.code, str):        # requeue exit (-1) is not a failure
                write_json(self.run_dir / ATTEMPT_FILE, {**attempt, "error": e.code})
            raise
        except Exception:
            # once preempted, an exception is the requeue's teardown, not a crash: Slurm
            # kills the job's processes as it requeues it, `scontrol requeue` included
            if not self._preempted:
                write_json(self.run_dir / ATTEMPT_FILE,
                           {**attempt, "error": traceback.format_exc(limit=-3)})
            raise
        return str(self.run_dir)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out: requeue a fresh job; it resumes from ``checkpoint.pt``
        (work since the last checkpoint is redone, bit for bit)."""
        self._preempted = True
        if self._attempt:           # None in ranks > 0 of a multi-GPU run
            write_json(self.run_dir / ATTEMPT_FILE, {**self._attempt, "preempted": time.time()})
        return submitit.helpers.DelayedSubmission(TrainJob(self.argv))


def command_line(argv) -> str:
    return shlex.join([sys.executable, "-m", "sdgdml.train", *argv])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (exited, not reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# ----------------------------------------------------------------------------- launchers
LAUNCHERS: dict[str, type["Launcher"]] = {}


def register_launcher(cls: type["Launcher"]) -> type["Launcher"]:
    """Class decorator adding a launcher to ``LAUNCHERS`` under ``cls.name``."""
    if cls.name in LAUNCHERS:
        raise ValueError(f"a launcher named {cls.name!r} is registered twice")
    LAUNCHERS[cls.name] = cls
    return cls


def unregister_launcher(name: str) -> None:
    """Remove a launcher (for tests that register toy launchers)."""
    LAUNCHERS.pop(name, None)


class Launcher:
    """Base: ``submit(jobs)`` (under the launch lock), ``run(jobs)`` (after it, for
    launchers that execute here); ``scheduler_states(job records)`` asks back."""

    name = ""
    records_jobs = True       # False: the launcher leaves no job.json (dummy)

    def __init__(self, opts, output_dir: Path):
        self.opts, self.output_dir = opts, Path(output_dir)

    @staticmethod
    def add_arguments(parser) -> None:
        pass

    def submit(self, jobs) -> list[str]:
        """Submit ``jobs`` and write their ``job.json`` (called under the sweep's launch
        lock: keep it short); returns lines for the user (ids, where logs are)."""
        raise NotImplementedError

    def run(self, jobs) -> list[str]:
        """Run the submitted ``jobs`` here, after the launch lock is released (launchers that
        execute in this process); returns lines for the user."""
        return []

    def _record(self, job, job_id: str, **extra) -> None:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(job.run_dir / JOB_FILE, {"launcher": self.name, "job_id": job_id,
                                            "host": socket.gethostname(),
                                            "submitted": time.time(), **extra})

    @classmethod
    def scheduler_states(cls, job_records: list[dict]) -> dict[str, str]:
        """{job_id: QUEUED | RUNNING | FAILED | CANCELLED | FINISHED} for the ids the
        scheduler knows."""
        return {}


@register_launcher
class DummyLauncher(Launcher):
    name, records_jobs = "dummy", False

    def submit(self, jobs):
        for job in jobs:
            print(command_line(job.argv))
        return [f"dummy: printed {len(jobs)} commands, submitted nothing"] if jobs else []


def _local_states(job_records):
    """Processes on this host: alive -> RUNNING, gone -> FINISHED."""
    host, out = socket.gethostname(), {}
    for rec in job_records:
        if rec.get("host") == host and str(rec.get("pid", "")).isdigit():
            out[rec["job_id"]] = "RUNNING" if pid_alive(int(rec["pid"])) else "FINISHED"
    return out


@register_launcher
class LocalLauncher(Launcher):
    name = "local"

    @staticmethod
    def add_arguments(parser):
        g = parser.add_argument_group("local launcher")
        g.add_argument("--local_workers", type=int, default=1,
                       help="runs at a time (>1 implies --local_mode subprocess)")
        g.add_argument("--local_mode", choices=("inprocess", "subprocess"), default="inprocess",
                       help="inprocess: train in this process, one run after the other; "
                            "subprocess: one child process per run (log: <run>/launcher.log)")

    def submit(self, jobs):
        """Claim the runs for this process (job.json naming it): a concurrent launch sees
        them RUNNING while this one works through them."""
        for job in jobs:
            self._record(job, f"{socket.gethostname()}:{os.getpid()}", pid=os.getpid(),
                         log=str(job.run_dir / "out.txt"))
        return []

    def run(self, jobs):
        if not jobs:
            return []
        workers = max(1, self.opts.local_workers)
        subproc = workers > 1 or self.opts.local_mode == "subprocess"
        failed = []
        bar = Progress(len(jobs), desc="runs", unit="run")
        lock = threading.Lock()

        def run(job):
            ok = self._run_subprocess(job) if subproc else self._run_inprocess(job)
            with lock:
                if not ok:
                    failed.append(job.run_dir)
                bar.update(failed=len(failed))

        if subproc:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, jobs))
        else:
            for job in jobs:
                run(job)
        bar.close()
        how = f"{workers} at a time in subprocesses" if subproc else "in-process, serially"
        lines = [f"local: ran {len(jobs)} runs ({how}); {len(failed)} failed"]
        lines += [f"  failed: {d} (see {d}/{'launcher.log' if subproc else 'attempt.json'})"
                  for d in failed]
        return lines

    def _run_inprocess(self, job) -> bool:
        try:
            TrainJob(job.argv)()
            return True
        except (Exception, SystemExit) as e:   # one broken run never stops the sweep
            print(f"run {job.run_dir} failed: {e}", file=sys.stderr)
            return False

    def _run_subprocess(self, job) -> bool:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        log = job.run_dir / "launcher.log"
        with open(log, "ab") as f:
            proc = subprocess.Popen([sys.executable, "-m", "sdgdml.launchers", *job.argv],
                                    stdout=f, stderr=subprocess.STDOUT)
            self._record(job, f"{socket.gethostname()}:{proc.pid}", pid=proc.pid, log=str(log))
            return proc.wait() == 0

    @classmethod
    def scheduler_states(cls, job_records):
        return _local_states(job_records)


class SubmititLauncher(Launcher):
    """Common part of the submitit launchers: one executor, one batched submission."""

    cluster = ""

    def _folder(self) -> Path:
        return self.output_dir / "submitit"

    def _executor(self) -> submitit.AutoExecutor:
        raise NotImplementedError

    def submit(self, jobs):
        if not jobs:
            return []
        try:
            executor = self._executor()
            with executor.batch():
                futures = [executor.submit(TrainJob(job.argv)) for job in jobs]
        except SubmissionError:
            raise
        except Exception as e:     # sbatch refused (bad partition, account, ...): say why
            raise SubmissionError(f"{self.name}: the submission failed, nothing was "
                                  f"submitted: {str(e).strip()[-1500:]}") from e
        for job, f in zip(jobs, futures):
            self._record(job, str(f.job_id), pid=f.job_id if self.cluster == "local" else None,
                         log=str(f.paths.stdout), submitit_folder=str(f.paths.folder))
        ids = sorted({str(f.job_id).split("_")[0] for f in futures})
        logs = futures[0].paths.stdout.parent.parent
        return [f"{self.name}: submitted {len(jobs)} runs in {len(ids)} submission(s): "
                f"{', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}",
                f"submitit logs: {logs}/<job id>/<job id>_<task>_log.out|err; "
                f"each run's own log: <run dir>/out.txt"]


@register_launcher
class SubmititLocalLauncher(SubmititLauncher):
    name, cluster = "submitit_local", "local"

    @staticmethod
    def add_arguments(parser):
        pass   # shares --timeout_min / --gpus_per_node with slurm (declared there)

    def _executor(self):
        ex = submitit.AutoExecutor(self._folder() / "%j", cluster="local")
        ex.update_parameters(timeout_min=self.opts.timeout_min,
                             gpus_per_node=self.opts.gpus_per_node or 0)
        return ex

    @classmethod
    def scheduler_states(cls, job_records):
        return _local_states(job_records)


@register_launcher
class SlurmLauncher(SubmititLauncher):
    name, cluster = "slurm", "slurm"

    @staticmethod
    def add_arguments(parser):
        g = parser.add_argument_group("slurm / submitit launchers (resources of each run)")
        a = g.add_argument
        a("--timeout_min", type=int, default=60, help="time limit of a run, minutes")
        a("--gpus_per_node", type=int, default=None,
          help="GPUs per run; N > 1 (slurm): one run across N processes, one per GPU "
               "(sdgdml/distributed.py: global batch B x N)")
        a("--cpus_per_task", type=int, default=None, help="CPU cores per run")
        a("--mem_gb", type=float, default=None, help="memory per run, GB")
        a("--slurm_partition", default=None, help="partition (default: the cluster's)")
        a("--slurm_account", default=None, help="account to charge")
        a("--slurm_qos", default=None, help="quality of service")
        a("--slurm_constraint", default=None, help="node features, e.g. 'a100|h100'")
        a("--slurm_exclude", default=None, help="nodes to avoid")
        a("--slurm_array_parallelism", type=int, default=256,
          help="at most this many runs of the array at a time")
        a("--slurm_signal_delay_s", type=int, default=120,
          help="seconds before the time limit at which the job is signalled (and requeued)")
        a("--slurm_max_num_timeout", type=int, default=20,
          help="requeues after timeouts before a run is given up (preemptions are unlimited)")
        a("--slurm_setup", nargs="*", default=None,
          help="shell lines run before each job, e.g. 'module load cuda'")
        a("--slurm_additional_parameters", default=None,
          help="any other sbatch options, JSON: '{\"reservation\": \"x\", \"hold\": true}'")

    def _executor(self):
        o = self.opts
        ex = submitit.AutoExecutor(self._folder() / "%j", cluster="slurm",
                                   slurm_max_num_timeout=o.slurm_max_num_timeout)
        params = {"name": f"sdgdml-{self.output_dir.name}", "timeout_min": o.timeout_min,
                  "nodes": 1, "tasks_per_node": max(1, o.gpus_per_node or 1),  # 1 per GPU
                  "slurm_array_parallelism": o.slurm_array_parallelism,
                  "slurm_signal_delay_s": o.slurm_signal_delay_s}
        optional = {"gpus_per_node": o.gpus_per_node, "cpus_per_task": o.cpus_per_task,
                    "mem_gb": o.mem_gb, "slurm_partition": o.slurm_partition,
                    "slurm_account": o.slurm_account, "slurm_qos": o.slurm_qos,
                    "slurm_constraint": o.slurm_constraint, "slurm_exclude": o.slurm_exclude,
                    "slurm_setup": o.slurm_setup}
        params.update({k: v for k, v in optional.items() if v is not None})
        if o.slurm_additional_parameters:       # checked by option_problems
            params["slurm_additional_parameters"] = json.loads(o.slurm_additional_parameters)
        ex.update_parameters(**params)
        return ex

    @classmethod
    def scheduler_states(cls, job_records):
        """One ``sacct`` call for every array (parsed by submitit); ``squeue`` if accounting
        is off. Ids the scheduler does not answer for are left out (filesystem fallback)."""
        mains = sorted({r["job_id"].split("_")[0] for r in job_records if r.get("job_id")})
        if not mains:
            return {}
        raw = _sacct(mains)
        if raw is None:
            raw = _squeue()
            if raw is None:
                return {}
            wanted = {r["job_id"] for r in job_records}
            # gone from the queue = finished (the `done` file tells how)
            raw.update({j: "FINISHED" for j in wanted if j not in raw})
        out = {}
        for job_id, state in raw.items():
            state = state.split()[0] if state else "UNKNOWN"
            out[job_id] = ("QUEUED" if state in SLURM_QUEUED else
                           "RUNNING" if state in SLURM_RUNNING else
                           "CANCELLED" if state == "CANCELLED" else
                           "FINISHED" if state in ("COMPLETED", "FINISHED") else "FAILED")
        return out


def _sacct(mains: list[str]) -> dict[str, str] | None:
    from submitit.slurm.slurm import SlurmInfoWatcher

    out = {}
    for i in range(0, len(mains), 200):
        cmd = ["sacct", "-X", "-o", "JobID,State", "--parsable2"]
        for m in mains[i:i + 200]:
            cmd += ["-j", m]
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        out.update({k: v["State"] for k, v in SlurmInfoWatcher().read_info(text).items()})
    return out


def _squeue() -> dict[str, str] | None:
    try:
        text = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split("|", 1) for line in text.splitlines() if "|" in line)


# launcher options: (flag, smallest value); None (not given) is always allowed
OPTION_MINIMA = (("local_workers", 1), ("timeout_min", 1), ("gpus_per_node", 1),
                 ("cpus_per_task", 1), ("slurm_array_parallelism", 1),
                 ("slurm_signal_delay_s", 0), ("slurm_max_num_timeout", 0))


def option_problems(opts) -> list[str]:
    """What is wrong with the launchers' options (every one, checked before a sweep writes
    anything)."""
    problems = [f"--{flag} must be >= {low}, got {getattr(opts, flag)}"
                for flag, low in OPTION_MINIMA
                if getattr(opts, flag, None) is not None and getattr(opts, flag) < low]
    mem = getattr(opts, "mem_gb", None)
    if mem is not None and not (math.isfinite(mem) and mem > 0):
        problems.append(f"--mem_gb must be > 0, got {mem}")
    extra = getattr(opts, "slurm_additional_parameters", None)
    if extra:
        try:
            parsed = json.loads(extra)
        except json.JSONDecodeError as e:
            parsed = e
        if not isinstance(parsed, dict):
            problems.append(f"--slurm_additional_parameters is a JSON object of sbatch "
                            f"options such as '{{\"reservation\": \"x\"}}', got {extra!r}")
    return problems


for _module in pkgutil.iter_modules(__path__):     # each launcher file registers itself
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
