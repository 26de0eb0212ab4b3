"""The fuzzer (issue 19): Hypothesis draws bad and edge values (wrong type, out of range, NaN,
inf, empty, huge, unicode, NUL in files, paths under a file, ...) for every flag of ``train``, ``sweep
launch``, ``evaluate`` and ``collect_results.py`` (the flags are read from their parsers, so a
new flag is fuzzed without a change here), for every declared hparam of every algorithm (from
the registry) and for every sweep-file field. Each case must be accepted and valid, or refused
with exit status 1 and one ``error:`` line (2 and argparse's one ``error:`` line for its own
usage errors), with no traceback and no file or folder created.

The checks run in-process up to the point where a command would start creating things (the
same functions the commands call first), plus real processes (sweep and collect here, train in
test_validation.py). "Valid": an accepted numeric flag is finite and >= 0 (but a cosine), what a
run records is JSON without NaN/inf, a sweep's runs pass train's checks, and an accepted hparam
builds its algorithm (sizes up to BUILD_LIMIT: larger ones are only checked, not allocated).
The profile is fixed (derandomized, no example database, bounded): every run draws the same
cases, about 670: at most 400 drawn by Hypothesis (EXAMPLES), each flag of the four parsers with
each edge value of its kind (270 with today's flags), and two real processes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import PYTHON, REPO, subprocess_env
from sdgdml import evaluate, hparams_registry, sweep, train
from sdgdml.algorithms import Schedule, create_algorithm
from sdgdml.algorithms.registry import names
from sdgdml.networks import create_model
from sdgdml.run_config import parse_with_config
from sdgdml.train_args import build_parser as train_parser

sys.path.insert(0, str(REPO))
import collect_results  # noqa: E402

EXAMPLES = {"train": 80, "hparams": 150, "sweep": 40, "sweep_file": 50, "evaluate": 40,
            "collect": 40}
FUZZ = dict(derandomize=True, deadline=None, database=None, print_blob=False,
            suppress_health_check=list(HealthCheck))

# edge values as a command line spells them
EDGE_TEXT = ["", " ", "0", "-1", "-5", "1", "2", "1.5", "-0.5", "nan", "NaN", "inf", "-inf",
             "1e309", "4294967296", "9" * 40, "abc", "é✓ü", "\u202e", "-", "'", '"',
             "{", "[]", "{}", '{"a": 1}', "null", "true", "/", ".", "..", "/dev/null",
             "file/under", "x" * 300, "cuda:99", "recall@0", "foo@3"]
TEXT = st.one_of(st.sampled_from(EDGE_TEXT), st.integers(-2 ** 70, 2 ** 70).map(str),
                 st.floats().map(repr),
                 st.text(st.characters(blacklist_characters="\x00"), max_size=8))
# and, for every flag, each of these (no command line holds a NUL byte: none here)
NUMBER_EDGES, TEXT_EDGES = ("-1", "nan", "1e309"), ("", "file/under")
# edge values as JSON / YAML hold them
VALUES = st.one_of(st.sampled_from([None, True, False, 0, -1, 1, 2 ** 63, -2 ** 63, 1e308,
                                    float("nan"), float("inf"), float("-inf"), 0.5, -0.5, "",
                                    "é✓", "x" * 300, [], {}, [1, 2], {"a": 1}]),
                   st.integers(-10 ** 20, 10 ** 20), st.floats(), st.text(max_size=6))


# ----------------------------------------------------------------------------- outcomes
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The current folder of every case (relative paths land here), with a file to put
    paths under."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file").write_text("a file, not a folder\n")
    with contextlib.chdir(root):
        yield root


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check(sandbox: Path, call, multi_line: bool = False):
    """Run ``call``; accepted: its value; refused: SystemExit 1 with one ``error:`` line (the
    sweep's may list its problems below it, "  - ..."), or argparse's exit 2 with one
    ``error:`` line on stderr. A refusal creates nothing."""
    before, err = _tree(sandbox), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return call()
        except SystemExit as e:
            code = e.code
    if code == 2:
        lines = err.getvalue().splitlines()
        assert sum("error:" in line for line in lines) == 1, err.getvalue()
    else:
        assert isinstance(code, str) and code.startswith("error: "), code
        first, *rest = code.split("\n")
        assert "Traceback" not in code and (not rest or multi_line and all(
            line.startswith("  - ") for line in rest)), code
    assert _tree(sandbox) == before, "a refused command created files"
    return None


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings
            and not isinstance(a, argparse._HelpAction)]


@contextlib.contextmanager
def _naming(flags):
    """A failure names the flags of its case."""
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"{flags}: {e}") from e


def edge_args(parser: argparse.ArgumentParser) -> list[list[str]]:
    """Every flag that takes a value with each edge value of its kind."""
    return [[a.option_strings[0], v] for a in _actions(parser) if a.nargs != 0
            for v in (NUMBER_EDGES if a.type in (int, float) else TEXT_EDGES)]


@st.composite
def flag_args(draw, parser: argparse.ArgumentParser) -> list[str]:
    """One to three of the parser's flags, each with drawn values (a valid choice or an edge
    value)."""
    actions = _actions(parser)
    most = draw(st.sampled_from((1, 1, 3)))          # mostly one flag: its own refusal shows
    chosen = draw(st.lists(st.sampled_from(actions), min_size=1, max_size=most,
                           unique_by=lambda a: a.dest))
    argv = []
    for a in chosen:
        value = st.one_of(st.sampled_from(list(a.choices)), TEXT) if a.choices else TEXT
        if a.nargs == 0:
            argv.append(a.option_strings[0])
        elif a.nargs in ("*", "+"):
            argv += [a.option_strings[0], *draw(st.lists(value, min_size=1, max_size=2))]
        else:
            argv += [a.option_strings[0], draw(value)]
    return argv


def _finite_json(data) -> None:
    """What a run records is JSON without NaN/inf."""
    json.dumps(data, allow_nan=False, default=str)


SIGNED = {"open_threshold"}        # the numeric flags that take a negative value (a cosine)


def _numbers_valid(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An accepted numeric flag is finite, and >= 0 unless it is one of SIGNED."""
    for a in parser._actions:
        value = getattr(args, a.dest, None)
        if a.type in (int, float) and isinstance(value, (int, float)):
            assert math.isfinite(value) and (value >= 0 or a.dest in SIGNED), (a.dest, value)


