"""Every user-facing value of a training run is checked before anything is created: one line
naming the value and what is allowed."""
from __future__ import annotations

import os
import subprocess

import pytest

from sdgdml import hparams_registry
from sdgdml.train_args import build_parser
from sdgdml.validation import (InvalidValueError, check_batch_fits, check_hparams,
                               check_train_args)

DEFAULTS = hparams_registry.default_hparams("ProxyAnchor", "DigitsDG")


def _args(tmp_path, *flags):
    return build_parser().parse_args([*flags, "--output_dir", str(tmp_path / "run")])


@pytest.mark.parametrize("flags,message", [
    (["--steps", "-5"], "--steps must be >= 1, got -5"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--checkpoint_freq", "-1"], "--checkpoint_freq must be >= 1, got -1"),
    (["--trial_seed", "-1"], "--trial_seed must be in [0, 2**32), got -1"),
    (["--seed", str(2 ** 32)], "--seed must be in [0, 2**32)"),
    (["--label_noise", "1"], "--label_noise must be in [0, 1)"),
    (["--num_workers", "-2"], "--num_workers must be >= 0"),
    (["--hparams", "[1,2]"], "--hparams must be a JSON object"),
    (["--hparams", "{lr: 1}"], "--hparams is not valid JSON"),
    (["--metrics", "recall@0"], "--metrics: unknown metric 'recall@0'"),
    (["--ucdr_metrics", "mAP"], "--ucdr_metrics: unknown metric 'mAP'"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--device", "gpu"], "is not a device"),
    (["--pretrained_file", "/no/such.safetensors"], "--pretrained_file not found"),
])
def test_bad_train_values(tmp_path, flags, message):
    with pytest.raises(InvalidValueError) as e:
        check_train_args(_args(tmp_path, *flags))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_good_values_pass_and_hparams_come_back_parsed(tmp_path):
    assert check_train_args(_args(tmp_path, "--hparams", '{"lr": 0.01}', "--steps", "3",
                                  "--device", "cpu")) == {"lr": 0.01}
    assert not (tmp_path / "run").exists()


def test_an_output_dir_that_cannot_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidValueError, match="exists and is not a folder"):
        check_train_args(build_parser().parse_args(["--output_dir", str(tmp_path / "file")]))
    with pytest.raises(InvalidValueError, match="is not a folder"):
        check_train_args(build_parser().parse_args(
            ["--output_dir", str(tmp_path / "file" / "run")]))


def test_a_read_only_output_dir(tmp_path):
    if os.geteuid() != 0:      # a read-only mount refuses even root; chmod does not
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)],
                       check=True)
    try:
        with pytest.raises(InvalidValueError, match="is not writable"):
            check_train_args(build_parser().parse_args(["--output_dir", str(ro / "run")]))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.parametrize("overrides,message", [
    ({"lr": "abc"}, 'hparam lr="abc": expected a finite number like its default 0.001'),
    ({"lr": 0}, "hparam lr must be > 0"),
    ({"batch_size": 0}, "hparam batch_size must be >= 1, got 0"),
    ({"batch_size": 6.5}, "hparam batch_size=6.5: expected int"),
    ({"freeze_bn": 1}, "hparam freeze_bn=1: expected bool"),
    ({"weight_decay": -1e-4}, "hparam weight_decay must be >= 0"),
    ({"pa_margin": float("nan")}, "hparam pa_margin=NaN: expected a finite number"),
])
def test_bad_hparam_values(overrides, message):
    with pytest.raises(InvalidValueError) as e:
        check_hparams(overrides, DEFAULTS)
    assert str(e.value).startswith(message)


def test_a_zero_duration_switches_a_phase_off():
    """warmup_epochs defaults to 1 on photo datasets; 0 (no warm-up) is a valid value."""
    large = hparams_registry.default_hparams("ProxyAnchor", "PACS")
    assert large["warmup_epochs"] == 1
    check_hparams({"warmup_epochs": 0}, large)
    with pytest.raises(InvalidValueError, match="warmup_epochs must be >= 0"):
        check_hparams({"warmup_epochs": -1}, large)


def test_good_hparam_values_pass():
    check_hparams({"lr": 1, "batch_size": 32, "pa_margin": 0.0, "freeze_bn": True,
                   "backbone": "resnet18", "not_known": "left to the registry"}, DEFAULTS)


def test_a_batch_larger_than_the_training_images():
    with pytest.raises(InvalidValueError, match="batch_size=900 is larger than the 800"):
        check_batch_fits(900, 800, "DigitsDG/mnist")
    check_batch_fits(800, 800, "DigitsDG/mnist")


# ----------------------------------------------------------------------------- train CLI
@pytest.mark.parametrize("flags", [
    ["--steps", "-5"], ["--steps", "0"], ["--epochs", "-1"], ["--checkpoint_freq", "-1"],
    ["--hparams", "[1,2]"], ["--hparams", '{"lr": "abc"}'], ["--hparams", '{"batch_size": 0}'],
    ["--hparams", '{"batch_size": 5000}'], ["--trial_seed", "-1"], ["--device", "cuda:3"],
    ["--algorithm", "NoSuchLoss"], ["--hparams", '{"nope": 1}'], ["--targets", "nowhere"],
])
def test_train_refuses_bad_values_with_one_line_and_creates_nothing(tmp_path, flags):
    from sdgdml import train

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train.main([*flags, "--steps", "1", "--output_dir", str(run)] if "--steps" not in flags
                   else [*flags, "--output_dir", str(run)])
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    assert not run.exists()


def test_the_exit_code_is_1_and_stderr_one_line(tmp_path):
    from helpers import PYTHON, subprocess_env

    res = subprocess.run([PYTHON, "-m", "sdgdml.train", "--steps", "-5", "--output_dir",
                          str(tmp_path / "run")], capture_output=True, text=True,
                         env=subprocess_env())
    assert res.returncode == 1 and res.stderr == "error: --steps must be >= 1, got -5\n"
    assert not (tmp_path / "run").exists()
