"""Values are checked before anything exists (issue 19): each case that used to give a
traceback, create a folder, or be accepted is refused with one ``error:`` line and nothing
written; a sweep reports every problem at once before writing anything."""
from __future__ import annotations

import errno
import json
import os
import sys
import time

import pytest

import sdgdml.train as train_mod
from helpers import REPO
from sdgdml import atomic, evaluate, sweep

sys.path.insert(0, str(REPO))
import collect_results  # noqa: E402


def _error(main, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value.code)
    assert message.startswith("error: ") and "Traceback" not in message, message
    return message


# ----------------------------------------------------------------------------- train
@pytest.mark.parametrize("flags,message", [
    (["--hparams", '{"optimizer": "foo"}'], "hparam optimizer=\"foo\" is not one of its choices"),
    (["--hparams", '{"backbone": "resnt50"}'], "'resnet50'"),
    (["--log_interval", "-1"], "--log_interval must be > 0 seconds, got -1.0"),
    (["--ucdr_min_images", "-1"], "--ucdr_min_images must be >= 0"),
    (["--hparams", '{"pretrained": true}'], "digits_cnn has no published weights"),
    (["--algorithm", "PFML", "--hparams", '{"pfml_delta": 0}'], "PFML needs pfml_delta"),
])
def test_train_values_are_checked_before_the_run_folder(tmp_path, flags, message):
    run = tmp_path / "run"
    text = _error(train_mod.main, [*flags, "--steps", "1", "--output_dir", str(run)])
    assert message in text and "\n" not in text, text
    assert not run.exists()


def test_an_empty_output_dir_is_refused(tmp_path, monkeypatch):
    """Before, --output_dir '' trained into the current folder."""
    monkeypatch.chdir(tmp_path)
    text = _error(train_mod.main, ["--output_dir", "", "--steps", "1"])
    assert text == "error: --output_dir is empty: name the run folder"
    assert not list(tmp_path.iterdir())


def test_a_disk_full_error_is_also_in_the_runs_log(tmp_path, monkeypatch):
    def full(path, data):
        raise atomic.disk_full_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(train_mod, "write_json", full)
    run = tmp_path / "run"
    text = _error(train_mod.main, ["--steps", "1", "--targets", "sketch", "--output_dir",
                                   str(run)])
    assert text.startswith("error: cannot write ") and text in (run / "out.txt").read_text()


# ----------------------------------------------------------------------------- sweeps
def test_a_sweep_reports_every_problem_before_writing_anything(tmp_path):
    """Before: the fixed hparam was not checked (a run folder was made, the run failed
    later), the --train_args string was a shlex traceback, the Slurm JSON was refused only
    after sweep.json was written, and the checks stopped at the first problem."""
    config = tmp_path / "bad.yaml"
    config.write_text("splits: [DigitsDG]\nalgorithms: [ProxyAnchor]\nhparams: {lr: -5}\n"
                      "hparam_ranges: {batch_size: {choice: [32, 0]}}\n")
    out = tmp_path / "sweep"
    text = _error(sweep.main, ["launch", "--config", str(config), "--output_dir", str(out),
                               "--train_args", "--steps 'x", "--launcher", "slurm",
                               "--slurm_additional_parameters", "{bad"])
    assert text.startswith("error: the sweep cannot run (4 problem(s)):")
    for problem in ("--slurm_additional_parameters is a JSON object",
                    "--train_args \"--steps 'x\" cannot be split into flags (No closing quotation",
                    "ProxyAnchor on DigitsDG: hparam lr must be > 0, got -5",
                    "ProxyAnchor on DigitsDG: hparam batch_size must be >= 1, got 0"):
        assert f"\n  - {problem}" in text, text
    assert not out.exists()


def test_a_sweep_above_the_run_limit_is_refused_with_its_size(tmp_path):
    """Before, a 100,000 x 1,000 grid grew to 2.5 GB with nothing printed."""
    out, t0 = tmp_path / "sweep", time.time()
    text = _error(sweep.main, ["launch", "--datasets", "DigitsDG", "--algorithms",
                               "ProxyAnchor", "--n_hparams", "100000", "--n_trials", "1000",
                               "--output_dir", str(out)])
    assert time.time() - t0 < 60
    assert "the sweep has 100,000,000 runs, more than --max_runs 10,000" in text
    assert " MiB" in text and "raise --max_runs" in text and not out.exists()


# ----------------------------------------------------------------------------- collect, evaluate
@pytest.fixture
def results(tmp_path):
    run = tmp_path / "sweep" / "run"
    run.mkdir(parents=True)
    args = {"dataset": "DigitsDG", "source": "mnist", "targets": ["sketch"],
            "algorithm": "ProxyAnchor", "hparams_seed": 0, "trial_seed": 0}
    good = {"step": 1, "args": args, "mnist_val_recall@1": 0.5, "sketch_test_recall@1": 0.4}
    (run / "results.jsonl").write_text(json.dumps({**good, "args": "DigitsDG", "step": 0})
                                       + "\n" + json.dumps(good) + "\n")
    (run / "done").write_text("done\n")
    return tmp_path / "sweep"


def test_collect_skips_a_record_whose_args_is_not_a_mapping(results, capsys):
    with pytest.warns(UserWarning, match=r"results.jsonl:1: record skipped \(its args is not "
                                         r"a mapping\)"):
        collect_results.main(["--input_dir", str(results)])
    assert "40.0" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "foo@3"], "error: no record holds the metric 'foo@3'"),
    (["--output", "missing/t.md"], "error: --output missing/t.md: no such folder")])
def test_collect_refuses_bad_arguments(results, tmp_path, monkeypatch, argv, message):
    """Before: --metrics foo@3 exited 0 with no table; --output into a missing folder was a
    traceback."""
    monkeypatch.chdir(tmp_path)
    text = _error(collect_results.main, ["--input_dir", str(results), *argv])
    assert text.startswith(message) and "\n" not in text
    assert not (tmp_path / "missing").exists()


def test_evaluate_refuses_an_output_in_a_missing_folder(tmp_path):
    text = _error(evaluate.main, [str(tmp_path), "--output", str(tmp_path / "no" / "m.json")])
    assert "--output" in text and "must name a file in an existing folder" in text
    assert not (tmp_path / "no").exists()
