"""Collect a sweep's records, select models, and print the results tables.

Loading tolerates what crashes leave behind: a corrupt or half-written line is skipped, a run
folder without records is skipped, each with a warning. Runs without ``done`` are ignored unless
``include_incomplete``.

Model selection, per (dataset, source, algorithm, trial seed), over every hparams sample and
checkpoint of that trial:

- ``source_val``: the record (hparams *and* checkpoint) with the best source-domain validation
  metric ``<source>_val_<selection_metric>`` (seen classes held out of the source's training
  images: no target data is looked at);
- ``oracle``: the record with the best mean target-domain metric (an upper bound, peeks at the
  test domains; one choice per trial, shared by all target columns);
- ``last``: each run's last checkpoint; among them, the hparams with the best source validation.
Ties go to the lower hparams seed, then the earlier step. Runs that differ in other experiment
args (steps, label noise, protocol, ...) are never pooled: each setting is its own dataset
("DigitsDG [label_noise=0.2]").

Cells are mean ± standard error over trials, in %: SE = sample std (ddof=1) / sqrt(n)
(n = number of trials; a single trial shows no ±). The average column averages each trial's
targets first, then takes mean ± SE over trials; the same for the averages table across datasets.
``csv`` / ``json`` give the same cells as numbers, one row per (selection, metric, dataset,
algorithm, column) with ``mean``, ``se`` and ``n`` (fractions in [0, 1], like the records).
``collect_plots`` draws them: per-domain bars with standard-error bars, and the selected runs' target
average over checkpoints (mean ± SE over trials).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .flags import CELL_ARGS, MACHINE_ARGS
from .records import numbered_records
from .tables import SE_NOTE, Table, cell, mean_se, metric_name, render

SELECTION_METHODS = ("source_val", "oracle", "last")
DATA_FORMATS = ("csv", "json")
ID_COLUMNS = ("run", "dataset", "source", "targets", "algorithm", "hparams_seed", "trial_seed",
              "step")
SKIP_DIRS = {"submitit", "__pycache__"}


# ----------------------------------------------------------------------------- loading
def find_runs(root: str | Path) -> list[Path]:
    """Folders under ``root`` holding a run (``args.json`` or ``results.jsonl``)."""
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "results.jsonl" in filenames or "args.json" in filenames:
            runs.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
    return sorted(runs)


def _sweep_labels(sweep_dir: Path) -> dict[str, str]:
    """{run id: table label} from a sweep's ``sweep.json`` (algorithm entries' ``label``)."""
    try:
        runs = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
        return {rid: info["label"] for rid, info in runs.items() if info.get("label")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class NoResultsError(ValueError):
    """No run with records below the input folders."""


def dirs_of(input_dirs) -> list:
    """One folder or several, as a list."""
    return [input_dirs] if isinstance(input_dirs, (str, Path)) else list(input_dirs)


def load_records(input_dirs, include_incomplete: bool = False
                 ) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(one row per record: ids + numeric metrics, {run: hparams}) from every run found.
    The ``algorithm`` column is the sweep's label of the run when it has one."""
    rows, hparams, incomplete, labels = [], {}, [], {}
    for root in dirs_of(input_dirs):
        if not Path(root).is_dir():
            warnings.warn(f"{root}: no such folder (skipped)", stacklevel=2)
            continue
        for run_dir in find_runs(root):
            if not (run_dir / "done").exists() and not include_incomplete:
                incomplete.append(run_dir)
                continue
            records = _usable_records(run_dir / "results.jsonl")
            if not records:
                warnings.warn(f"{run_dir}: run folder with no records (skipped)", stacklevel=2)
                continue
            run = str(run_dir)
            args = records[-1].get("args", {})
            if not (isinstance(args.get("dataset"), str) and isinstance(args.get("source"), str)):
                warnings.warn(f"{run_dir}: its records name no dataset and source (skipped)",
                              stacklevel=2)
                continue
            hparams[run] = records[-1].get("hparams", {})
            if run_dir.parent not in labels:
                labels[run_dir.parent] = _sweep_labels(run_dir.parent)
            label = labels[run_dir.parent].get(run_dir.name, args.get("algorithm"))
            if args.get("recipe"):                      # a named recipe shows in the tables
                label = f"{label} [{args['recipe']}]"
            ids = {"run": run, "dataset": args.get("dataset"), "source": args.get("source"),
                   "targets": ",".join(map(str, args.get("targets") or [])),
                   "algorithm": label, "hparams_seed": args.get("hparams_seed"),
                   "trial_seed": args.get("trial_seed"),
                   "setting": json.dumps({k: v for k, v in args.items() if k not in CELL_ARGS
                                          and k not in MACHINE_ARGS and k != "recipe"},
                                         sort_keys=True)}
            _warn_non_finite(run_dir, records)
            for r in records:
                rows.append({**ids, **{k: v for k, v in r.items()
                                       if isinstance(v, (int, float)) and not isinstance(v, bool)
                                       and k not in ids}})
    if incomplete:
        warnings.warn(f"{len(incomplete)} runs without `done` ignored (e.g. {incomplete[0]}); "
                      f"--include_incomplete uses them", stacklevel=2)
    df = pd.DataFrame.from_records(rows)
    if df.empty:
        return pd.DataFrame(columns=list(ID_COLUMNS)), hparams
    return _split_settings(df), hparams


