#!/usr/bin/env python
"""Results tables of sweeps: per dataset (rows = algorithms, columns = target domains +
average) and averaged over datasets, after model selection.

    python collect_results.py --input_dir sweeps_out/
    python collect_results.py --input_dir sweeps_out/ --latex --output tables.tex
    python collect_results.py --input_dir sweeps_out/ --format latex_tabular --output t.tex
    python collect_results.py --input_dir a/ b/ --selection source_val oracle last \\
        --metrics recall@1 recall@4 map@r --show_hparams
    python collect_results.py --input_dir sweeps_out/ --format csv --plots plots/
    python collect_results.py --input_dir sweeps_out/pfml_t1 --with_source --reported

Cells: mean ± standard error over trials, in %; SE = sample std (ddof=1) / sqrt(n).
See sdgdml/collect.py for the selection methods. Exit status 1 (``error: ...``) when an input
folder does not exist, no completed run is found, no record holds a metric asked for, or an
argument is wrong (checked before anything is read or written); a record that cannot be used
is skipped with a ``file:line`` warning.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from sdgdml.reported import ReportedError, read, sweep_files_of
from sdgdml.collect import (DATA_FORMATS, SELECTION_METHODS, NoResultsError, collect,
                            load_records)
from sdgdml.tables import LATEX_FORMATS
from sdgdml.validation import InvalidValueError, check_output_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--input_dir", nargs="+", required=True,
      help="sweep folder(s); every run folder below them is read")
    a("--selection", nargs="+", choices=SELECTION_METHODS, default=["source_val"],
      help="model selection: source_val (source validation), oracle (targets), last "
           "(last checkpoint); several print several sets of tables")
    a("--metrics", nargs="+", default=["recall@1"],
      help="metrics to tabulate (recall@K, map@r, map@all, precision@K, as recorded)")
    a("--selection_metric", default="recall@1", help="metric the selection maximises")
    a("--protocol", choices=("all", "within", "cross"), default="all",
      help="target columns: within-domain splits, cross-domain (query->gallery) splits, or both")
    a("--with_source", action="store_true",
      help="add a column for the source domain's unseen classes (standard DML retrieval)")
    a("--include_incomplete", action="store_true", help="also use runs without `done`")
    a("--show_hparams", action="store_true", help="also print the selected hparams per cell")
    a("--digits", type=int, default=1, help="decimals in the tables")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--format", choices=("markdown", "plain", *LATEX_FORMATS, *DATA_FORMATS),
                     default="markdown",
                     help="output format; latex_tabular: one booktabs tabular per table (its "
                          "title in a comment) to \\input into a paper; latex: a complete "
                          "document holding them; in both the best cell of each column is "
                          "bold; csv/json: one row per cell with mean, se and n (fractions)")
    fmt.add_argument("--latex", dest="format", action="store_const", const="latex",
                     help="= --format latex: a complete, compilable LaTeX document (booktabs)")
    a("--reported", nargs="*", default=None, metavar="SWEEP_FILE",
      help="also print the published numbers of the sweep files' 'reported:' sections beside "
           "ours, with ours minus the paper's and the source (paper, table, column); without a "
           "file: the sweeps/<name>.yaml named in each input folder's sweep.json")
    a("--output", default=None, help="write to this file instead of stdout")
    a("--plots", default=None, metavar="DIR",
      help="also write plots to DIR (PDF + 200 dpi PNG, in %%, with a chance line): "
           "per-domain bars per algorithm with standard-error bars, and the selected runs' "
           "target average over checkpoints")
    return p


def draw_plots(args) -> None:
    """``--plots``: matplotlib is imported only then (``sdgdml/collect_plots.py``)."""
    from sdgdml.collect_plots import plots

    with warnings.catch_warnings():         # the tables already reported unreadable records
        warnings.simplefilter("ignore")
        df, _ = load_records(args.input_dir, args.include_incomplete)
    plots(df, args.plots, args.selection, args.metrics, args.selection_metric, args.protocol,
          args.with_source)


def published(args) -> tuple[list, list[str]]:
    """The published cells and notes of --reported's sweep files (or of the input folders')."""
    files = args.reported or sweep_files_of(args.input_dir)
    if not files:
        raise ReportedError("--reported: no sweep file given, and no input folder's sweep.json "
                            "names one in sweeps/: give the file, e.g. --reported "
                            "sweeps/pfml_table1.yaml")
    cells, notes = [], []
    for f in files:
        if not Path(f).is_file():
            raise ReportedError(f"--reported: no such file: {f}")
        c, n = read(f)
        if not c and not n:
            raise ReportedError(f"{f}: no 'reported:' section (the published numbers)")
        cells += c
        notes += n
    return cells, notes


def check_args(args) -> None:
    """Every argument, before anything is read or written (``InvalidValueError``)."""
    missing = [d for d in args.input_dir if not Path(d).is_dir()]
    if missing:
        raise InvalidValueError(f"no such folder: {', '.join(missing)}")
    if not 0 <= args.digits <= 10:
        raise InvalidValueError(f"--digits must be in [0, 10], got {args.digits}")
    if args.output is not None:
        out = Path(args.output)
        if not args.output.strip() or out.is_dir():
            raise InvalidValueError(f"--output {args.output!r} must name a file")
        if not out.absolute().parent.is_dir():
            raise InvalidValueError(f"--output {args.output}: no such folder "
                                    f"{out.absolute().parent}")
        check_output_dir(out.absolute().parent, "--output")
    if args.plots is not None:
        if not args.plots.strip():
            raise InvalidValueError("--plots is empty: name a folder")
        check_output_dir(Path(args.plots), "--plots")
    if args.reported is not None and args.format in DATA_FORMATS:
        raise InvalidValueError(f"--reported prints tables: use --format markdown, plain, "
                                f"latex or latex_tabular (not {args.format})")
    for metric in [*args.metrics, args.selection_metric]:
        if not metric.strip():
            raise InvalidValueError("a metric name is empty")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        check_args(args)
        reported = None if args.reported is None else published(args)
        text = collect(args.input_dir, args.selection, args.metrics, args.selection_metric,
                       args.protocol, args.with_source, args.include_incomplete,
                       args.show_hparams, args.digits, args.format, reported)
        if args.output:
            Path(args.output).write_text(text)
    except (NoResultsError, InvalidValueError, ReportedError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:
        raise SystemExit(f"error: cannot write {e.filename}: {e.strerror}") from None
    if args.plots:
        draw_plots(args)
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
