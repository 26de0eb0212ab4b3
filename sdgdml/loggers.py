"""Live logging of a run's scalars: ``--logger tensorboard`` (event files in
``<run folder>/tensorboard``: ``tensorboard --logdir runs/``) and ``--logger wandb`` (Weights &
Biases, optional: imported only when asked for, offline unless ``WANDB_MODE`` says otherwise).

The trainer logs, under ``train/``, every step's losses (``loss`` and named components), the
learning rate of each optimizer group (:func:`learning_rates`, the same ``lr_<group>`` keys as
in the records) and the step time; under ``eval/``, every split's metrics at each checkpoint
(the record's ``<split>_<metric>`` keys). A resumed run purges what was logged after its
checkpoint, so the curves show each step once.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch

from .progress import LOG_INTERVAL_S, Progress

LOGGERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_MISSING = ("--logger wandb needs the optional package wandb (pip install wandb); or use "
                 "--logger tensorboard")


class LoggerError(RuntimeError):
    """An unknown logger, or one whose package is missing."""


def learning_rates(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
    """``{"lr_<group>": lr}`` over the param groups of ``optimizers`` ({name: optimizer}); a
    group's name is its ``"name"`` entry, else its index; with several optimizers the keys
    are ``lr_<optimizer>_<group>``."""
    out = {}
    for opt_name, opt in optimizers.items():
        for i, group in enumerate(opt.param_groups):
            name = str(group.get("name", i))
            key = f"lr_{name}" if len(optimizers) == 1 else f"lr_{opt_name}_{name}"
            out[key] = float(group["lr"])
    return out


class TensorBoardLogger:
    """Scalars into TensorBoard event files in ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path, config: dict, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after the resumed checkpoint's step are hidden (rewritten)
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR),
                                    purge_step=start_step or None)
        if not start_step:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1,
                                                                sort_keys=True) + "\n```")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Scalars to Weights & Biases. Offline by default (``WANDB_MODE`` overrides it; files in
    ``<run_dir>/wandb``); the run's id is its folder name, so a resumed run continues it."""

    def __init__(self, run_dir: Path, config: dict, start_step: int = 0):
        try:
            import wandb
        except ImportError:
            raise LoggerError(WANDB_MISSING) from None
        run_dir = Path(run_dir).resolve()
        self.run = wandb.init(dir=str(run_dir), config=config, name=run_dir.name,
                              id=_wandb_id(run_dir), resume="allow",
                              project=os.environ.get("WANDB_PROJECT", "sdgdml"),
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def _wandb_id(run_dir: Path) -> str:
    return hashlib.sha1(str(run_dir).encode()).hexdigest()[:16]


_CLASSES = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


class RunLoggers:
    """The loggers of one run; ``log_train`` every step, ``log_eval`` every checkpoint."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def log_train(self, step: int, scalars: dict[str, float]) -> None:
        self._log(step, {f"train/{k}": v for k, v in scalars.items()})

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, {f"eval/{k}": v for k, v in metrics.items()})

    def _log(self, step: int, scalars: dict) -> None:
        for logger in self.loggers:
            logger.log(step, scalars)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def check_loggers(names) -> None:
    """Refuse unknown names and missing packages before anything is built."""
    for name in names or ():
        if name not in _CLASSES:
            raise LoggerError(f"unknown logger {name!r}; known: {', '.join(LOGGERS)}")
        if name == "wandb" and importlib.util.find_spec("wandb") is None:
            raise LoggerError(WANDB_MISSING)


def create_loggers(names, run_dir, config: dict, start_step: int = 0) -> RunLoggers:
    """The loggers ``names`` (a subset of ``LOGGERS``) for the run in ``run_dir``;
    ``start_step`` > 0 when resuming from a checkpoint at that step."""
    check_loggers(names)
    return RunLoggers([_CLASSES[n](Path(run_dir), config, start_step) for n in names or ()])


class RunMonitor:
    """What a training loop reports to: the progress output (loss and lr), the live loggers
    (``train/`` scalars every step, ``eval/`` metrics every checkpoint) and the learning
    rates its records hold. ``optimizers``: {name: optimizer} of the algorithm."""

    def __init__(self, names, run_dir, config: dict, optimizers: dict, total: int,
                 start: int = 0, quiet: bool = False, interval: float = LOG_INTERVAL_S):
        self.optimizers = optimizers
        self.loggers = create_loggers(names, run_dir, config, start)
        self.progress = Progress(total, start=start, desc="train", disable=quiet,
                                 interval=interval)

    def learning_rates(self) -> dict[str, float]:
        return learning_rates(self.optimizers)

    def after_step(self, step: int, losses: dict[str, float], step_time: float) -> None:
        """``step``: the number of steps done (1 after the first)."""
        lrs = self.learning_rates()
        self.loggers.log_train(step, {**losses, **lrs, "step_time": step_time})
        shown = {"loss": losses["loss"]} if "loss" in losses else {}
        if lrs:
            shown["lr"] = next(iter(lrs.values()))
        self.progress.update(**shown)

    def after_checkpoint(self, step: int, metrics: dict[str, float]) -> None:
        self.loggers.log_eval(step, metrics)
        if self.progress.done == self.progress.start:   # the evaluation before training:
            self.progress.restart_clock()               # not part of the rate

    def close(self) -> None:
        self.progress.close()
        self.loggers.close()
