"""``--config run.yaml``: the file's keys are the train flags, explicit flags override them,
unknown keys and wrong values are one clear error, and a file cannot run code."""
import json

import pytest

from sdgdml import run_config
from sdgdml.train_args import build_parser, experiment_identity


def parse(tmp_path, text, *argv):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    return run_config.parse_with_config(build_parser(), ["--config", str(f), *argv])


RUN = """
dataset: DigitsDG
source: mnist
targets: [sketch, uci]
algorithm: ProxyAnchor+SEE
hparams: {lr: 0.0001, batch_size: 64}
steps: 20
epochs: 3
metrics: recall@1
protocol: both
quiet: true
output_dir: runs/a
"""


def test_a_config_file_gives_the_same_args_as_the_flags(tmp_path):
    from_file = parse(tmp_path, RUN)
    flags = build_parser().parse_args([
        "--dataset", "DigitsDG", "--source", "mnist", "--targets", "sketch", "uci",
        "--algorithm", "ProxyAnchor+SEE", "--hparams", '{"lr": 0.0001, "batch_size": 64}',
        "--steps", "20", "--epochs", "3", "--metrics", "recall@1", "--protocol", "both",
        "--quiet", "--output_dir", "runs/a"])
    got, want = vars(from_file), vars(flags)
    assert got.pop("config") == str(tmp_path / "run.yaml") and want.pop("config") is None
    assert got == want
    assert isinstance(got["epochs"], float) and json.loads(got["hparams"])["lr"] == 1e-4
    assert experiment_identity(got) == experiment_identity(want)


def test_explicit_flags_override_the_file(tmp_path):
    args = parse(tmp_path, RUN, "--steps", "5", "--targets", "negative", "--output_dir", "b")
    assert (args.steps, args.targets, args.output_dir) == (5, ["negative"], "b")
    assert args.algorithm == "ProxyAnchor+SEE"          # the rest from the file


def test_output_dir_may_come_from_the_file_only(tmp_path):
    assert parse(tmp_path, "output_dir: runs/x\n").output_dir == "runs/x"
    with pytest.raises(SystemExit):                     # still required somewhere
        parse(tmp_path, "steps: 3\n")


@pytest.mark.parametrize("text, message", [
    ("stpes: 3\n", "unknown keys 'stpes' (did you mean 'steps'?)"),
    ("steps: 2.5\n", "steps: expected an integer, got 2.5"),
    ("epochs: many\n", "epochs: invalid float: 'many'"),
    ("protocol: sideways\n", "protocol: 'sideways' is not one of within, cross, both"),
    ("quiet: 'yes'\n", "quiet: expected true or false, got 'yes'"),
    ("source: [mnist, uci]\n", "source: expected one value"),
    ("- steps\n", "expected a mapping of flag names to values, got list"),
    ("steps: [\n", "is not valid YAML"),
])
def test_bad_files_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(SystemExit) as e:
        parse(tmp_path, text, "--output_dir", "x")
    assert e.value.code.startswith("error: ") and message in e.value.code


def test_a_config_file_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"
    text = f"steps: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(SystemExit, match="not valid YAML"):
        parse(tmp_path, text, "--output_dir", "x")
    assert not marker.exists()


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="error: cannot read --config .*nope.yaml"):
        run_config.parse_with_config(build_parser(), ["--config", str(tmp_path / "nope.yaml"),
                                                      "--output_dir", "x"])
