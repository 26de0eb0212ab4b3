"""Golden test: collect_results.py over a small checked-in sweep (made by
tests/golden/make_golden.py with real DigitsDG runs, plus a half-written line and a run folder
without records) prints exactly the checked-in Markdown, LaTeX and plain tables."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from sdgdml.records import read_records
from helpers import PYTHON, REPO, subprocess_env

GOLDEN = REPO / "tests" / "golden"
COMMANDS = {
    "expected_tables.md": ["--metrics", "recall@1", "map@r", "--show_hparams"],
    "expected_tables.tex": ["--metrics", "recall@1", "--latex"],
    "expected_selections.txt": ["--format", "plain", "--selection", "oracle", "last",
                                "--digits", "2"],
}


def collect(args):
    return subprocess.run([PYTHON, str(REPO / "collect_results.py"), "--input_dir",
                           str(GOLDEN / "sweep"), *args], capture_output=True, text=True,
                          env=subprocess_env(), check=True)


def test_golden_sweep_is_small():
    size = sum(f.stat().st_size for f in (GOLDEN / "sweep").rglob("*") if f.is_file())
    assert size < 30_000


@pytest.mark.parametrize("expected", sorted(COMMANDS))
def test_tables_match_the_golden_files(expected):
    res = collect(COMMANDS[expected])
    assert res.stdout == (GOLDEN / expected).read_text()
    assert "skipping unreadable record" in res.stderr             # the half-written line
    assert "lost_its_records: run folder with no records" in res.stderr


def test_golden_source_val_cells_by_brute_force():
    """The R@1 table of the golden file, recomputed from the raw records by loops."""
    chosen, records = {}, []
    with pytest.warns(UserWarning, match="skipping unreadable record"):
        for f in sorted((GOLDEN / "sweep").glob("*/results.jsonl")):
            records += read_records(f)
    for r in records:
        key = (r["args"]["algorithm"], r["args"]["trial_seed"])
        rank = (r["mnist_val_recall@1"], -r["args"]["hparams_seed"], -r["step"])
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, r)
    md = (GOLDEN / "expected_tables.md").read_text().split("###")[1]
    for alg in ("NormSoftmax", "ProxyAnchor"):
        recs = [chosen[alg, t][1] for t in (0, 1)]
        cells = []
        for col in ("sketch", "rotate", None):
            v = np.array([(r["sketch_test_recall@1"] + r["rotate_test_recall@1"]) / 2
                          if col is None else r[f"{col}_test_recall@1"] for r in recs])
            cells.append(f"{100 * v.mean():.1f} ± {100 * stats.sem(v):.1f}")
        row = [line for line in md.splitlines() if line.startswith(f"| {alg}")][0]
        assert [c.strip() for c in row.strip("|").split("|")] == [alg, *cells]


def test_golden_latex_compiles(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: the golden LaTeX is compared but not compiled")
    shutil.copy(GOLDEN / "expected_tables.tex", tmp_path / "t.tex")
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
