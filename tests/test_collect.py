"""collect_results: loading (tolerant), model selection and the tables, on synthetic records
whose selected values are known by construction and checked against brute-force references."""
from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats

from sdgdml import collect, collect_plots
from sdgdml import tables as T
from helpers import PYTHON, REPO, subprocess_env

sys.path.insert(0, str(REPO))
import collect_results  # noqa: E402


def write_run(root, name, records, dataset="D", source="s", algorithm="A", hseed=0, trial=0,
              hparams=None, done=True, targets=None, **other_args):
    run = root / name
    run.mkdir(parents=True)
    args = {"dataset": dataset, "source": source, "algorithm": algorithm, "targets": targets,
            "hparams_seed": hseed, "trial_seed": trial, "output_dir": str(run), **other_args}
    with open(run / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({**r, "args": args, "hparams": hparams or {"lr": 0.1 * hseed}})
                    + "\n")
    if done:
        (run / "done").write_text("done\n")
    return run


def rec(step, val, t1, t2, source="s", metric="recall@1"):
    return {"step": step, f"{source}_val_{metric}": val, f"{source}_test_{metric}": 0.5,
            f"t1_test_{metric}": t1, f"t2_test_{metric}": t2}


@pytest.fixture
def sweep(tmp_path):
    """2 algorithms x 2 hparams seeds x 3 trials, 3 checkpoints each, random values."""
    rng = np.random.default_rng(0)
    values = {}
    for alg, h, t in itertools.product(("A", "B"), (0, 1), (0, 1, 2)):
        recs = [rec(s, *rng.uniform(0.2, 0.9, 3).round(4)) for s in (0, 10, 20)]
        values[alg, h, t] = recs
        write_run(tmp_path, f"{alg}{h}{t}", recs, algorithm=alg, hseed=h, trial=t)
    return tmp_path, values


def brute_force(values, alg, trial, method):
    """The selected record by loops: best score, ties to lower hparams seed then step."""
    best = None
    for h in (0, 1):
        recs = values[alg, h, trial]
        if method == "last":
            recs = recs[-1:]
        for r in recs:
            score = (r["s_val_recall@1"] if method != "oracle"
                     else (r["t1_test_recall@1"] + r["t2_test_recall@1"]) / 2)
            key = (-score, h, r["step"])
            if best is None or key < best[0]:
                best = (key, r)
    return best[1]


@pytest.mark.parametrize("method", collect.SELECTION_METHODS)
def test_selection_and_cells_match_brute_force(sweep, method):
    root, values = sweep
    df, _ = collect.load_records(root)
    sel = collect.select(df, method)
    assert len(sel) == 6                         # one per (algorithm, trial)
    tables, _ = collect.dataset_tables(sel, "recall@1", method, digits=2)
    (table,) = tables
    assert table.headers == ["algorithm", "t1", "t2", "average"]
    for alg, row in zip(("A", "B"), table.rows):
        chosen = [brute_force(values, alg, t, method) for t in range(3)]
        for col, cell in zip(("t1", "t2"), row[1:3]):
            v = np.array([r[f"{col}_test_recall@1"] for r in chosen])
            assert cell == f"{100 * v.mean():.2f} ± {100 * stats.sem(v):.2f}"   # scipy: ddof=1
        avg = np.array([(r["t1_test_recall@1"] + r["t2_test_recall@1"]) / 2 for r in chosen])
        assert row[3] == f"{100 * avg.mean():.2f} ± {100 * stats.sem(avg):.2f}"


def test_ties_go_to_lower_hparams_seed_then_earlier_step(tmp_path):
    write_run(tmp_path, "h1", [rec(0, 0.5, 0.1, 0.1), rec(5, 0.9, 0.3, 0.3)], hseed=1)
    write_run(tmp_path, "h0", [rec(0, 0.9, 0.2, 0.2), rec(5, 0.9, 0.4, 0.4)], hseed=0)
    sel = collect.select(collect.load_records(tmp_path)[0], "source_val")
    assert (sel["hparams_seed"].item(), sel["step"].item()) == (0, 0)


def test_mean_se_convention():
    m, se, n = T.mean_se([0.1, 0.2, 0.6])
    assert n == 3 and m == pytest.approx(0.3)
    assert se == pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1) / math.sqrt(3))
    assert T.cell([0.25], 1, 1) == "25.0"              # one trial: no ±
    assert T.cell([0.2, 0.4], 1, 3) == "30.0 ± 10.0 (n=2)"


