"""A small comparison on the embedded DigitsDG benchmark: R@1 per target domain, mean +/- standard
error over trial seeds, at the last checkpoint of the default demo length.

    python benchmarks/digits_compare.py --algorithms ProxyAnchor CenterPolar --seeds 0 1 2

Each (algorithm, seed) is one ``sdgdml.train`` run (source mnist, every other domain a target,
default hparams, --trial_seed = seed) in ``--output_dir/<algorithm>/seed<k>``; finished runs are
reused, so the script can be re-run to only print the table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from sdgdml.records import read_records
from sdgdml.train import build_parser, train

SUFFIX = "_test_recall@1"


def run(algorithm: str, seed: int, out: Path, device: str, extra: list[str]) -> dict:
    argv = ["--dataset", "DigitsDG", "--source", "mnist", "--algorithm", algorithm,
            "--trial_seed", str(seed), "--output_dir", str(out), "--device", device, "--quiet",
            *extra]
    train(build_parser().parse_args(argv))
    return read_records(out / "results.jsonl")[-1]


def table(last_records: dict[tuple[str, int], dict], source: str = "mnist") -> pd.DataFrame:
    rows = []
    for (algorithm, seed), rec in last_records.items():
        for key, value in rec.items():
            if key.endswith(SUFFIX) and "->" not in key:
                domain = key[: -len(SUFFIX)]
                rows.append({"algorithm": algorithm, "seed": seed,
                             "target": domain + (" (source)" if domain == source else ""),
                             "r1": 100 * value})
    df = pd.DataFrame(rows)
    targets = df[~df.target.str.endswith("(source)")]
    avg = targets.groupby(["algorithm", "seed"], as_index=False).r1.mean().assign(
        target="average (targets)")
    return pd.concat([df, avg], ignore_index=True)


def summary(df: pd.DataFrame, algorithms: list[str]) -> str:
    stats = df.groupby(["target", "algorithm"]).r1.agg(["mean", "std", "count"])
    stats["se"] = stats["std"] / np.sqrt(stats["count"])
    cells = stats.apply(lambda r: f"{r['mean']:.2f} ± {r['se']:.2f}", axis=1).unstack()
    cells = cells[[a for a in algorithms if a in cells.columns]]
    order = sorted(cells.index, key=lambda t: (t.startswith("average"), "(source)" in t, t))
    n = int(stats["count"].min())
    return tabulate(cells.loc[order], headers=["R@1 (%), mean ± s.e., n=" + str(n),
                                               *cells.columns], tablefmt="github")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=["ProxyAnchor", "CenterPolar"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--output_dir", default="runs/digits_compare")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--train_args", nargs=argparse.REMAINDER, default=[],
                   help="extra sdgdml.train arguments, e.g. --train_args --epochs 10")
    args = p.parse_args(argv)
    last = {}
    for algorithm in args.algorithms:
        for seed in args.seeds:
            out = Path(args.output_dir) / algorithm.replace("+", "_") / f"seed{seed}"
            last[(algorithm, seed)] = run(algorithm, seed, out, args.device, args.train_args)
    print(summary(table(last), args.algorithms))


if __name__ == "__main__":
    main()
