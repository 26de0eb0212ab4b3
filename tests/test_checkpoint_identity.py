"""A checkpoint knows its run (issue 19): a checkpoint of another experiment, another
algorithm or other shapes, a malformed step, one past the run's end or without its record is
refused with one ``error:`` line (also in ``out.txt``) and nothing is deleted; a checkpoint is
only written from a finite state; a folder whose run never trained never blocks a corrected
command; stale ``*.tmp`` files are removed when a run starts."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from helpers import TINY_TRAIN, train_main_message
from sdgdml.records import read_records
from sdgdml.runstate import load_checkpoint, tensor_shapes

ARGS = TINY_TRAIN[:-5] + ["--metrics", "recall@1", "--quiet", "--steps", "2",
                          "--checkpoint_freq", "2", "--no_eval_at_start"]


def _main(run, *extra):
    """This file's run of ``python -m sdgdml.train`` in this process (``train_main_message``)."""
    return train_main_message(ARGS + list(extra) + ["--output_dir", str(run)])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step run (trial 0) that kept its checkpoint, started in a folder whose
    run never trained (args.json of other args, no checkpoint, no record: it stopped while
    starting) and where a killed write left a ``*.tmp``."""
    run = tmp_path_factory.mktemp("finished") / "run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"output_dir": str(run), "hparams":
                                               '{"optimizer": "foo"}'}))
    (run / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert _main(run, "--keep_checkpoint") is None
    return run


def _planted(tmp_path, finished, edit=None, records=False):
    """A run folder holding ``finished``'s checkpoint (edited by ``edit(state)``), with its
    records (``records``) or alone."""
    run = tmp_path / "run"
    run.mkdir()
    state = torch.load(finished / "checkpoint.pt", weights_only=True)
    if edit:
        edit(state)
    torch.save(state, run / "checkpoint.pt")
    if records:
        for name in ("args.json", "results.jsonl"):
            shutil.copy(finished / name, run / name)
    return run


def _refused(run, message, *extra):
    before = (run / "checkpoint.pt").read_bytes()
    text = _main(run, *extra)
    assert text.startswith("error: ") and "\n" not in text, text
    assert message in text and "--discard_bad_checkpoint" in text, text
    assert (run / "checkpoint.pt").read_bytes() == before          # nothing deleted
    assert not (run / "done").exists() and not read_records(run / "results.jsonl")[2:]
    assert text in (run / "out.txt").read_text()                     # also in the run's log
    return text


def test_a_checkpoint_of_another_trial_is_refused(tmp_path, finished):
    run = _planted(tmp_path, finished)
    text = _refused(run, "is a checkpoint of another experiment", "--trial_seed", "1")
    assert "trial_seed: default there, 1 here" in text
    assert not (run / "results.jsonl").exists()


def test_a_checkpoint_without_its_record_is_refused(tmp_path, finished):
    """The same experiment's checkpoint copied into an empty folder: before, it 'resumed at
    step 2', crashed in the summary (IndexError) and left a done run without records."""
    run = _planted(tmp_path, finished)
    _refused(run, "is at step 2 but results.jsonl holds no record of step 2")


@pytest.mark.parametrize("step,message", [
    (-5, "has a malformed step (-5"), ("abc", "has a malformed step ('abc'"),
    (9, "is at step 9, past the end of this run (2 steps)")])
def test_a_malformed_or_past_the_end_step_is_refused(tmp_path, finished, step, message):
    run = _planted(tmp_path, finished, lambda s: s.update(step=step), records=True)
    _refused(run, message)


def test_a_checkpoint_of_another_algorithm_or_shape_is_refused(tmp_path, finished):
    run = _planted(tmp_path, finished, lambda s: s["identity"].update(algorithm="PFML"),
                   records=True)
    _refused(run, "is a checkpoint of 'PFML', not of this run's ProxyAnchor")

    def other_shape(state):          # an older checkpoint (no identity) of a wider head
        del state["identity"]
        modules = state["algorithm"]["modules"]
        modules["network.embedding.weight"] = torch.zeros(32, 128)
    shutil.rmtree(run)
    run = _planted(tmp_path, finished, other_shape, records=True)
    _refused(run, "does not fit this run's ProxyAnchor (tensors network.embedding.weight: "
                  "[32, 128] there, [64, 128] here)")


def test_an_older_checkpoint_without_identity_resumes_when_its_record_names_the_run(
        tmp_path, finished):
    run = _planted(tmp_path, finished, lambda s: s.pop("identity"), records=True)
    assert _main(run) is None
    assert "has no identity (an older sdgdml's): resumed" in (run / "out.txt").read_text()
    assert (run / "done").exists() and len(read_records(run / "results.jsonl")) == 1

    (tmp_path / "o").mkdir()                           # its record names another trial
    other = _planted(tmp_path / "o", finished, lambda s: s.pop("identity"), records=True)
    lines = [json.loads(line) for line in (other / "results.jsonl").read_text().splitlines()]
    lines[0]["args"]["trial_seed"] = 1
    (other / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    _refused(other, "has no identity (an older sdgdml's) and the record of its step 2 is of "
                    "another experiment")


def test_a_done_folder_without_records_is_not_done(tmp_path, finished):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(finished / "args.json", run / "args.json")
    (run / "done").write_text("done\n")
    text = _main(run)
    assert text.startswith("error: ") and "is marked done but holds no record" in text


def test_checkpoints_hold_a_finite_state_only(tmp_path):
    """lr 1e6: BatchNorm's running_var overflows before any loss is NaN; the kept checkpoint
    is the last one whose parameters, buffers and optimizer state are all finite."""
    run = tmp_path / "run"
    text = _main(run, "--hparams", '{"lr": 1e6}', "--steps", "3", "--checkpoint_freq", "1")
    assert text.startswith("error: ") and "\n" not in text, text
    assert "last finite checkpoint" in text or "loss is nan" in text
    state = load_checkpoint(run / "checkpoint.pt", "cpu")
    assert state["step"] < 3
    for name, t in tensor_shapes(state["algorithm"]["modules"]).items():
        value = state["algorithm"]["modules"][name]
        assert not value.is_floating_point() or torch.isfinite(value).all(), name
    for opt in state["algorithm"]["optimizers"].values():
        for slot in opt["state"].values():
            assert all(torch.isfinite(v).all() for v in slot.values()
                       if isinstance(v, torch.Tensor) and v.is_floating_point())
    assert text in (run / "out.txt").read_text()


def test_a_folder_whose_run_never_trained_takes_the_corrected_command(finished):
    """Before, it refused the corrected command ('holds a run with other args')."""
    assert (finished / "done").exists() and not list(finished.glob("*.tmp"))
    log = (finished / "out.txt").read_text()
    assert "never trained (no checkpoint, no record): its args are replaced" in log
    assert "checkpoint.pt.tmp, left by an interrupted write" in log
