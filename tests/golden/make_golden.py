"""Regenerate the golden sweep (tests/golden/sweep/) and/or its expected tables.

    PYTHONPATH=. python tests/golden/make_golden.py            # expected tables only
    PYTHONPATH=. python tests/golden/make_golden.py --sweep    # re-run the sweep too (~2 min)
    PYTHONPATH=. python tests/golden/make_golden.py --records ProxyAnchor ...
        # the 20-step records of tests/test_refactor_golden.py, for the algorithms named
        # (only after checking by hand why they changed; its docstring says where each came from)

The sweep: DigitsDG mnist -> sketch, rotate; ProxyAnchor and NormSoftmax; 2 hparams seeds;
2 trials; 2 steps with a checkpoint after each (local launcher, CPU). Only each run's
``results.jsonl`` and ``done`` are kept. Two defects are added on purpose, which collection must
tolerate: a half-written last line in one run's records, and a finished run folder whose
records are gone.
Only regenerate the expected tables after checking the differences by hand.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "sweep"
COMMANDS = {  # expected file -> collect_results.py arguments
    "expected_tables.md": ["--metrics", "recall@1", "map@r", "--show_hparams"],
    "expected_tables.tex": ["--metrics", "recall@1", "--latex"],
    "expected_selections.txt": ["--format", "plain", "--selection", "oracle", "last",
                                "--digits", "2"],
}


def make_sweep() -> None:
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, "-m", "sdgdml.sweep", "launch", "--splits",
                    "DigitsDG:mnist->sketch,rotate", "--algorithms", "ProxyAnchor", "NormSoftmax",
                    "--n_hparams", "2", "--n_trials", "2", "--train_args",
                    "--steps 2 --checkpoint_freq 1 --no_eval_at_start --metrics recall@1 map@r "
                    "--quiet", "--output_dir", str(tmp), "--launcher", "local"], check=True)
    shutil.rmtree(SWEEP, ignore_errors=True)
    runs = sorted(p for p in tmp.iterdir() if (p / "done").exists())
    for run in runs:
        (SWEEP / run.name).mkdir(parents=True)
        for f in ("results.jsonl", "done"):
            shutil.copy(run / f, SWEEP / run.name / f)
    with open(SWEEP / runs[0].name / "results.jsonl", "a") as f:
        f.write('{"args": {"algorithm": "ProxyAnchor", "dataset": "Dig')     # killed writer
    (SWEEP / "lost_its_records").mkdir()                  # done, but results.jsonl is gone
    (SWEEP / "lost_its_records" / "args.json").write_text("{}\n")
    (SWEEP / "lost_its_records" / "done").write_text("done\n")
    shutil.rmtree(tmp)


def collect(args: list[str]) -> str:
    return subprocess.run([sys.executable, str(HERE.parents[1] / "collect_results.py"),
                           "--input_dir", str(SWEEP), *args], capture_output=True, text=True,
                          check=True).stdout


def write_records(algorithms: list[str]) -> None:
    """Replace the named algorithms' entries of the golden records (the others are kept)."""
    import json

    sys.path.insert(0, str(HERE.parent))
    import conftest  # noqa: F401  (the suite's CPU pins, set before torch is imported)
    from test_refactor_golden import GOLDEN, golden_run

    path = HERE / "steps20_records.json"
    records = dict(GOLDEN)
    for algorithm in algorithms:
        records[algorithm] = golden_run(algorithm, Path(tempfile.mkdtemp()) / "run")
    path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    if "--records" in sys.argv:
        write_records(sys.argv[sys.argv.index("--records") + 1:])
        sys.exit()
    if "--sweep" in sys.argv:
        make_sweep()
    for name, args in COMMANDS.items():
        (HERE / name).write_text(collect(args))
        print(f"wrote {HERE / name}")
