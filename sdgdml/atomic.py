"""Atomic file writes that clean up after themselves, and one clear error for a full disk.

A file is written to ``<name>.tmp`` next to it, flushed to disk, then renamed over the old
one: a reader (or a restart after a kill) sees the old file or the new one, never half of it.
On *any* failure the temporary file is removed (a full disk stays no fuller than before, and
the old file is untouched); a full disk or quota is reported as :class:`DiskFullError`, naming
the path and the space left, instead of the writer's own message (torch's is ``unexpected
pos``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or quota) left for a file."""


def disk_full_error(path: Path, cause: OSError) -> DiskFullError:
    """A one-line :class:`DiskFullError` for ``path``: what failed and how much space is left."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2 ** 20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    what = "quota exceeded" if cause.errno == errno.EDQUOT else "no space left on the device"
    error = DiskFullError(f"cannot write {path}: {what} ({free} in {path.parent}); free some "
                          f"space and restart (nothing written before was damaged)")
    error.errno = cause.errno
    return error


class _ErrorKeepingWriter:
    """A binary file's ``write``/``flush`` that remember the OSError they raised (torch.save
    replaces it with a RuntimeError of its own)."""

    def __init__(self, f: BinaryIO):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(binary file)`` on ``<path>.tmp``, fsync, rename it to ``path``.

    Any failure removes the temporary file and leaves ``path`` as it was; a full disk raises
    :class:`DiskFullError`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            writer = _ErrorKeepingWriter(f)
            try:
                write(writer)
            except Exception as e:
                if writer.error is not None and writer.error is not e:
                    raise writer.error from e
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno in FULL:
            raise disk_full_error(path, e) from None
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync it; a failed append (full disk) is cut back off, so the
    file never keeps half a line."""
    path = Path(path)
    with open(path, "ab", buffering=0) as f:
        size = f.seek(0, os.SEEK_END)
        try:
            data = memoryview(line.encode())
            while data:
                data = data[f.write(data):]
            os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):
                f.truncate(size)
            if isinstance(e, OSError) and e.errno in FULL:
                raise disk_full_error(path, e) from None
            raise
