"""Published numbers beside ours (``collect_results.py --reported``): every paper sweep file
carries its table's numbers with their source, and hand-made records of a tiny "paper sweep"
print the paper's cells next to ours with the difference, in Markdown and LaTeX."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import collect_results
from sdgdml import reported
from sdgdml.sweep_config import SweepError, from_file

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
PAPER_SWEEPS = sorted(p for pattern in ("centerpolar_*", "pfml_table*", "see_table*", "uem_*")
                      for p in SWEEPS.glob(f"{pattern}.yaml"))


@pytest.mark.parametrize("path", PAPER_SWEEPS, ids=lambda p: p.stem)
def test_every_paper_sweep_carries_its_tables_numbers_with_their_source(path):
    from_file(path)                                   # still a valid sweep file
    cells, notes = reported.read(path)
    assert cells or any("numbers not given here" in n for n in notes), path
    for c in cells:
        assert c.source and c.selection and c.value >= 0
        if c.unit == "%":
            assert 0 < c.value <= 100
    # the algorithms named are the sweep's rows (its labels)
    import yaml
    data = yaml.safe_load(path.read_text())
    labels = {a if isinstance(a, str) else a.get("label", a["name"]) for a in data["algorithms"]}
    assert {c.algorithm for c in cells} <= labels


def test_pfml_table1_headline_numbers():
    cells = {(c.dataset, c.algorithm, c.metric): c.value
             for c in reported.read(SWEEPS / "pfml_table1.yaml")[0]}
    assert cells["CUB200Ext", "PFML", "recall@1"] == 73.4
    assert cells["Cars196Ext", "PFML", "recall@1"] == 92.7


def write_run(root, name, algorithm, trial, value, dataset="CUB200Ext", source="real"):
    run = root / name
    run.mkdir(parents=True)
    args = {"dataset": dataset, "source": source, "algorithm": algorithm, "targets": [],
            "hparams_seed": 0, "trial_seed": trial}
    recs = [{"step": s, f"{source}_val_recall@1": 0.5 + s / 100,
             f"{source}_test_recall@1": value + s / 100, f"{source}_test_recall@2": 0.9}
            for s in (0, 10)]
    (run / "results.jsonl").write_text("".join(json.dumps({**r, "args": args}) + "\n"
                                               for r in recs))
    (run / "done").write_text("done\n")


SECTION = """
reported:
  - paper: "Toy et al., A Paper"
    table: "Table 1"
    column: "CUB-200-2011"
    selection: "best test epoch"
    dataset: CUB200Ext
    ours: "real (source)"
    values:
      PFML: {recall@1: 73.4, recall@2: 82.4}
      SoftTriple: {recall@1: 65.4}
  - paper: "Toy et al., A Paper"
    table: "Table 9"
    missing: "not in our copy"
"""


@pytest.fixture
def paper_sweep(tmp_path):
    out = tmp_path / "out"
    for trial, v in enumerate((0.60, 0.64)):
        write_run(out, f"p{trial}", "PFML", trial, v)
    sweep_file = tmp_path / "toy.yaml"
    sweep_file.write_text("splits: ['CUB200Ext:real']\nalgorithms: [PFML, SoftTriple]\n"
                          + SECTION)
    return out, sweep_file


def test_reported_markdown_puts_the_papers_cells_beside_ours(paper_sweep, capsys):
    out, sweep_file = paper_sweep
    collect_results.main(["--input_dir", str(out), "--reported", str(sweep_file)])
    text = capsys.readouterr().out
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:6])
            for line in text.splitlines() if line.startswith("| PFML") or
            line.startswith("| SoftTriple")}
    # ours: the source-val selected checkpoint (step 10): 0.70 and 0.74 -> 72.0 ± 2.0
    assert ("PFML", "real (source)", "72.0 ± 2.0", "73.4", "-1.4", "[1]") in rows
    assert ("PFML", "real (source)", "90.0", "82.4", "+7.6", "[1]") in rows     # R@2, SE 0
    assert ("SoftTriple", "real (source)", "–", "65.4", "–", "[1]") in rows     # not run: shown
    assert "[1] Toy et al., A Paper, Table 1, CUB-200-2011; model selection: best test epoch" \
        in text
    assert "Table 9: numbers not given here: not in our copy" in text


def test_reported_latex_escapes_and_compiles_where_possible(paper_sweep, capsys):
    out, sweep_file = paper_sweep
    collect_results.main(["--input_dir", str(out), "--reported", str(sweep_file), "--latex"])
    tex = capsys.readouterr().out
    assert r"72.0 $\pm$ 2.0" in tex and "73.4" in tex and "-1.4" in tex


def test_reported_without_a_file_uses_the_sweep_json_name(paper_sweep, capsys, monkeypatch):
    out, _ = paper_sweep
    (out / "sweep.json").write_text(json.dumps({"definitions": [{"name": "pfml_table1"}],
                                                "runs": {}}))
    collect_results.main(["--input_dir", str(out), "--reported"])
    text = capsys.readouterr().out
    assert "PFML Table 1" not in text          # the table's text is the paper's, not a label
    assert "| PFML" in text and "73.4" in text and "Table 1, ResNet50 (512 dim) rows" in text


@pytest.mark.parametrize("section, error", [
    ("reported: {a: 1}", "a list of entries"),
    ("reported: [{paper: P, table: T, dataset: D, ours: c, values: {A: {recall@1: x}}}]",
     "is not a number"),
    ("reported: [{table: T, dataset: D, ours: c, values: {A: {recall@1: 1}}}]", "'paper'"),
    ("reported: [{paper: P, table: T, dataset: D, values: {A: {recall@1: 1}}}]",
     "either 'ours'"),
    ("reported: [{paper: P, table: T, dataset: D, ours: c, valeus: {}}]", "unknown keys"),
])
def test_a_bad_reported_section_is_one_clear_error(tmp_path, section, error):
    f = tmp_path / "s.yaml"
    f.write_text("splits: [DigitsDG]\nalgorithms: [ProxyAnchor]\n" + section + "\n")
    with pytest.raises(SweepError, match=error):
        from_file(f)
    out = tmp_path / "o"
    write_run(out, "r", "ProxyAnchor", 0, 0.5)
    with pytest.raises(SystemExit, match="^error: .*" + error):
        collect_results.main(["--input_dir", str(out), "--reported", str(f)])
