"""Two small output defects: a run with one checkpoint ends with one value column (not the same
step twice), and a sweep's printed commands name each flag once when --train_args overrides
the file's value."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sdgdml import sweep, sweep_config
from sdgdml.protocols import SDGDMLProtocol

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def summary(records):
    return SDGDMLProtocol.summary(SimpleNamespace(dataset=SimpleNamespace(source="s")), records)


def test_one_checkpoint_summary_has_one_value_column():
    one = {"step": 8, "t_test_recall@1": 0.5, "s_val_recall@1": 0.25}
    header = summary([one]).splitlines()[0].split()
    assert header.count("8") == 1 and header[-2:] == ["step", "8"]
    two = summary([{**one, "step": 0, "t_test_recall@1": 0.1}, one]).splitlines()
    assert two[0].split()[-4:] == ["step", "0", "step", "8"]
    assert two[2].split() == ["t_test", "10.00", "50.00"]


def test_train_args_override_the_files_flags_once(capsys):
    args = sweep.build_parser().parse_args([
        "launch", "--config", str(SWEEPS / "digits_tiny.yaml"), "--output_dir", "unused",
        "--train_args", "--steps 4 --metrics recall@1 --quiet"])
    d = sweep_config.from_cli(args)
    assert d.train_args == ["--steps", "4", "--checkpoint_freq", "20", "--metrics", "recall@1",
                            "--quiet"]
    job = list(sweep_config.make_jobs(d, "out", machine_argv=["--device", "cpu", "--quiet"]))[0]
    flags = [t for t in job.argv if t.startswith("--")]
    assert len(flags) == len(set(flags))
    assert job.argv[job.argv.index("--steps") + 1] == "4"


def test_merge_flags_keeps_the_first_place_and_the_last_value():
    assert sweep_config.merge_flags(["--a", "1", "--b", "x", "y", "--c", "--b", "z", "--a=2"]) \
        == ["--a=2", "--b", "z", "--c"]