def check_metrics_recorded(df: pd.DataFrame, metrics) -> None:
    """Raise :class:`NoResultsError` for a metric no record holds (with the closest ones)."""
    from .suggest import did_you_mean

    for metric in metrics:
        if not any(str(c).endswith(f"_{metric}") for c in df.columns):
            recorded = {str(c)[i + 1:] for c in df.columns for i, ch in enumerate(str(c))
                        if ch == "_"}
            raise NoResultsError(f"no record holds the metric {metric!r}"
                                 f"{did_you_mean(metric, sorted(recorded))}")


def _usable_records(path: Path) -> list[dict]:
    """The run's records a table can use: each other one is skipped with a ``file:line``
    warning (its args not a mapping, its step not a number)."""
    usable = []
    for lineno, r in numbered_records(path):
        step = r.get("step")
        problem = ("its args is not a mapping" if not isinstance(r.get("args", {}), dict) else
                   "its hparams is not a mapping" if not isinstance(r.get("hparams", {}), dict)
                   else "its step is not a number" if isinstance(step, bool)
                   or not isinstance(step, (int, float)) else "")
        if problem:
            warnings.warn(f"{path}:{lineno}: record skipped ({problem})", stacklevel=3)
        else:
            usable.append(r)
    return usable


def _warn_non_finite(run_dir: Path, records: list[dict]) -> None:
    """Say which metrics of a run are NaN/inf (kept: its means and selections become NaN)."""
    bad = sorted({k for r in records for k, v in r.items()
                  if isinstance(v, float) and not math.isfinite(v)})
    if bad:
        warnings.warn(f"{run_dir}: NaN/inf values in {', '.join(bad[:5])}"
                      f"{' ...' if len(bad) > 5 else ''} (the cells using them are NaN)",
                      stacklevel=3)


