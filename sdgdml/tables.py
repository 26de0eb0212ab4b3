"""Result tables: a table model, the mean ± standard error cells, and rendering as Markdown,
plain text or a complete LaTeX document (booktabs), all through tabulate."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate

SE_NOTE = "mean ± standard error over trials (SE = sample std with ddof=1 / sqrt(n))"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    labels: int = 1          # leading label columns (left-aligned); the rest right-aligned
    text_last: bool = False  # the last column is text (left-aligned)

    def colalign(self) -> tuple[str, ...]:
        n_num = len(self.headers) - self.labels - self.text_last
        return ("left",) * self.labels + ("right",) * n_num + ("left",) * self.text_last


def mean_se(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se, len(v)


def cell(values, digits: int, n_max: int) -> str:
    m, se, n = mean_se(values)
    if n == 0:
        return "–"
    text = f"{100 * m:.{digits}f}" + (f" ± {100 * se:.{digits}f}" if n > 1 else "")
    return text + (f" (n={n})" if n < n_max else "")


LATEX_HEAD = r"""\documentclass{article}
\usepackage[utf8]{inputenc}
\usepackage{booktabs}
\usepackage[margin=1.5cm,landscape]{geometry}
\begin{document}
"""


def _latex_text(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                 ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\~{}"),
                 ("^", r"\^{}"), ("±", r"$\pm$")):
        s = s.replace(a, b)
    return s.replace("->", r"$\to$")


def render(tables: list[Table], fmt: str = "markdown", note: str = "") -> str:
    """Markdown (GitHub pipes), plain text, or a complete LaTeX document (booktabs)."""
    if fmt == "latex":
        body = []
        for t in tables:
            tab = tabulate(t.rows, headers=t.headers, tablefmt="latex_booktabs",
                           disable_numparse=True, colalign=t.colalign())
            tab = tab.replace("±", r"$\pm$").replace(r"-\ensuremath{>}", r"$\to$")
            body.append("\\begin{table}[ht]\n\\centering\n\\small\n"
                        f"\\caption{{{_latex_text(t.title)}}}\n{tab}\n\\end{{table}}\n")
        foot = f"\\noindent {_latex_text(note)}\n" if note else ""
        return LATEX_HEAD + "\n".join(body) + foot + "\\end{document}\n"
    tablefmt = "github" if fmt == "markdown" else "simple"
    parts = []
    for t in tables:
        title = f"### {t.title}" if fmt == "markdown" else t.title
        parts.append(f"{title}\n\n" + tabulate(t.rows, headers=t.headers, tablefmt=tablefmt,
                                                disable_numparse=True, colalign=t.colalign()))
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"
