"""Live logging (TensorBoard event files read back with tensorboard's own EventAccumulator,
learning rates per optimizer group, the wandb logger's clear error when its package is
missing) and progress output (a terminal bar vs. periodic plain lines in a log)."""
import importlib.util
import io

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sdgdml import loggers
from sdgdml.progress import Progress


def read_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / loggers.TENSORBOARD_DIR))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    log = loggers.create_loggers(["tensorboard"], tmp_path, {"lr": 0.1})
    for step in range(5):
        log.log_train(step, {"loss": 1.0 / (step + 1), "lr_backbone": 0.1 * step,
                             "step_time": 0.25})
    log.log_eval(5, {"sketch_test_recall@1": 0.75, "mnist_val_recall@1": 0.5})
    log.close()
    got = read_scalars(tmp_path)
    assert set(got) == {"train/loss", "train/lr_backbone", "train/step_time",
                        "eval/sketch_test_recall@1", "eval/mnist_val_recall@1"}
    assert got["train/loss"] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert got["train/lr_backbone"] == [(s, pytest.approx(0.1 * s)) for s in range(5)]
    assert got["eval/sketch_test_recall@1"] == [(5, 0.75)]


def test_a_resumed_run_replaces_what_was_logged_after_its_checkpoint(tmp_path):
    first = loggers.create_loggers(["tensorboard"], tmp_path, {})
    for step in range(6):                       # killed after step 5; checkpoint at step 3
        first.log_train(step, {"loss": float(step)})
    first.close()
    resumed = loggers.create_loggers(["tensorboard"], tmp_path, {}, start_step=3)
    for step in range(3, 8):
        resumed.log_train(step, {"loss": 10.0 + step})
    resumed.close()
    assert read_scalars(tmp_path)["train/loss"] == [
        (0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0), (6, 16.0), (7, 17.0)]


def test_learning_rates_name_each_optimizer_group():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    main = torch.optim.SGD([{"params": a.parameters(), "lr": 0.1, "name": "backbone"},
                            {"params": b.parameters(), "lr": 10.0}], lr=1.0)
    assert loggers.learning_rates({"main": main}) == {"lr_backbone": 0.1, "lr_1": 10.0}
    other = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(other, lambda s: 0.5 ** s)
    other.step()
    sched.step()
    assert loggers.learning_rates({"main": main, "disc": other}) == {
        "lr_main_backbone": 0.1, "lr_main_1": 10.0, "lr_disc_0": 0.25}


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_its_package_is_a_clear_error(tmp_path):
    with pytest.raises(loggers.LoggerError, match="pip install wandb"):
        loggers.create_loggers(["wandb"], tmp_path, {})
    with pytest.raises(loggers.LoggerError, match="unknown logger 'mlflow'"):
        loggers.check_loggers(["mlflow"])
    assert not any(tmp_path.iterdir())


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_in_a_log_prints_a_line_every_interval():
    """45 steps of 1 s with a 10 s interval: 4 lines plus the final one, no redraws."""
    stream, clock = io.StringIO(), FakeClock()
    with Progress(45, interval=10, stream=stream, clock=clock) as bar:
        for step in range(45):
            clock.t += 1.0
            bar.update(loss=1.0 / (step + 1), lr=1e-3)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 5
    assert lines[0] == "train 10/45 steps (22%) loss=0.1 lr=0.001 | 0:10 elapsed, ETA 0:35"
    assert lines[-1] == "train 45/45 steps (100%) loss=0.02222 lr=0.001 | 0:45 elapsed, ETA 0:00"
    bar.close()                                   # closing again prints nothing more
    assert len(stream.getvalue().splitlines()) == 5


def test_progress_of_a_resumed_run_estimates_from_its_own_rate():
    stream, clock = io.StringIO(), FakeClock()
    bar = Progress(100, start=60, interval=5, stream=stream, clock=clock)
    for _ in range(10):
        clock.t += 0.5
        bar.update()
    assert stream.getvalue().splitlines() == [
        "train 70/100 steps (70%) | 0:05 elapsed, ETA 0:15"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_a_tqdm_bar_not_redrawn_every_step():
    stream = Terminal()
    with Progress(2000, stream=stream) as bar:
        for _ in range(2000):
            bar.update(loss=0.5)
    text = stream.getvalue()
    assert "2000/2000" in text and "loss=0.5" in text
    assert text.count("\r") < 20                 # redraws limited by time, not by steps


def test_run_monitor_logs_what_a_training_loop_reports(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": net.parameters(), "lr": 0.5, "name": "head"}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    stream, clock = io.StringIO(), FakeClock()
    monitor = loggers.RunMonitor(["tensorboard"], tmp_path, {}, {"main": opt}, total=3,
                                 quiet=True)
    monitor.progress = Progress(3, interval=0, stream=stream, clock=clock)
    monitor.after_checkpoint(0, {"t_test_recall@1": 0.2})
    for step in range(1, 4):
        clock.t += 2.0
        opt.step()
        sched.step()
        monitor.after_step(step, {"loss": 1.0 / step, "aux": 2.0}, step_time=2.0)
    assert monitor.learning_rates() == {"lr_head": pytest.approx(0.5 / 4)}
    monitor.after_checkpoint(3, {"t_test_recall@1": 0.6})
    monitor.close()
    got = read_scalars(tmp_path)
    assert got["train/lr_head"] == [(s, pytest.approx(0.5 / (s + 1))) for s in (1, 2, 3)]
    assert got["train/aux"] == [(s, 2.0) for s in (1, 2, 3)]
    assert got["eval/t_test_recall@1"] == [(0, pytest.approx(0.2)), (3, pytest.approx(0.6))]
    assert stream.getvalue().splitlines()[-1] == \
        "train 3/3 steps (100%) loss=0.3333 lr=0.125 | 0:06 elapsed, ETA 0:00"


def test_hparams_dashboard_and_system_scalars(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    config = {"algorithm": "ProxyAnchor+SEE", "dataset": "DigitsDG", "source": "mnist",
              "trial_seed": 1, "output_dir": "x", "hparams": {"lr": 0.5, "pooling": "avg",
                                                             "see_n_aug": 8, "tags": [1, 2]}}
    monitor = loggers.RunMonitor(["tensorboard"], tmp_path, config, {"main": opt}, total=2,
                                 quiet=True)
    monitor.after_checkpoint(0, {"t_test_recall@1": 0.2}, {"eval_time": 1.5, "mem_gb": 0.25})
    monitor.after_checkpoint(2, {"t_test_recall@1": 0.6, "t_test_recall@2": 0.7,
                                 "s_val_map@r": 0.4}, {"eval_time": 2.5, "mem_gb": 0.5})
    monitor.close()
    got = read_scalars(tmp_path)
    assert got["system/eval_time"] == [(0, 1.5), (2, 2.5)]
    assert got["system/mem_gb"] == [(0, 0.25), (2, 0.5)]
    assert got["final/t_test_recall@1"] == [(2, pytest.approx(0.6))]
    assert got["final/s_val_map@r"] == [(2, pytest.approx(0.4))]
    assert "final/t_test_recall@2" not in got                # not a headline metric
    acc = EventAccumulator(str(tmp_path / loggers.TENSORBOARD_DIR))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    values = {k: v.ListFields()[0][1] for k, v in start.hparams.items()}
    assert values == {"algorithm": "ProxyAnchor+SEE", "dataset": "DigitsDG", "source": "mnist",
                      "trial_seed": 1, "lr": 0.5, "pooling": "avg", "see_n_aug": 8,
                      "tags": "[1, 2]"}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {
        "final/t_test_recall@1", "final/s_val_map@r"}