def test_averages_table_across_datasets(tmp_path):
    for ds, base in (("D1", 0.2), ("D2", 0.6)):
        for t in range(2):
            write_run(tmp_path, f"{ds}{t}", [rec(0, 0.5, base + 0.1 * t, base + 0.2 * t)],
                      dataset=ds, trial=t)
    text = collect.collect(tmp_path, fmt="plain", digits=2)
    # D1 trial averages: 0.20, 0.35; D2: 0.60, 0.75; across datasets: 0.40, 0.55
    assert "Average over datasets" in text
    line = [l for l in text.splitlines() if l.startswith("A ")][-1].split()
    d1, d2, overall = (np.array([0.2, 0.35]), np.array([0.6, 0.75]), np.array([0.4, 0.55]))
    expect = [f"{100 * v.mean():.2f} ± {100 * stats.sem(v):.2f}".split() for v in (d1, d2, overall)]
    assert line[1:] == [w for e in expect for w in e]


def test_several_sources_get_source_arrow_target_columns(tmp_path):
    write_run(tmp_path, "a", [rec(0, 0.5, 0.1, 0.2, source="s")], source="s")
    write_run(tmp_path, "b", [rec(0, 0.5, 0.3, 0.4, source="u")], source="u")
    (table,), _ = collect.dataset_tables(collect.select(collect.load_records(tmp_path)[0],
                                                        "source_val"), "recall@1", "source_val")
    assert table.headers == ["algorithm", "s->t1", "s->t2", "u->t1", "u->t2", "average"]
    assert table.rows[0][-1] == "25.0"


