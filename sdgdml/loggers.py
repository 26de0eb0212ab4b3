"""Live logging of a run's scalars: ``--logger tensorboard`` (event files in
``<run folder>/tensorboard``: ``tensorboard --logdir runs/``) and ``--logger wandb`` (Weights &
Biases, optional: imported only when asked for, offline unless ``WANDB_MODE`` says otherwise).

The trainer logs, under ``train/``, every step's losses (``loss`` and named components, read
from the device in batches: ``RunMonitor``), the learning rate of each optimizer group
(:func:`learning_rates`, the same ``lr_<group>`` keys as in the records) and the step time;
under ``eval/``, every split's metrics at each checkpoint (the record's ``<split>_<metric>``
keys) and, under ``system/``, each checkpoint's ``eval_time`` (seconds) and ``mem_gb`` (peak
memory). When the run ends, TensorBoard's HParams dashboard gets the run's hparams and identity
(algorithm, dataset, source, seeds, recipe) with its final headline metrics
(``FINAL_METRICS``, as ``final/<key>``), one row per run to sort and filter. A resumed run
purges what was logged after its checkpoint, so the curves show each step once.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch

from .progress import LOG_INTERVAL_S, Progress
from .scalars import PendingScalars

LOGGERS = ("tensorboard", "wandb")
# the metrics of the last checkpoint shown in the HParams dashboard (key endings)
FINAL_METRICS = ("recall@1", "map@r", "map@all", "detect_acc", "open_auroc")
RUN_ARGS = ("algorithm", "dataset", "source", "hparams_seed", "trial_seed", "recipe", "ucdr")
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

    def log_hparams(self, config: dict, final: dict[str, float], step: int) -> None:
        """The HParams dashboard's row of this run: ``hparams_row(config)`` and the ``final``
        metrics (scalars ``final/<key>`` at ``step``, the last checkpoint)."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"final/{k}": v for k, v in final.items()}
        for summary in hparams(hparams_row(config), metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


def hparams_row(config: dict) -> dict:
    """The run's identity (``RUN_ARGS``) and hparams as HParams values (numbers, text,
    booleans; anything else as text)."""
    row = {k: config[k] for k in RUN_ARGS if config.get(k) is not None}
    row.update(config.get("hparams") or {})
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in row.items()}


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

    def log_hparams(self, config: dict, final: dict[str, float], step: int) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in final.items()})

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

    def log_eval(self, step: int, metrics: dict[str, float],
                 system: dict[str, float] | None = None) -> None:
        """``metrics`` under ``eval/``, ``system`` (eval_time, mem_gb) under ``system/``."""
        self._log(step, {**{f"eval/{k}": v for k, v in metrics.items()},
                         **{f"system/{k}": v for k, v in (system or {}).items()}})

    def log_hparams(self, config: dict, final: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_hparams(config, final, step)

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
    (``train/`` scalars of every step, ``eval/`` metrics every checkpoint) and the learning
    rates its records hold. ``optimizers``: {name: optimizer} of the algorithm.

    A step's values may be tensors still on the device (``sdgdml.scalars``): they are queued,
    and read all at once when the progress output is due (:meth:`after_step`) or when the loop
    asks (:meth:`read`, at checkpoints); each read step is then logged under its own step
    number. The progress ``loss=`` is the mean of the steps since the last line (or, on a
    terminal, since the last refresh of the bar)."""

    def __init__(self, names, run_dir, config: dict, optimizers: dict, total: int,
                 start: int = 0, quiet: bool = False, interval: float = LOG_INTERVAL_S):
        self.optimizers, self.config, self.final = optimizers, config, ()
        self.loggers = create_loggers(names, run_dir, config, start)
        self.progress = Progress(total, start=start, desc="train", disable=quiet,
                                 interval=interval)
        self.pending = PendingScalars()
        self.pending_lrs: list[dict[str, float]] = []
        self.loss_sum, self.loss_steps = 0.0, 0       # since the last progress line

    def learning_rates(self) -> dict[str, float]:
        return learning_rates(self.optimizers)

    def after_step(self, step: int, values: dict, step_time: float
                   ) -> list[tuple[int, dict[str, float]]]:
        """``step``: the number of steps done (1 after the first); ``values``: the step's
        losses (tensors or numbers). Returns the steps read now, [(step, {name: float})]
        (their values and ``step_time``), or [] when nothing was read."""
        self.pending.add(step, {**values, "step_time": step_time})
        self.pending_lrs.append(self.learning_rates())
        due = self.progress.due()
        read = self.read() if due else []
        self.progress.update(1, show_line=due, **(self._shown() if due else {}))
        return read

    def read(self) -> list[tuple[int, dict[str, float]]]:
        """Read the queued steps (one transfer), log them; returns them as ``after_step``."""
        if not len(self.pending):
            return []
        read = self.pending.read()
        for (step, values), lrs in zip(read, self.pending_lrs):
            self.loggers.log_train(step, {**values, **lrs})
            if "loss" in values:
                self.loss_sum, self.loss_steps = self.loss_sum + values["loss"], \
                    self.loss_steps + 1
        self.pending_lrs = []
        return read

    def _shown(self) -> dict[str, float]:
        """The progress values: the mean loss since the last line, the current lr."""
        shown = {}
        if self.loss_steps:
            shown["loss"] = self.loss_sum / self.loss_steps
            self.loss_sum, self.loss_steps = 0.0, 0
        lrs = self.learning_rates()
        if lrs:
            shown["lr"] = next(iter(lrs.values()))
        return shown

    def after_checkpoint(self, step: int, metrics: dict[str, float],
                         system: dict[str, float] | None = None) -> None:
        """``system``: the checkpoint's ``eval_time`` (s) and ``mem_gb``."""
        self.loggers.log_eval(step, metrics, system)
        self.final = (step, {k: v for k, v in metrics.items() if k.endswith(FINAL_METRICS)})
        if self.progress.done == self.progress.start:   # the evaluation before training:
            self.progress.restart_clock()               # not part of the rate

    def close(self) -> None:
        """Ends the progress output; the loggers get the HParams row (the last checkpoint's
        headline metrics) and close."""
        self.progress.close()
        if self.final:
            step, final = self.final
            self.loggers.log_hparams(self.config, final, step)
        self.loggers.close()