def _split_settings(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of a dataset that differ in other experiment args (steps, label noise, protocol,
    ...) are never pooled by model selection: each such setting becomes a dataset of its own,
    named by the args that differ ("DigitsDG [label_noise=0.2]")."""
    for dataset in df["dataset"].dropna().unique():
        mine = df["dataset"] == dataset
        settings = {s: json.loads(s) for s in df.loc[mine, "setting"].unique()}
        if len(settings) < 2:
            continue
        differ = sorted({k for a in settings.values() for k in a
                         if len({repr(b.get(k)) for b in settings.values()}) > 1})
        for text, args in settings.items():
            name = ", ".join(f"{k}={args.get(k)}" for k in differ)
            df.loc[mine & (df["setting"] == text), "dataset"] = f"{dataset} [{name}]"
    return df.drop(columns="setting")


# ----------------------------------------------------------------------------- selection
def target_keys(df: pd.DataFrame, source: str, metric: str, protocol: str = "all",
                with_source: bool = False) -> dict[str, str]:
    """{column label: record key} of the target splits of ``metric`` present in ``df``.

    A record key is ``<split>_<metric>``. ``<source>_val`` is for selection only; other
    ``<source>_...`` splits (the source's unseen classes, ``<source>_test``) are shown only
    ``with_source``; every other split is a target: ``<t>_test`` (within-domain, label ``t``),
    ``<q>-><g>_test`` (cross-domain, label ``q->g``) or another protocol's ``<q>-><g>_<kind>``.
    """
    suffix = f"_{metric}"
    out = {}
    for key in df.columns:
        if not isinstance(key, str) or not key.endswith(suffix) or key in ID_COLUMNS:
            continue
        split = key[: -len(suffix)]
        label = split[: -len("_test")] if split.endswith("_test") else split
        if split == f"{source}_val" or df[key].isna().all():
            continue
        if split.startswith(f"{source}_"):
            if with_source:
                out[f"{label} (source)"] = key
            continue
        cross = "->" in split
        if (protocol == "within" and cross) or (protocol == "cross" and not cross):
            continue
        out[label] = key
    return out


def select(df: pd.DataFrame, method: str, selection_metric: str = "recall@1",
           protocol: str = "all") -> pd.DataFrame:
    """One row per (dataset, source, algorithm, trial_seed): the selected record."""
    if method not in SELECTION_METHODS:
        raise ValueError(f"unknown selection {method!r}; known: {', '.join(SELECTION_METHODS)}")
    if df.empty:
        return df
    df = df.copy()
    if method == "last":
        df = df[df["step"] == df.groupby("run")["step"].transform("max")]
    df["score"] = np.nan
    for (dataset, source), idx in df.groupby(["dataset", "source"]).groups.items():
        part = df.loc[idx]
        if method == "oracle":
            keys = list(target_keys(part, source, selection_metric, protocol).values())
            score = part[keys].mean(axis=1, skipna=False) if keys else np.nan
        else:
            key = f"{source}_val_{selection_metric}"
            score = part[key] if key in part else np.nan
            if key not in part and method == "last":
                # label-free runs (UCDR protocols) have no source validation: with a single
                # hparams seed per (algorithm, trial) there is nothing to select
                single = part.groupby(["algorithm", "trial_seed"])["hparams_seed"].transform(
                    "nunique") == 1
                score = single.astype(float).where(single)
        df.loc[idx, "score"] = score
    missing = df.groupby(["dataset", "source", "algorithm", "trial_seed"])["score"].apply(
        lambda s: s.isna().all())
    for key in missing[missing].index:
        warnings.warn(f"no {method} selection metric ({selection_metric}) for {key}: skipped",
                      stacklevel=2)
    df = df.dropna(subset=["score"])
    df = df.sort_values(["dataset", "source", "algorithm", "trial_seed", "score",
                         "hparams_seed", "step"],
                        ascending=[True, True, True, True, False, True, True], kind="stable")
    return df.groupby(["dataset", "source", "algorithm", "trial_seed"], sort=False).head(1)


# ----------------------------------------------------------------------------- tables
def per_trial(sel: pd.DataFrame, dataset: str, metric: str, protocol: str,
               with_source: bool) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """Column labels and {algorithm: DataFrame trial_seed x column (+ 'average')}."""
    part = sel[sel["dataset"] == dataset]
    sources = sorted(part["source"].unique())
    columns, per_alg = [], {}
    frames = []
    for source in sources:
        sp = part[part["source"] == source]
        keys = target_keys(sp, source, metric, protocol, with_source)
        order = sp["targets"].iloc[0].split(",") if "targets" in sp else []
        keys = dict(sorted(keys.items(), key=lambda kv: _column_rank(kv[0], source, order)))
        labels = {k: (lab if len(sources) == 1 or "->" in lab else f"{source}->{lab}")
                  for lab, k in keys.items()}
        columns += [labels[k] for k in keys.values()]
        f = sp[["algorithm", "trial_seed", *keys.values()]].rename(columns=labels)
        frames.append(f.set_index(["algorithm", "trial_seed"]))
    if not frames:
        return [], {}
    wide = pd.concat(frames, axis=1) if len(frames) > 1 else frames[0]
    targets = [c for c in columns if not c.endswith("(source)")] or columns
    wide["average"] = wide[targets].mean(axis=1, skipna=False)    # of the target columns
    for alg, f in wide.groupby(level="algorithm"):
        per_alg[alg] = f.droplevel("algorithm")
    return columns, per_alg


def _column_rank(label: str, source: str, targets: list[str]) -> tuple:
    """Columns follow the run's ``--targets`` order (the paper's), source first, within-domain
    before cross-domain splits of the same target."""
    if label.endswith("(source)"):
        return (-1, label)
    for i, t in enumerate(targets):
        if label == t or label.startswith(f"{t}->") or label.endswith(f"->{t}") \
                or f"->{t}_" in label:
            return (i, "->" in label, label)
    return (len(targets), True, label)


def dataset_tables(sel: pd.DataFrame, metric: str, method: str, digits: int = 1,
                   protocol: str = "all", with_source: bool = False
                   ) -> tuple[list[Table], dict[str, dict[str, pd.Series]]]:
    """Per dataset: rows = algorithms, columns = targets + average; and, for the averages
    table, {dataset: {algorithm: per-trial averages}}."""
    tables, averages = [], {}
    for dataset in sorted(sel["dataset"].unique()):
        columns, per_alg = per_trial(sel, dataset, metric, protocol, with_source)
        if not columns:
            warnings.warn(f"{dataset}: no target column of {metric} ({protocol} protocol) in "
                          f"the selected records (not recorded?): no table", stacklevel=2)
            continue
        n_max = max(len(f) for f in per_alg.values())
        t = Table(f"{dataset}: {metric_name(metric)} (%), selection: {method}",
                  ["algorithm", *columns, "average"], bold_best=better(metric))
        for alg in sorted(per_alg):
            f = per_alg[alg]
            t.rows.append([alg, *(cell(f[c], digits, n_max) for c in [*columns, "average"])])
        tables.append(t)
        averages[dataset] = {alg: f["average"] for alg, f in per_alg.items()}
    return tables, averages


def averages_table(averages: dict[str, dict[str, pd.Series]], metric: str, method: str,
                   digits: int = 1) -> Table | None:
    """Rows = algorithms, columns = each dataset's average + the mean over datasets
    (per trial: the mean of that trial's dataset averages; only where every dataset ran; with
    one dataset, its average alone)."""
    if not averages:
        return None
    datasets = sorted(averages)
    algs = sorted({a for per in averages.values() for a in per})
    n_max = max(len(s) for per in averages.values() for s in per.values())
    several = len(datasets) > 1      # one dataset: its average, no copy of it as "average"
    t = Table(f"Average over datasets: {metric_name(metric)} (%), selection: {method}",
              ["algorithm", *datasets, *["average"] * several], bold_best=better(metric))
    for alg in algs:
        series = [averages[d].get(alg) for d in datasets]
        cells = [cell(s, digits, n_max) if s is not None else "–" for s in series]
        if several and all(s is not None for s in series):
            overall = pd.concat(series, axis=1).mean(axis=1, skipna=False)
            cells.append(cell(overall, digits, n_max))
        elif several:
            cells.append("–")
        t.rows.append([alg, *cells])
    return t


def hparams_table(sel: pd.DataFrame, hparams: dict[str, dict], df: pd.DataFrame,
                  method: str) -> Table:
    """The selected run of each (dataset, source, algorithm, trial): its hparams seed, step,
    selection score and the hparams that vary among that cell's candidate runs."""
    t = Table(f"Selected hparams ({method})",
              ["dataset", "source", "algorithm", "trial", "hparams_seed", "step", "score",
               "hparams (those that vary in the sweep)"], labels=3, text_last=True)
    for _, r in sel.sort_values(["dataset", "source", "algorithm", "trial_seed"]).iterrows():
        runs = df.loc[(df["dataset"] == r["dataset"]) & (df["source"] == r["source"])
                      & (df["algorithm"] == r["algorithm"]), "run"].unique()
        cand = [hparams.get(x, {}) for x in runs]
        chosen = hparams.get(r["run"], {})
        vary = sorted(k for k in chosen if len({repr(h.get(k)) for h in cand}) > 1)
        t.rows.append([r["dataset"], r["source"], r["algorithm"], int(r["trial_seed"]),
                       int(r["hparams_seed"]), int(r["step"]), f"{100 * r['score']:.2f}",
                       ", ".join(f"{k}={_short(chosen[k])}" for k in vary) or "(none vary)"])
    return t


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def better(metric: str) -> str:
    """Which end of a metric's column is best: "min" for distances (PFML's proxy_w2)."""
    return "min" if metric.endswith("_w2") else "max"


# ----------------------------------------------------------------------------- numbers
def cell_rows(sel: pd.DataFrame, method: str, metric: str, protocol: str = "all",
              with_source: bool = False) -> list[dict]:
    """The tables' cells as numbers: one dict per (dataset, algorithm, column)."""
    rows = []
    for dataset in sorted(sel["dataset"].unique()):
        columns, per_alg = per_trial(sel, dataset, metric, protocol, with_source)
        for alg in sorted(per_alg):
            for column in [*columns, "average"] if columns else []:
                mean, se, n = mean_se(per_alg[alg][column])
                rows.append({"selection": method, "metric": metric, "dataset": dataset,
                             "algorithm": alg, "column": column,
                             "mean": None if math.isnan(mean) else mean,
                             "se": None if math.isnan(se) else se, "n": n})
    return rows


def render_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    return pd.DataFrame(rows, columns=["selection", "metric", "dataset", "algorithm", "column",
                                       "mean", "se", "n"]).to_csv(index=False)


def collect(input_dirs, selections=("source_val",), metrics=("recall@1",),
            selection_metric: str = "recall@1", protocol: str = "all",
            with_source: bool = False, include_incomplete: bool = False,
            show_hparams: bool = False, digits: int = 1, fmt: str = "markdown",
            reported=None) -> str:
    """Everything ``collect_results.py`` prints, as one string (``fmt``: markdown, plain,
    latex, csv or json); its ``--plots`` are ``collect_plots.plots``'s; ``reported``:
    (published cells, notes) of ``sdgdml.reported``, tabulated beside ours after the other
    tables."""
    df, hparams = load_records(input_dirs, include_incomplete)
    if df.empty:
        raise NoResultsError("no completed runs found in " + ", ".join(map(str, dirs_of(
            input_dirs))) + ("" if include_incomplete else
                             " (--include_incomplete to use unfinished ones)"))
    check_metrics_recorded(df, [*metrics, selection_metric])
    if fmt in DATA_FORMATS:
        rows = []
        for method in selections:
            sel = select(df, method, selection_metric, protocol)
            for metric in metrics:
                rows += cell_rows(sel, method, metric, protocol, with_source)
        return render_rows(rows, fmt)
    tables = []
    for method in selections:
        sel = select(df, method, selection_metric, protocol)
        for metric in metrics:
            per_dataset, averages = dataset_tables(sel, metric, method, digits, protocol,
                                                   with_source)
            tables += per_dataset
            avg = averages_table(averages, metric, method, digits)
            if avg is not None:       # also for one dataset: the row to quote in a paper
                tables.append(avg)
        if show_hparams:
            tables.append(hparams_table(sel, hparams, df, method))
    n_runs = df["run"].nunique()
    note = (f"Cells: {SE_NOTE}; in %. {n_runs} runs, {len(df)} records. Selection by "
            f"{selection_metric}: " + "; ".join(f"{m} = {_SELECTION_DOC[m]}" for m in selections)
            + ". " + ORACLE_NOTE)
    if reported is not None:
        more, notes = reported_tables(df, reported, selections, selection_metric, protocol,
                                      digits)
        tables += more
        note += " Reported numbers: " + " ".join(f"{n}." for n in notes)
    return render(tables, fmt, note)


def reported_tables(df, reported, selections, selection_metric, protocol, digits):
    """The published cells beside ours (per selection), and the notes of their sources."""
    from .reported import comparison_tables

    cells, notes = reported
    rows = []
    for method in selections:
        sel = select(df, method, selection_metric, protocol)
        for metric in dict.fromkeys(c.metric for c in cells):
            rows += cell_rows(sel, method, metric, protocol, with_source=True)
    tables, refs = comparison_tables(rows, cells, digits, selections)
    return tables, [*refs, *dict.fromkeys(notes)]


ORACLE_NOTE = ("The official codes of ProxyAnchor, SEE and PFML report the best test epoch: "
               "compare with paper tables under --selection oracle.")


_SELECTION_DOC = {
    "source_val": "best source-validation checkpoint and hparams per trial",
    "oracle": "best mean-target checkpoint and hparams per trial (peeks at the targets)",
    "last": "last checkpoint, hparams by source validation",
}
