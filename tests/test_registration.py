"""One registration shape: a dataset and a launcher defined in this test module register with
their decorators, without editing any other file, and a sweep launches on them by name."""
from __future__ import annotations

from sdgdml import sweep
from sdgdml.datasets import DATASETS, DigitsDG, parse_split, register_dataset, \
    unregister_dataset
from sdgdml.launchers import LAUNCHERS, Launcher, register_launcher, unregister_launcher


@register_dataset
class ToyDigits(DigitsDG):
    """DigitsDG's images under another name: a dataset added by a test module."""

    NAME = "ToyDigits"


@register_launcher
class ToyLauncher(Launcher):
    """Remembers what it was asked to submit; runs nothing."""

    name, records_jobs = "toy", False
    submitted: list = []

    def submit(self, jobs):
        ToyLauncher.submitted += [j.argv for j in jobs]
        return [f"toy: {len(jobs)} runs"]


def teardown_module():
    unregister_dataset("ToyDigits")
    unregister_launcher("toy")


def test_a_dataset_and_a_launcher_from_a_test_module_register_and_run_a_sweep(tmp_path, capsys):
    assert DATASETS["ToyDigits"] is ToyDigits and LAUNCHERS["toy"] is ToyLauncher
    assert parse_split("ToyDigits:mnist->sketch") == ("ToyDigits", "mnist", ["sketch"])
    sweep.main(["launch", "--splits", "ToyDigits:mnist->sketch", "--algorithms", "ProxyAnchor",
                "--launcher", "toy", "--skip_data_check", "--output_dir", str(tmp_path)])
    (argv,) = ToyLauncher.submitted
    assert argv[argv.index("--dataset") + 1] == "ToyDigits"
    assert "toy: 1 runs" in capsys.readouterr().out