def test_bad_records_warn_and_lose_nothing_else(tmp_path):
    write_run(tmp_path, "good", [rec(0, 0.5, 0.2, 0.2), rec(1, 0.6, 0.4, 0.4)], trial=0)
    broken = write_run(tmp_path, "broken", [rec(0, 0.9, 0.6, 0.6)], trial=1)
    with open(broken / "results.jsonl", "a") as f:     # a corrupt line, then a half-written one
        f.write("{not json}\n" + json.dumps(rec(1, 0.95, 0.8, 0.8))[:25])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "args.json").write_text("{}")          # crashed before any record
    (tmp_path / "empty" / "done").write_text("done\n")
    write_run(tmp_path, "running", [rec(0, 0.99, 0.9, 0.9)], trial=2, done=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        text = collect.collect(tmp_path, digits=2, fmt="plain")
    msgs = "\n".join(str(x.message) for x in w)
    assert "broken/results.jsonl:2: skipping unreadable record" in msgs
    assert "broken/results.jsonl:3: skipping unreadable record" in msgs
    assert "empty: run folder with no records" in msgs
    assert "1 runs without `done` ignored" in msgs
    # trials 0 and 1: good's step 1 (val 0.6) and broken's step 0
    v = np.array([0.4, 0.6])
    assert f"{100 * v.mean():.2f} ± {100 * stats.sem(v):.2f}" in text
    assert "3 runs" not in text and "2 runs, 3 records" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = collect.collect(tmp_path, digits=2, fmt="plain", include_incomplete=True)
    assert "3 runs, 4 records" in text


def test_missing_input_dir_and_no_runs(tmp_path):
    with pytest.warns(UserWarning, match="no such folder"):
        with pytest.raises(collect.NoResultsError, match="no completed runs found"):
            collect.collect(tmp_path / "nope")


def test_hparams_table_lists_what_varies(sweep):
    root, values = sweep
    text = collect.collect(root, show_hparams=True, fmt="plain", digits=2)
    rows = [line.split() for line in text.split("Selected hparams (source_val)")[1].splitlines()
            if line.startswith("D ")]
    want = []
    for alg, trial in itertools.product(("A", "B"), range(3)):
        r = brute_force(values, alg, trial, "source_val")
        h = next(h for h in (0, 1) if r in values[alg, h, trial])
        want.append(["D", "s", alg, str(trial), str(h), str(r["step"]),
                     f"{100 * r['s_val_recall@1']:.2f}", f"lr={0.1 * h:.4g}"])
    assert rows == want


def test_runs_of_other_settings_are_never_pooled(tmp_path):
    """Same algorithm and trial, other label noise: two tables, each selecting among its own
    runs; a run whose records name no source is skipped with a warning."""
    write_run(tmp_path, "clean", [rec(0, 0.9, 0.2, 0.2)], label_noise=0.0)
    write_run(tmp_path, "noisy", [rec(0, 0.5, 0.6, 0.6)], label_noise=0.2, hseed=1)
    write_run(tmp_path, "nosource", [rec(0, 0.99, 0.9, 0.9)], source=None)
    with pytest.warns(UserWarning, match="nosource: its records name no dataset and source"):
        tables, _ = collect.dataset_tables(collect.select(collect.load_records(tmp_path)[0],
                                                          "source_val"), "recall@1", "oracle")
    assert [(t.title.split(":")[0], t.rows) for t in tables] == [
        ("D [label_noise=0.0]", [["A", "20.0", "20.0", "20.0"]]),
        ("D [label_noise=0.2]", [["A", "60.0", "60.0", "60.0"]])]


def test_latex_is_a_complete_document_that_compiles(sweep, tmp_path_factory):
    root, _ = sweep
    tex = collect.collect(root, fmt="latex", metrics=["recall@1"], show_hparams=True)
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith("\\end{document}")
    assert "\\toprule" in tex and "$\\pm$" in tex and "±" not in tex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: LaTeX not compiled")
    out = tmp_path_factory.mktemp("latex")
    (out / "t.tex").write_text(tex)
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                         cwd=out, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert (out / "t.pdf").exists()


def test_cli_formats(sweep, capsys):
    root, _ = sweep
    # the script in a real process once (its entry point, exit status 0); the other format
    # in-process through the same main()
    md = subprocess.run([PYTHON, str(REPO / "collect_results.py"), "--input_dir", str(root)],
                        capture_output=True, text=True, env=subprocess_env(), check=True)
    assert "| algorithm" in md.stdout and "SE = sample std with ddof=1" in md.stdout
    collect_results.main(["--input_dir", str(root), "--format", "plain", "--selection",
                          "oracle", "last", "--metrics", "recall@1"])
    plain = capsys.readouterr().out
    assert "selection: oracle" in plain and "selection: last" in plain
    assert "|" not in plain


def test_column_kinds_protocol_filter_and_source_column(tmp_path):
    r = {**rec(0, 0.5, 0.1, 0.2), "t1->s_test_recall@1": 0.3, "s->t1_partial_recall@1": 0.4,
         "s_train_recall@1": 0.9}
    write_run(tmp_path, "a", [r])
    df = collect.load_records(tmp_path)[0]
    assert collect.target_keys(df, "s", "recall@1") == {
        "t1": "t1_test_recall@1", "t2": "t2_test_recall@1", "t1->s": "t1->s_test_recall@1",
        "s->t1_partial": "s->t1_partial_recall@1"}
    assert set(collect.target_keys(df, "s", "recall@1", "within")) == {"t1", "t2"}
    assert set(collect.target_keys(df, "s", "recall@1", "cross")) == {"t1->s", "s->t1_partial"}
    assert set(collect.target_keys(df, "s", "recall@1", "within", with_source=True)) == {
        "t1", "t2", "s (source)", "s_train (source)"}


def test_columns_follow_the_runs_target_order(tmp_path):
    r = {**rec(0, 0.5, 0.1, 0.2), "t2->s_test_recall@1": 0.3}
    write_run(tmp_path, "a", [r], targets=["t2", "t1"])
    sel = collect.select(collect.load_records(tmp_path)[0], "source_val")
    (table,), _ = collect.dataset_tables(sel, "recall@1", "source_val", with_source=True)
    assert table.headers == ["algorithm", "s (source)", "t2", "t2->s", "t1", "average"]
    assert table.rows[0][-1] == f"{100 * (0.2 + 0.3 + 0.1) / 3:.1f}"   # source not averaged


def test_last_selection_of_label_free_runs_without_source_validation(tmp_path):
    """UCDR runs (UEM) record no source validation: 'last' keeps their last checkpoint when
    there is one hparams seed to choose from, and still skips when there are several."""
    ucdr = [{"step": s, "s->t_open_map@all": v} for s, v in ((0, 0.1), (5, 0.3), (10, 0.4))]
    write_run(tmp_path / "one", "a", ucdr)
    sel = collect.select(collect.load_records(tmp_path / "one")[0], "last", "map@all")
    assert sel["step"].tolist() == [10] and sel["s->t_open_map@all"].tolist() == [0.4]
    write_run(tmp_path / "two", "a", ucdr, hseed=0)
    write_run(tmp_path / "two", "b", ucdr, hseed=1)
    with pytest.warns(UserWarning, match="no last selection metric"):
        assert collect.select(collect.load_records(tmp_path / "two")[0], "last", "map@all").empty


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_hold_the_table_cells_as_numbers(sweep, fmt, tmp_path):
    import io

    import pandas as pd

    root, values = sweep
    out = tmp_path / f"cells.{fmt}"
    collect_results.main(["--input_dir", str(root), "--format", fmt, "--selection", "oracle",
                          "last", "--output", str(out), "--plots", str(tmp_path / "plots")])
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4     # bars + curves, 2 selections
    text = out.read_text()
    rows = (json.loads(text) if fmt == "json"
            else pd.read_csv(io.StringIO(text)).to_dict("records"))
    assert len(rows) == 2 * 2 * 3          # selections x algorithms x (t1, t2, average)
    for r in rows:
        chosen = [brute_force(values, r["algorithm"], t, r["selection"]) for t in range(3)]
        per_trial = [(c["t1_test_recall@1"] + c["t2_test_recall@1"]) / 2
                     if r["column"] == "average" else c[f"{r['column']}_test_recall@1"]
                     for c in chosen]
        assert r["mean"] == pytest.approx(np.mean(per_trial), abs=1e-12)
        assert r["se"] == pytest.approx(stats.sem(per_trial), abs=1e-12)
        assert r["n"] == 3 and r["dataset"] == "D" and r["metric"] == "recall@1"


def test_plots_bars_with_standard_errors_and_checkpoint_curves(sweep, tmp_path):
    from PIL import Image

    root, values = sweep
    df, _ = collect.load_records(root)
    sel = collect.select(df, "last")
    series = collect_plots.checkpoint_series(df, sel, "D", "recall@1")
    for alg in ("A", "B"):
        steps, mean, se = series[alg]
        runs = [values[alg, h, t] for t in range(3) for h in (0, 1)
                if sel[(sel["algorithm"] == alg) & (sel["trial_seed"] == t)]["hparams_seed"]
                .item() == h]
        avg = np.array([[(r["t1_test_recall@1"] + r["t2_test_recall@1"]) / 2 for r in recs]
                        for recs in runs])          # trials x checkpoints
        assert list(steps) == [0, 10, 20]
        assert np.allclose(mean, avg.mean(0)) and np.allclose(se, stats.sem(avg, axis=0))
    files = collect_plots.plots(df, tmp_path, ["last"], ["recall@1"])
    assert sorted(f.name for f in files) == ["bars_D_recall_1_last.pdf",
                                             "bars_D_recall_1_last.png",
                                             "curves_D_recall_1_last.pdf",
                                             "curves_D_recall_1_last.png"]
    for f in files[0::2]:
        with Image.open(f) as im:
            assert im.format == "PNG" and len(np.unique(np.asarray(im.convert("L")))) > 10


def test_cli_exit_status_on_a_missing_folder_or_no_results(tmp_path, sweep):
    root, _ = sweep
    out = ["--output", str(tmp_path / "t.md")]
    (tmp_path / "empty").mkdir()
    # a real process: exit status 1 and the error as stderr's last line
    res = subprocess.run([PYTHON, str(REPO / "collect_results.py"), *out, "--input_dir",
                          str(root), str(tmp_path / "nope")], capture_output=True, text=True,
                         env=subprocess_env())
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith(
        f"error: no such folder: {tmp_path}/nope")
    assert not (tmp_path / "t.md").exists()                      # nothing written
    # in-process, the same main(): SystemExit with a message string is exit status 1 with
    # that message on stderr
    with pytest.raises(SystemExit) as e:
        collect_results.main([*out, "--input_dir", str(tmp_path / "empty")])
    assert str(e.value.code).startswith("error: no completed runs found in ")
    assert not (tmp_path / "t.md").exists()
    collect_results.main([*out, "--input_dir", str(root)])       # returns: exit status 0
    assert "| algorithm" in (tmp_path / "t.md").read_text()
