"""Shared helpers for the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from sdgdml.records import read_records
from sdgdml.flags import MACHINE_ARGS

REPO = Path(__file__).resolve().parents[1]
# keys that measure the machine, not the experiment
VOLATILE_KEYS = ("step_time", "eval_time", "mem_gb")

# a tiny DigitsDG run: a few steps, one target, cheap metrics
TINY_TRAIN = ["--dataset", "DigitsDG", "--source", "mnist", "--targets", "sketch",
              "--metrics", "recall@1", "recall@2", "map@r", "--quiet"]


def comparable(records: list[dict]) -> list[dict]:
    """Records without timing/memory keys and without machine args (every metric, loss,
    step, hparam and experiment arg kept)."""
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in VOLATILE_KEYS}
        r["args"] = {k: v for k, v in r["args"].items() if k not in MACHINE_ARGS}
        out.append(r)
    return out


def run_records(run_dir) -> list[dict]:
    return comparable(read_records(Path(run_dir) / "results.jsonl"))


def subprocess_env() -> dict:
    """The environment for child processes: this checkout first on the path, offline hub."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "")
                                                        .split(os.pathsep) if p])
    env["HF_HUB_OFFLINE"] = "1"
    return env


PYTHON = sys.executable
