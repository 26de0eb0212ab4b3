"""The run record format: one JSON object per line in ``results.jsonl`` (one per checkpoint).

Reading tolerates what a killed writer leaves behind: a half-written or corrupt line is skipped
with a warning, never an exception.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from .atomic import append_line, atomic_write

SCHEMA_VERSION = 1
def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as JSON atomically: a reader (or a restart after a kill) sees the old
    file or the new one, never half of it (``atomic.atomic_write``)."""
    text = json.dumps(data, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(text))


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``; None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def append_record(path: str | Path, record: dict) -> None:
    """Append one record and flush it to disk (a failed append leaves no half line)."""
    append_line(path, json.dumps(record, sort_keys=True) + "\n")


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a results file ([] if it does not exist)."""
    return [rec for _, rec in numbered_records(path)]


def numbered_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) of every complete record (a reader that skips more can say
    ``file:line``)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                warnings.warn(f"{path}:{lineno}: skipping unreadable record ({e})", stacklevel=3)
                continue
            records.append((lineno, rec))
    return records


def truncate_records(path: str | Path, max_step: int) -> int:
    """Keep only the readable records with ``step <= max_step`` (used on resume); returns how
    many were dropped. The rewrite is atomic."""
    path = Path(path)
    if not path.exists():
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = read_records(path)
    kept = [r for r in records if r.get("step", -1) <= max_step]
    with open(path) as f:
        n_lines = sum(1 for line in f if line.strip())
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode()
    atomic_write(path, lambda f: f.write(text))
    return n_lines - len(kept)
