"""Each plug-in's effect over its base, paired by trial seed: for ``Base+Plugin`` (or a plug-in
standing alone on its default base, ``CenterPolar`` = ``ProxyAnchor+CenterPolar``) and ``Base``
in the same sweep, the per-trial difference (same source train/validation split, same training
seed) of every target's metric and of the target average, as mean ± standard error over the
trials (in points). Pairing removes the trial-to-trial variance both runs share.

    python benchmarks/paired_effects.py --input_dir sweeps_out/glyphs_compare \
        --selection source_val --metrics recall@1 map@r

Reads the records with :mod:`sdgdml.collect` (the same selection as ``collect_results.py``).
"""
from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import pandas as pd
from tabulate import tabulate

from sdgdml.algorithms import UnknownAlgorithmError, components
from sdgdml.collect import SELECTION_METHODS, load_records, per_trial, select


def _base(name: str) -> str | None:
    """The algorithm a plug-in extends: ``A+B+P`` -> ``A+B``; a plug-in standing alone on its
    default base (``CenterPolar`` = ``ProxyAnchor+CenterPolar``) -> that base; else None."""
    try:
        parts = [c.name for c in components(name)]
    except UnknownAlgorithmError:       # a label that names no registered algorithm
        return None
    return "+".join(parts[:-1]) if len(parts) > 1 else None


def paired_rows(per_alg: dict[str, pd.DataFrame], columns: list[str]) -> list[list[str]]:
    """[pair, n, mean ± SE per column] for every plug-in whose base ran in the same sweep."""
    rows = []
    for name, frame in sorted(per_alg.items()):
        base = _base(name)
        if base is None or base not in per_alg:
            continue
        diff = (frame - per_alg[base]).dropna(how="all")       # aligned on trial_seed
        cells = []
        for col in columns:
            d = diff[col].dropna().to_numpy() * 100.0
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            cells.append(f"{d.mean():+.1f} ± {se:.1f}" if len(d) else "-")
        rows.append([f"{name} - {base}", len(diff), *cells])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", nargs="+", required=True, help="sweep folder(s)")
    p.add_argument("--selection", default="source_val", choices=SELECTION_METHODS,
                   help="model selection (as collect_results.py)")
    p.add_argument("--metrics", nargs="+", default=["recall@1"], help="metrics to compare")
    args = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df, _ = load_records(args.input_dir)
    if df.empty:
        print(f"error: no completed run under {' '.join(args.input_dir)}", file=sys.stderr)
        return 1
    sel = select(df, args.selection)
    for dataset in sorted(sel["dataset"].unique()):
        for metric in args.metrics:
            columns, per_alg = per_trial(sel, dataset, metric, "all", False)
            columns = columns + ["average"]
            rows = paired_rows(per_alg, columns)
            print(f"\n{dataset}: {metric}, plug-in minus base, paired by trial seed "
                  f"({args.selection} selection), points, mean ± SE\n")
            print(tabulate(rows, headers=["pair", "trials", *columns], tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
