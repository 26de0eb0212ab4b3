"""Exclusive locks on run folders and sweep folders, so that no run is trained twice at once.

A lock is an OS file lock (``flock``) on a small file in the folder: the kernel releases it
when its process ends, however it ends (``kill -9``, node reboot, Slurm cancel), so a dead job
never leaves a stale lock behind. The file also holds who took the lock (host, pid, Slurm job,
time), which the refusal names.

- :class:`RunLock` (``<run>/.lock``): held by a training process for its whole run; a second
  process on the same run is refused at once (:class:`LockedError`) and writes nothing.
- :func:`launch_lock` (``<sweep>/.launch.lock``): held by ``sweep launch`` while it decides
  which runs are new, submits them and writes their ``job.json``; a concurrent launch waits
  for it, then finds those runs queued.

Filesystem requirement: the folder's filesystem must honour ``flock`` across the machines that
share it. Local filesystems do; Linux NFS clients (v3 with ``lockd``, v4) do, by mapping flock
onto NFS byte-range locks; Lustre does only when mounted with ``-o flock`` (``localflock``
locks per node only); BeeGFS needs ``tuneUseGlobalFileLocks``; GPFS/Spectrum Scale does. On
NFS a crashed *node*'s locks are freed when its lease expires (about 90 s): a requeued Slurm
job that finds its own earlier attempt still holding the lock waits up to
:data:`SAME_JOB_WAIT_S` for it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

RUN_LOCK, LAUNCH_LOCK = ".lock", ".launch.lock"
SAME_JOB_WAIT_S = 180.0      # a requeued job waits this long for its own earlier attempt's lock

# locks this process holds: {(real path, thread id): [RunLock, depth]} (re-entrant per thread)
_held: dict[tuple[str, int], list] = {}
_held_guard = threading.Lock()


class LockedError(RuntimeError):
    """Another process (or thread) holds the lock."""


def holder_info() -> dict:
    """Who is taking a lock: what a refused process is told."""
    env = os.environ
    job = env.get("SLURM_JOB_ID")
    if "SLURM_ARRAY_JOB_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "thread": threading.get_ident(),
            "slurm_job_id": job, "since": time.time()}


def describe_holder(info: dict | None) -> str:
    if not info:
        return "another process (it has not written its name yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    who = f"pid {info.get('pid')} on {info.get('host')}"
    if info.get("slurm_job_id"):
        who += f", Slurm job {info['slurm_job_id']}"
    return f"{who}, since {since}"


def read_holder(lock_file: Path) -> dict | None:
    """The holder recorded in a lock file (None if none or unreadable)."""
    try:
        info = json.loads(Path(lock_file).read_text() or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing; its content is the holder)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock; ``wait``: block until it is free, else raise :class:`LockedError`."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockedError(describe_holder(read_holder(self.path))) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = json.dumps(holder_info()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):    # the next holder overwrites it anyway
            os.ftruncate(self._fd, 0)
        os.close(self._fd)           # closing the descriptor releases the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class RunLock:
    """The exclusive lock of one run folder, re-entrant within a thread (the sweep's job takes
    it, then the training it calls takes it again). ``with RunLock(run_dir): ...``

    The run folder must exist. Refused: :class:`LockedError` naming the holder."""

    def __init__(self, run_dir: str | Path, same_job_wait_s: float = SAME_JOB_WAIT_S):
        self.run_dir = Path(run_dir)
        self.same_job_wait_s = same_job_wait_s
        self._key = (os.path.realpath(self.run_dir / RUN_LOCK), threading.get_ident())
        self._lock = FileLock(self.run_dir / RUN_LOCK)

    def __enter__(self) -> "RunLock":
        with _held_guard:
            entry = _held.get(self._key)
            if entry is not None:
                entry[1] += 1
                return self
        self._acquire()
        with _held_guard:
            _held[self._key] = [self, 1]
        return self

    def _acquire(self) -> None:
        deadline = time.time() + self.same_job_wait_s
        while True:
            try:
                self._lock.acquire()
                return
            except LockedError as e:
                mine = holder_info()["slurm_job_id"]
                holder = read_holder(self._lock.path) or {}
                if mine and holder.get("slurm_job_id") == mine and time.time() < deadline:
                    time.sleep(2)        # our own requeued job's earlier attempt: its node's
                    continue             # lock lease has not expired yet
                raise LockedError(
                    f"{self.run_dir} is in use by {e}; nothing was written. Wait for it to "
                    f"finish or stop it (the lock goes with its process)") from None

    def __exit__(self, *exc) -> None:
        with _held_guard:
            entry = _held[self._key]
            entry[1] -= 1
            if entry[1]:
                return
            del _held[self._key]
        self._lock.release()


@contextlib.contextmanager
def launch_lock(sweep_dir: str | Path, announce=print):
    """Hold the sweep folder's launch lock (created with the folder); waits, saying for whom,
    while another launch holds it."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(sweep_dir / LAUNCH_LOCK)
    try:
        lock.acquire()
    except LockedError as e:
        announce(f"waiting for another launch into {sweep_dir} ({e}) to finish submitting")
        lock.acquire(wait=True)
    try:
        yield lock
    finally:
        lock.release()