# ----------------------------------------------------------------------------- train
def _train_prepare(argv: list[str]):
    """``python -m sdgdml.train`` up to the run folder (``train._prepare``)."""
    args = parse_with_config(train_parser(), argv)
    try:
        resolved, _, _ = train._prepare(args)
    except train.USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from None
    return args, resolved.values


def _train_case(sandbox, flags):
    accepted = _check(sandbox, lambda: _train_prepare(["--output_dir", "run", "--targets",
                                                       "sketch", *flags]))
    if accepted:
        args, hparams = accepted
        _numbers_valid(train_parser(), args)
        _finite_json(vars(args))
        _finite_json(hparams)
        assert not Path(args.output_dir).exists() or Path(args.output_dir).is_dir()


@settings(max_examples=EXAMPLES["train"], **FUZZ)
@given(flags=flag_args(train_parser()))
def test_every_train_flag(sandbox, flags):
    _train_case(sandbox, flags)


def test_every_train_flag_at_its_edges(sandbox):
    for flags in edge_args(train_parser()):
        with _naming(flags):
            _train_case(sandbox, flags)


# ----------------------------------------------------------------------------- hparams
ALGORITHMS = [*names("loss"), *names("algorithm"),
              *(f"ProxyAnchor+{p}" for p in names("plugin"))]
HPARAMS = [(a, name) for a in ALGORITHMS
           for name in hparams_registry.default_hparams(a, "DigitsDG")]


BUILD_LIMIT = 2 ** 12      # larger accepted sizes are not built here (this machine's memory)
# the allowed values of string hparams (optimizer, pooling, ...) are declared with issue 17's
# hparam specs; until then an accepted string is not built
CHOICES_DECLARED = hasattr(hparams_registry, "hparam_specs")


def _build(algorithm: str, hparams: dict) -> None:
    """An accepted value is valid: the algorithm is built (sizes up to BUILD_LIMIT)."""
    if any(isinstance(v, int) and v > BUILD_LIMIT for v in hparams.values()):
        return
    model = create_model(hparams)
    alg = create_algorithm(algorithm, model, 5, hparams, Schedule(4, 2),
                           {"mnist": 800, "sketch": 500})
    assert alg is not None


@settings(max_examples=EXAMPLES["hparams"], **FUZZ)
@given(case=st.sampled_from(HPARAMS), value=VALUES)
def test_every_hparam_of_every_algorithm(sandbox, case, value):
    algorithm, name = case
    argv = ["--output_dir", "run", "--targets", "sketch", "--algorithm", algorithm,
            "--hparams", json.dumps({name: value})]
    accepted = _check(sandbox, lambda: _train_prepare(argv))
    if accepted:
        _finite_json(accepted[1])
        if CHOICES_DECLARED or not isinstance(value, str):
            _build(algorithm, accepted[1])


