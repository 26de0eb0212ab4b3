"""Live logging and progress output of real (tiny) DigitsDG runs: TensorBoard event files
hold the records' scalars, the records hold each optimizer group's lr, a run in a log prints
plain progress lines (no per-step redraws), and ``--config`` runs the same experiment as
the flags."""
import importlib.util
import json

import pytest
import torch

from sdgdml.train import main
from sdgdml.train_args import experiment_identity
from test_loggers import read_scalars

RUN = ["--targets", "sketch", "--metrics", "recall@1", "--steps", "4", "--checkpoint_freq", "2"]


def test_tensorboard_events_match_the_records(tmp_path):
    out = tmp_path / "run"
    main([*RUN, "--output_dir", str(out), "--logger", "tensorboard", "--quiet",
          "--hparams", '{"lr_schedule": "cosine"}'])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    events = read_scalars(out)
    for key in ("mnist_val_recall@1", "sketch_test_recall@1", "mnist_test_recall@1"):
        assert events[f"eval/{key}"] == [(r["step"], pytest.approx(r[key])) for r in records]
    lr_keys = sorted(k for k in records[-1] if k.startswith("lr_"))
    assert lr_keys == ["lr_backbone", "lr_embedding", "lr_proxies"]
    lr = records[0]["hparams"]["lr"]
    # cosine schedule: the lr decays; the proxies train at lr * proxy_lr_mult
    assert records[0]["lr_backbone"] == pytest.approx(lr)
    assert records[-1]["lr_backbone"] < records[1]["lr_backbone"] < lr
    assert records[-1]["lr_proxies"] == pytest.approx(
        records[-1]["lr_backbone"] * records[0]["hparams"]["proxy_lr_mult"])
    for key in lr_keys:                               # the same value in events and records
        by_step = dict(events[f"train/{key}"])
        assert [by_step[r["step"]] for r in records[1:]] == \
            [pytest.approx(r[key]) for r in records[1:]]
    assert [s for s, _ in events["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in events["train/step_time"]] == [1, 2, 3, 4]
    mean_loss = torch.tensor([v for _, v in events["train/loss"][2:]]).mean().item()
    assert records[-1]["loss"] == pytest.approx(mean_loss, rel=1e-5)


def test_progress_in_a_log_is_plain_lines(tmp_path, capsys):
    """stderr is not a terminal here: no tqdm redraws; with --log_interval 1e-9 one line per
    step, by default (30 s) only the final line of this short run."""
    quick = ["--checkpoint_freq", "4", "--no_eval_at_start"]      # evaluations print no line
    main([*RUN, *quick, "--output_dir", str(tmp_path / "a"), "--log_interval", "1e-9"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("train ")]
    assert "\r" not in err, repr(err)
    assert len(lines) == 4
    assert lines[0].startswith("train 1/4 steps (25%) loss=") and " lr=" in lines[0]
    assert lines[-1].startswith("train 4/4 steps (100%)") and "ETA 0:00" in lines[-1]
    main([*RUN, *quick, "--output_dir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert "\r" not in err and [line[:15] for line in err.splitlines()
                                if line.startswith("train ")] == ["train 4/4 steps"]


def test_a_config_file_runs_the_same_experiment(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("targets: [sketch]\nmetrics: [recall@1]\nsteps: 2\ncheckpoint_freq: 2\n"
                      f"output_dir: {tmp_path / 'from_file'}\nquiet: true\n"
                      "no_eval_at_start: true\nhparams: {lr: 0.001}\n")
    main(["--config", str(config)])
    main(["--targets", "sketch", "--metrics", "recall@1", "--steps", "2", "--checkpoint_freq",
          "2", "--output_dir", str(tmp_path / "from_flags"), "--quiet", "--no_eval_at_start",
          "--hparams", '{"lr": 0.001}'])
    a, b = (json.loads((tmp_path / d / "args.json").read_text())
            for d in ("from_file", "from_flags"))
    assert experiment_identity(a) == experiment_identity(b)
    recs = [[json.loads(line) for line in (tmp_path / d / "results.jsonl").read_text()
             .splitlines()] for d in ("from_file", "from_flags")]
    assert [r["sketch_test_recall@1"] for r in recs[0]] == \
        [r["sketch_test_recall@1"] for r in recs[1]]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_its_package_fails_before_the_run_folder_is_made(tmp_path):
    with pytest.raises(SystemExit) as e:
        main([*RUN, "--output_dir", str(tmp_path / "run"), "--logger", "wandb"])
    assert e.value.code.startswith("error: --logger wandb needs the optional package wandb")
    assert not (tmp_path / "run").exists()
