"""Published numbers beside ours: the ``reported:`` section of a sweep file, and the tables of
``collect_results.py --reported``.

A sweep file that reproduces a paper table lists that table's numbers, each entry with its
source::

    reported:
      - paper: "Bhatnagar & Ahuja, Potential Field Based Deep Metric Learning (PFML)"
        table: "Table 1, ResNet50 (512 dim) rows"
        column: "CUB-200-2011"          # the paper's column (header) the numbers come from
        selection: "not stated in the paper"
        dataset: CUB200Ext              # our dataset ...
        ours: "real (source)"           # ... and our table's column they belong to
        values: {PFML: {recall@1: 73.4, recall@2: 82.4}, ProxyAnchor: {recall@1: 69.7}}

``values`` maps our algorithm label to {metric: number} when ``ours`` names the column, or to
{our column: number} when ``metric`` names the metric instead. Numbers are as printed in the
paper (``unit: "%"``, the default, or ``unit: raw`` for a value that is not a percentage, such
as PFML's W2 distances). An entry whose numbers are not in our sources says so in ``missing``
instead of giving ``values``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

ENTRY_KEYS = ("paper", "table", "column", "selection", "dataset", "ours", "metric", "values",
              "unit", "note", "missing")
UNITS = ("%", "raw")
SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"


class ReportedError(ValueError):
    """A ``reported:`` section that cannot be read."""


@dataclass(frozen=True)
class Cell:
    """One published number: ``value`` of ``algorithm`` on ``dataset``, in our ``column`` of
    ``metric``'s table; ``source``: paper, table and column; ``unit``: "%" or "raw"."""

    dataset: str
    algorithm: str
    column: str
    metric: str
    value: float
    source: str
    selection: str
    unit: str = "%"


def _entry_cells(e: dict, where: str) -> list[Cell]:
    unknown = set(e) - set(ENTRY_KEYS)
    if unknown:
        raise ReportedError(f"{where}: unknown keys {sorted(unknown)}; known: "
                            f"{', '.join(ENTRY_KEYS)}")
    for key in ("paper", "table"):
        if not isinstance(e.get(key), str) or not e[key].strip():
            raise ReportedError(f"{where}: '{key}' (where the numbers come from) is required")
    if e.get("missing"):
        return []
    if not isinstance(e.get("dataset"), str) or bool(e.get("ours")) == bool(e.get("metric")):
        raise ReportedError(f"{where}: give 'dataset' and either 'ours' (our column; values "
                            f"by metric) or 'metric' (values by our column)")
    unit = e.get("unit", "%")
    if unit not in UNITS:
        raise ReportedError(f"{where}: unit {unit!r} is not one of {', '.join(UNITS)}")
    values = e.get("values")
    if not isinstance(values, dict) or not values:
        raise ReportedError(f"{where}: 'values' ({{algorithm: {{key: number}}}}) or 'missing' "
                            f"(why the numbers are not given) is required")
    source = f"{e['paper']}, {e['table']}" + (f", {e['column']}" if e.get("column") else "")
    cells = []
    for alg, per in values.items():
        if not isinstance(per, dict):
            raise ReportedError(f"{where}: values of {alg!r} must be a mapping")
        for key, v in per.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ReportedError(f"{where}: {alg}/{key}: {v!r} is not a number")
            column, metric = (e["ours"], key) if e.get("ours") else (key, e["metric"])
            cells.append(Cell(e["dataset"], str(alg), str(column), str(metric), float(v),
                              source, str(e.get("selection") or "not stated"), unit))
    return cells


def parse(section, where: str = "reported") -> tuple[list[Cell], list[str]]:
    """(published cells, notes: each entry's note and what is missing) of a ``reported:``
    section."""
    if section is None:
        return [], []
    if not isinstance(section, list):
        raise ReportedError(f"{where}: a list of entries (paper, table, ...)")
    cells, notes = [], []
    for i, e in enumerate(section):
        if not isinstance(e, dict):
            raise ReportedError(f"{where}[{i}]: an entry is a mapping")
        cells += _entry_cells(e, f"{where}[{i}]")
        head = f"{e['paper']}, {e['table']}"
        if e.get("missing"):
            notes.append(f"{head}: numbers not given here: {e['missing']}")
        if e.get("note"):
            notes.append(f"{head}: {e['note']}")
    return cells, notes


def read(path: str | Path) -> tuple[list[Cell], list[str]]:
    """The published cells and notes of the sweep file ``path``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ReportedError(f"{path}: cannot read it ({e})") from None
    if not isinstance(data, dict):
        raise ReportedError(f"{path}: not a sweep file (a mapping)")
    return parse(data.get("reported"), f"{path}: reported")


def sweep_files_of(input_dirs) -> list[Path]:
    """The sweep files (``sweeps/<name>.yaml`` of this repository) named by the definitions in
    the ``sweep.json`` of each input folder."""
    import json

    out = []
    for d in input_dirs:
        try:
            defs = json.loads((Path(d) / "sweep.json").read_text())["definitions"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for definition in defs:
            f = SWEEPS_DIR / f"{definition.get('name')}.yaml"
            if f.exists() and f not in out:
                out.append(f)
    return out


# ----------------------------------------------------------------------------- tables
def _matches(ours: str, published: str) -> bool:
    """Our dataset or algorithm label is the published one, or it plus " [setting]"."""
    return ours == published or ours.startswith(f"{published} [")


def comparison_tables(rows: list[dict], cells: list[Cell], digits: int = 1,
                      selections=("source_val",)):
    """(tables, references): per (selection, metric, dataset) of the published cells, one row
    per published cell with ours (mean ± SE over trials), the paper's number, ours minus the
    paper's and the source's reference ``[k]``; references: "[k] paper, table, column; model
    selection: ...". ``rows``: our cells as numbers (``collect.cell_rows``: fractions)."""
    from .tables import Table, metric_name

    refs = {}
    for c in cells:
        refs.setdefault((c.source, c.selection), f"[{len(refs) + 1}]")

    tables = []
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.metric, c.dataset), []).append(c)
    for method in selections:
        for (metric, dataset), group in groups.items():
            unit = " (%)" if group[0].unit == "%" else ""
            t = Table(f"{dataset}: {metric_name(metric)}{unit}, reported vs ours "
                      f"(selection: {method})",
                      ["algorithm", "column", "ours", "paper", "ours − paper", "source"],
                      labels=2, text_last=True)
            for c in group:
                mine = [r for r in rows if r["selection"] == method and r["metric"] == metric
                        and _matches(r["dataset"], c.dataset) and r["column"] == c.column
                        and _matches(r["algorithm"], c.algorithm)]
                ref = refs[c.source, c.selection]
                t.rows += [_row(c, r, digits, ref) for r in mine] or [_row(c, None, digits, ref)]
            tables.append(t)
    return tables, [f"{k} {src}; model selection: {sel}" for (src, sel), k in refs.items()]


def _row(c: Cell, r: dict | None, digits: int, ref: str) -> list[str]:
    scale = 100.0 if c.unit == "%" else 1.0
    paper = f"{c.value:.{max(digits, _decimals(c.value))}f}"
    if r is None or r["mean"] is None:
        return [c.algorithm, c.column, "–", paper, "–", ref]
    mean = scale * r["mean"]
    ours = f"{mean:.{digits}f}" + (f" ± {scale * r['se']:.{digits}f}" if r["se"] else "")
    return [r["algorithm"], c.column, ours, paper, f"{mean - c.value:+.{digits}f}", ref]


def _decimals(v: float) -> int:
    text = f"{v:g}"
    return len(text.split(".")[1]) if "." in text else 0