# ----------------------------------------------------------------------------- sweep
def _sweep_prepare(argv: list[str]):
    """``python -m sdgdml.sweep launch`` up to its first write (``sweep._jobs``)."""
    args = sweep.build_parser().parse_args(["launch", *argv])
    try:
        return sweep._jobs(args, Path(args.output_dir).resolve())
    except sweep.SweepError as e:
        raise SystemExit(f"error: {e}") from None


def _launch_parser() -> argparse.ArgumentParser:
    sub = next(a for a in sweep.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return sub.choices["launch"]


def _sweep_case(sandbox, argv: list[str]) -> None:
    accepted = _check(sandbox, lambda: _sweep_prepare(argv), multi_line=True)
    if accepted:
        _numbers_valid(_launch_parser(), _launch_parser().parse_args(argv))
        _, jobs = accepted
        for job in jobs[:2]:      # the runs it would launch pass train's checks
            assert _check(sandbox, lambda: _train_prepare(list(job.argv))), job.argv


def _launch_case(sandbox, flags):
    _sweep_case(sandbox, ["--output_dir", "sweep", "--datasets", "DigitsDG", "--algorithms",
                          "ProxyAnchor", "--launcher", "dummy", *flags])


@settings(max_examples=EXAMPLES["sweep"], **FUZZ)
@given(flags=flag_args(_launch_parser()))
def test_every_sweep_launch_flag(sandbox, flags):
    _launch_case(sandbox, flags)


def test_every_sweep_launch_flag_at_its_edges(sandbox):
    for flags in edge_args(_launch_parser()):
        with _naming(flags):
            _launch_case(sandbox, flags)


SWEEP_FIELDS = ("name", "description", "splits", "datasets", "algorithms", "n_hparams",
                "n_trials", "trial_seeds", "hparams", "hparam_ranges", "train_args")


@st.composite
def sweep_file(draw):
    data = {"splits": ["DigitsDG:mnist->sketch"], "algorithms": ["ProxyAnchor"]}
    for key in draw(st.lists(st.sampled_from(SWEEP_FIELDS), min_size=1, max_size=3,
                             unique=True)):
        data[key] = draw(st.one_of(VALUES, st.lists(VALUES, max_size=2),
                                   st.dictionaries(st.sampled_from(["lr", "batch_size", "steps",
                                                                    "optimizer", "x"]),
                                                   VALUES, max_size=2)))
    return data


@settings(max_examples=EXAMPLES["sweep_file"], **FUZZ)
@given(data=sweep_file())
def test_every_sweep_file_field(sandbox, data):
    import yaml

    path = sandbox / "file.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        _sweep_case(sandbox, ["--output_dir", "sweep", "--config", str(path), "--launcher",
                              "dummy"])
    finally:
        path.unlink()


# ----------------------------------------------------------------------------- evaluate
class Reached(Exception):
    """Every check of evaluate passed: it would now embed images."""


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    """A run folder evaluate accepts (args, hparams, untrained weights)."""
    run = tmp_path_factory.mktemp("evalrun")
    args = train_parser().parse_args(["--output_dir", str(run), "--targets", "sketch"])
    hparams = hparams_registry.default_hparams("ProxyAnchor", "DigitsDG")
    (run / "args.json").write_text(json.dumps(vars(args)))
    (run / "hparams.json").write_text(json.dumps(hparams))
    torch.save(create_model(hparams).state_dict(), run / "model.pt")
    return run


def _evaluate(argv):
    """``evaluate.main`` up to its first embedding; the parsed arguments when accepted."""
    def reached(*a, **k):
        raise Reached
    real, evaluate.embed_function = evaluate.embed_function, reached
    try:
        evaluate.main(argv)
    except Reached:
        return evaluate.build_parser().parse_args(argv)
    finally:
        evaluate.embed_function = real


def _evaluate_case(sandbox, run, flags):
    accepted = _check(sandbox, lambda: _evaluate([str(run), *flags]))
    if accepted:
        _numbers_valid(evaluate.build_parser(), accepted)


@settings(max_examples=EXAMPLES["evaluate"], **FUZZ)
@given(flags=flag_args(evaluate.build_parser()))
def test_every_evaluate_flag(sandbox, eval_run, flags):
    _evaluate_case(sandbox, eval_run, flags)


