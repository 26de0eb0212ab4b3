"""The plots of ``collect_results.py --plots``: per selection, metric and dataset, bars of each
target column and the average (one bar per algorithm, ± one SE over trials) and the selected
runs' target average over checkpoints (mean ± SE over trials); in % (fractions such as R@K),
with the chance level of the dataset's unseen classes; each a PDF and a PNG."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures
from .collect import per_trial, select, target_keys
from .tables import mean_se, metric_name


def _file_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts)).strip("_")


def checkpoint_series(df: pd.DataFrame, sel: pd.DataFrame, dataset: str, metric: str,
                      protocol: str = "all") -> dict[str, tuple]:
    """{algorithm: (steps, mean, SE)} of the selected runs' target-average ``metric`` at each
    checkpoint, over trials."""
    runs = sel.loc[sel["dataset"] == dataset, "run"].unique()
    part = df[df["run"].isin(runs)].copy()
    part["target_average"] = np.nan
    for source, idx in part.groupby("source").groups.items():
        keys = list(target_keys(part.loc[idx], source, metric, protocol).values())
        if keys:
            part.loc[idx, "target_average"] = part.loc[idx, keys].mean(axis=1, skipna=False)
    series = {}
    for alg, f in part.dropna(subset=["target_average"]).groupby("algorithm"):
        stats = [(step, *mean_se(g["target_average"])[:2])
                 for step, g in f.groupby("step")]
        series[alg] = tuple(zip(*stats))
    return series


def plots(df: pd.DataFrame, out_dir, selections, metrics, selection_metric: str = "recall@1",
          protocol: str = "all", with_source: bool = False) -> list[Path]:
    """Per selection, metric and dataset: ``bars_*.png`` (each target column and the average,
    one bar per algorithm, ± one SE) and ``curves_*.png`` (target average over checkpoints)."""
    out, files = Path(out_dir), []
    for method in selections:
        sel = select(df, method, selection_metric, protocol)
        for metric in metrics:
            name = metric_name(metric)
            for dataset in sorted(sel["dataset"].unique()):
                columns, per_alg = per_trial(sel, dataset, metric, protocol, with_source)
                if not columns:
                    continue
                scale, unit = (100.0, " (%)") if figures.is_percent(metric) else (1.0, "")
                cells = {alg: [tuple(scale * v for v in mean_se(f[c])[:2])
                               for c in [*columns, "average"]]
                         for alg, f in sorted(per_alg.items())}
                chance, chance_text = _chance(dataset, metric)
                chance = None if chance is None else scale * chance
                files += figures.grouped_bars(
                    cells, [*columns, "average"],
                    out / f"{_file_name('bars', dataset, metric, method)}.png",
                    f"{dataset}: {name}, selection {method} (± SE over trials)",
                    f"{name}{unit}", chance, chance_text)
                series = {alg: (x, *(scale * np.asarray(v, float) for v in (m, se)))
                          for alg, (x, m, se) in checkpoint_series(
                              df, sel, dataset, metric, protocol).items()}
                files += figures.line_curves(
                    series, out / f"{_file_name('curves', dataset, metric, method)}.png",
                    f"{dataset}: target-average {name} of the selected runs ({method})",
                    "training step", f"{name}{unit}", chance, chance_text)
    return files


def _chance(dataset: str, metric: str) -> tuple[float | None, str]:
    """The chance level of ``metric`` on the unseen classes of a registered dataset (the
    table's name, a setting such as " [label_noise=0.2]" removed), and its legend text."""
    from .datasets import DATASETS

    cls = DATASETS.get(dataset.split(" [")[0])
    if cls is None or not cls.CLASSES:
        return None, ""
    unseen = len(cls.CLASSES) - len(cls.seen_class_ids())
    return figures.chance_level(metric, unseen), f"chance ({unseen} unseen classes)"
