r"""Result tables: a table model, the mean ± standard error cells, and rendering as Markdown,
plain text (tabulate), a LaTeX ``tabular`` fragment per table for ``\input`` (booktabs;
``latex_tabular``) or a complete LaTeX document holding them (``latex``). In LaTeX the best
cell of each numeric column of a results table is bold (ties: all of them; the highest, or
the lowest for a distance), ``±`` is
``$\pm$`` and every text is escaped (``--selection`` stays two hyphens, not an en-dash)."""
from __future__ import annotations

import math
import re
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
    bold_best: str = ""      # LaTeX: "max" / "min": that value of each numeric column in bold

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
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\usepackage[margin=1.5cm,landscape]{geometry}
\begin{document}
"""
LATEX_FORMATS = ("latex", "latex_tabular")

_LATEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "±": r"$\pm$", "−": r"$-$", "–": "--", "—": "---",
                "→": r"$\to$", "<": r"\textless{}", ">": r"\textgreater{}", "…": r"\dots{}"}


def latex_text(s) -> str:
    """``s`` as LaTeX text: special characters escaped, ``->`` an arrow, ``--`` two hyphens."""
    s = re.sub(r"-(?=-)", "-\0", str(s).replace("->", "→"))     # \0: "{}" once escaped
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in s).replace("\0", "{}")


def _number(text: str) -> float | None:
    """The leading number of a cell ("72.0 ± 2.0 (n=2)" -> 72.0), None for none."""
    try:
        return float(str(text).split()[0])
    except (ValueError, IndexError):
        return None


def latex_tabular(t: Table) -> str:
    r"""A booktabs ``tabular`` of ``t`` (no float, no caption: for ``\input``); a comment
    line holds the title."""
    cells = [[latex_text(c) for c in row] for row in t.rows]
    if t.bold_best:
        for j in range(t.labels, len(t.headers) - t.text_last):
            values = [_number(row[j]) for row in t.rows]
            pick = min if t.bold_best == "min" else max
            best = pick((v for v in values if v is not None), default=None)
            for row, v in zip(cells, values):
                if best is not None and v == best:
                    row[j] = rf"\textbf{{{row[j]}}}"
    align = "".join({"left": "l", "right": "r"}[a] for a in t.colalign())
    lines = [f"% {latex_text(t.title)}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_text(h) for h in t.headers) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render(tables: list[Table], fmt: str = "markdown", note: str = "") -> str:
    """Markdown (GitHub pipes), plain text, LaTeX ``tabular`` fragments (``latex_tabular``,
    the note as a comment) or a complete LaTeX document (``latex``: each table a float with
    its title as caption, the note below)."""
    if fmt == "latex_tabular":
        foot = f"% {latex_text(note)}\n" if note else ""
        return "\n".join(latex_tabular(t) for t in tables) + foot
    if fmt == "latex":
        body = []
        for t in tables:
            tab = latex_tabular(t).split("\n", 1)[1]
            body.append("\\begin{table}[ht]\n\\centering\n\\small\n"
                        f"\\caption{{{latex_text(t.title)}}}\n{tab}\\end{{table}}\n")
        foot = f"\\noindent {latex_text(note)}\n" if note else ""
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


def metric_name(metric: str) -> str:
    """A metric's name in table titles (``recall@1`` -> ``R@1``)."""
    return {"map@r": "MAP@R", "map@all": "mAP@all", "nmi": "NMI", "ami": "AMI"}.get(
        metric, metric.replace("class_recall@", "class-average R@").replace("recall@", "R@")
        .replace("precision@", "P@"))
