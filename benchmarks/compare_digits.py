"""Compare algorithms on the embedded DigitsDG benchmark over several trial seeds and print the
per-target Recall@1 table (mean +- standard error over seeds).

    python benchmarks/compare_digits.py                 # ProxyAnchor vs +SEE vs +PFML vs PFML
    python benchmarks/compare_digits.py --algorithms ProxyAnchor PFML --seeds 0 1 --steps 40

Each run is ``python -m sdgdml.train --dataset DigitsDG --algorithm A --trial_seed S
--output_dir OUT/A/seed_S`` with default hparams and the dataset's default length (unless
``--steps``); runs that are already done are not redone. The table reads each run's last
checkpoint (``--selection last``) or the checkpoint with the best source-validation R@1
(``--selection val``, training-domain validation).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate
from tqdm import tqdm

from sdgdml.records import read_records

DEFAULT_ALGORITHMS = ["ProxyAnchor", "ProxyAnchor+SEE", "ProxyAnchor+PFML", "PFML"]


def run_dir(out: Path, algorithm: str, seed: int) -> Path:
    return out / algorithm / f"seed_{seed}"


def run_command(algorithm: str, seed: int, out: Path, steps: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "sdgdml.train", "--dataset", "DigitsDG", "--algorithm",
           algorithm, "--trial_seed", str(seed), "--output_dir",
           str(run_dir(out, algorithm, seed)), "--quiet"]
    return cmd + (["--steps", str(steps)] if steps else [])


def chosen_record(records: list[dict], selection: str, source: str = "mnist") -> dict:
    if selection == "last":
        return max(records, key=lambda r: r["step"])
    return max(records, key=lambda r: (r[f"{source}_val_recall@1"], r["step"]))


def results_table(out: Path, algorithms, seeds, selection: str) -> pd.DataFrame:
    """Rows (algorithm, seed), columns: each target's R@1 (%) and their average."""
    rows = []
    for a in algorithms:
        for s in seeds:
            records = read_records(run_dir(out, a, s) / "results.jsonl")
            if not records:
                raise SystemExit(f"no records in {run_dir(out, a, s)}")
            rec = chosen_record(records, selection)
            targets = {k[: -len("_test_recall@1")]: v * 100 for k, v in rec.items()
                       if k.endswith("_test_recall@1") and not k.startswith("mnist_")}
            rows.append({"algorithm": a, "seed": s, **targets,
                         "average": np.mean(list(targets.values()))})
    return pd.DataFrame(rows)


def mean_se(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c not in ("algorithm", "seed")]
    grouped = df.groupby("algorithm", sort=False)[cols]
    mean, se = grouped.mean(), grouped.std(ddof=1) / np.sqrt(grouped.count())
    return pd.DataFrame({c: [f"{m:.1f} ± {s:.1f}" for m, s in zip(mean[c], se[c])]
                         for c in cols}, index=mean.index)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=DEFAULT_ALGORITHMS, help="names")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="trial seeds")
    p.add_argument("--output_dir", default="runs/compare_digits", help="root of the run folders")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the "
                   "dataset's default length)")
    p.add_argument("--selection", choices=("last", "val"), default="last",
                   help="checkpoint per run: the last one, or the best source-validation R@1")
    args = p.parse_args()
    out = Path(args.output_dir)
    jobs = [(a, s) for a in args.algorithms for s in args.seeds]
    for a, s in tqdm(jobs, desc="runs"):
        cmd = run_command(a, s, out, args.steps)
        done = subprocess.run(cmd, env=os.environ, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    df = results_table(out, args.algorithms, args.seeds, args.selection)
    table = mean_se(df)
    print("command:", " ".join(["python"] + sys.argv))
    print("each run:", " ".join(run_command("ALGORITHM", 0, out, args.steps)[1:])
          .replace("--trial_seed 0", "--trial_seed SEED").replace("seed_0", "seed_SEED"))
    print(f"DigitsDG, source mnist, R@1 (%) on each target's unseen classes, mean ± standard "
          f"error over trial seeds {args.seeds}, {args.selection} checkpoint")
    print(tabulate(table, headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
