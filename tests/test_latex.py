"""LaTeX tables: a booktabs ``tabular`` fragment to ``\\input`` (and the standalone document),
the best cell per column in bold, ``\\pm``, escaping that keeps ``--selection`` two hyphens;
compiled with pdflatex where it is installed."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from sdgdml.tables import Table, latex_tabular, latex_text, render


def table():
    t = Table("D_1: R@1 (%), selection: source_val", ["algorithm", "a->b", "average"],
              bold_best="max")
    t.rows = [["A_1", "72.0 ± 2.0", "50.1 (n=2)"], ["B & C", "72.0", "60.0"],
              ["D", "10.0", "–"]]
    return t


def test_fragment_is_a_booktabs_tabular_with_the_best_cells_bold():
    tex = latex_tabular(table())
    lines = tex.splitlines()
    assert lines[0] == r"% D\_1: R@1 (\%), selection: source\_val"
    assert lines[1] == r"\begin{tabular}{lrr}" and lines[-1] == r"\end{tabular}"
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert r"algorithm & a$\to$b & average \\" in lines
    # ties are all bold; the best of "average" is 60.0; a missing cell is an en-dash
    assert r"A\_1 & \textbf{72.0 $\pm$ 2.0} & 50.1 (n=2) \\" in lines
    assert r"B \& C & \textbf{72.0} & \textbf{60.0} \\" in lines
    assert r"D & 10.0 & -- \\" in lines
    assert "documentclass" not in tex


def test_lowest_is_best_for_distances():
    t = table()
    t.bold_best = "min"
    assert r"\textbf{10.0}" in latex_tabular(t)


@pytest.mark.parametrize("text, tex", [
    ("use --selection oracle", "use -{}-selection oracle"),
    ("a->b", r"a$\to$b"),
    ("100% of x_1 & y", r"100\% of x\_1 \& y"),
    ("−1.4 ± 0.2", r"$-$1.4 $\pm$ 0.2"),
    ("~^\\{}$#", r"\textasciitilde{}\textasciicircum{}\textbackslash{}\{\}\$\#"),
])
def test_escaping(text, tex):
    assert latex_text(text) == tex


def test_the_document_holds_the_same_tables_and_the_note():
    doc = render([table()], "latex", "see --selection")
    assert doc.startswith(r"\documentclass{article}") and doc.endswith("\\end{document}\n")
    assert r"\caption{D\_1: R@1 (\%), selection: source\_val}" in doc
    assert latex_tabular(table()).split("\n", 1)[1] in doc
    assert r"\noindent see -{}-selection" in doc
    frag = render([table(), table()], "latex_tabular", "see --selection")
    assert frag.count(r"\begin{tabular}") == 2 and frag.endswith("% see -{}-selection\n")


def test_fragment_and_document_compile(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: the LaTeX is not compiled")
    (tmp_path / "frag.tex").write_text(render([table()], "latex_tabular", "--selection"))
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage{booktabs}"
        "\\begin{document}\\input{frag}\\end{document}\n")
    (tmp_path / "doc.tex").write_text(render([table()], "latex", "--selection"))
    for name in ("paper.tex", "doc.tex"):
        res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout[-2000:]