def test_every_evaluate_flag_at_its_edges(sandbox, eval_run):
    for flags in edge_args(evaluate.build_parser()):
        with _naming(flags):
            _evaluate_case(sandbox, eval_run, flags)


# ----------------------------------------------------------------------------- collect
@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A sweep folder with two finished runs' records, and one record of each kind a reader
    must skip (args not a mapping, step not a number, half a line)."""
    root = tmp_path_factory.mktemp("results")
    for trial in (0, 1):
        run = root / f"run{trial}"
        run.mkdir()
        args = {"dataset": "DigitsDG", "source": "mnist", "targets": ["sketch"],
                "algorithm": "ProxyAnchor", "hparams_seed": 0, "trial_seed": trial}
        records = [{"step": s, "args": args, "hparams": {"lr": 0.001},
                    "mnist_val_recall@1": 0.5 + s / 10, "sketch_test_recall@1": 0.4 + s / 20,
                    "sketch_test_map@r": 0.2} for s in (0, 1)]
        lines = [json.dumps(r) for r in records] + [
            json.dumps({**records[0], "args": [1, 2]}), json.dumps({**records[0], "step": "x"}),
            '{"step": 3, "args": {"dat']
        (run / "results.jsonl").write_text("\n".join(lines) + "\n")
        (run / "done").write_text("done\n")
    return root


def _collect(argv):
    import sdgdml.collect_plots as plots

    real, plots.plots = plots.plots, lambda *a, **k: None       # plots: not the question
    try:
        collect_results.main(argv)
        return True
    finally:
        plots.plots = real


@settings(max_examples=EXAMPLES["collect"], **FUZZ)
@given(flags=flag_args(collect_results.build_parser()))
def test_every_collect_flag(sandbox, results, flags):
    _collect_case(sandbox, results, flags)


def test_every_collect_flag_at_its_edges(sandbox, results):
    for flags in edge_args(collect_results.build_parser()):
        with _naming(flags):
            _collect_case(sandbox, results, flags)


def _collect_case(sandbox, results, flags):
    before, argv = _tree(sandbox), ["--input_dir", str(results), *flags]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _check(sandbox, lambda: _collect(argv)):
            _numbers_valid(collect_results.build_parser(),
                           collect_results.build_parser().parse_args(argv))
    for new in sorted(_tree(sandbox) - before, reverse=True):   # what an accepted --output wrote
        path = sandbox / new
        path.unlink() if path.is_file() else path.rmdir()


def test_bad_records_are_skipped_with_file_and_line(results, capsys):
    with pytest.warns(UserWarning) as caught:
        collect_results.main(["--input_dir", str(results)])
    messages = [str(w.message) for w in caught]
    path = results / "run0" / "results.jsonl"
    assert f"{path}:3: record skipped (its args is not a mapping)" in messages
    assert f"{path}:4: record skipped (its step is not a number)" in messages
    assert any(m.startswith(f"{path}:5: skipping unreadable record") for m in messages)
    assert "| ProxyAnchor" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "foo@3"], "error: no record holds the metric 'foo@3'"),
    (["--metrics", "recall@2"], "(did you mean 'recall@1'"),
    (["--output", "no/such/folder/t.md"], "error: --output no/such/folder/t.md: no such folder"),
    (["--digits", "-1"], "error: --digits must be in [0, 10], got -1")])
def test_collect_refuses_bad_arguments_with_one_line(sandbox, results, argv, message):
    with pytest.raises(SystemExit) as e:
        with pytest.warns(UserWarning):
            collect_results.main(["--input_dir", str(results), *argv])
    assert message in str(e.value.code) and "\n" not in str(e.value.code)
    assert not (sandbox / "no").exists()


# ----------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("command", [        # train's: tests/test_validation.py
    ["-m", "sdgdml.sweep", "launch", "--output_dir", "sweep", "--datasets", "DigitsDG",
     "--algorithms", "ProxyAnchor", "--train_args", "--steps 'x",
     "--slurm_additional_parameters", "{bad"],
    ["collect_results.py", "--input_dir", ".", "--output", "no/such/folder/t.md"]])
def test_one_case_per_command_in_a_real_process(tmp_path, command):
    res = subprocess.run([PYTHON, *[str(REPO / c) if c.endswith(".py") else c
                                    for c in command]],
                         capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and lines[0].startswith("error: "), res.stderr
    assert all(line.startswith("  - ") for line in lines[1:]), res.stderr
    assert "Traceback" not in res.stderr and not list(tmp_path.iterdir())
