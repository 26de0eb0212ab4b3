"""Cost of watching a run: what ``RunMonitor.after_step`` (progress line bookkeeping, lr of
each optimizer group, and with ``--logger tensorboard`` six scalars into the event file) adds
to every training step, against a DigitsDG training step (digits_cnn, batch 64).

    PYTHONPATH=. python benchmarks/bench_monitor.py [--steps 2000]

Prints microseconds per step and the ratio to the training step; asserts nothing.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time

import torch

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule, create_algorithm
from sdgdml.loggers import RunMonitor
from sdgdml.networks import create_model
from sdgdml.progress import Progress


def monitor_us(loggers: list[str], optimizers: dict, steps: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        monitor = RunMonitor(loggers, run_dir, {}, optimizers, total=steps)
        monitor.progress = Progress(steps, stream=io.StringIO())     # a log, not a terminal
        losses = {"loss": 1.0, "pa": 0.5, "see": 0.5}
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            monitor.after_step(step, losses, 0.01)
        elapsed = time.perf_counter() - t0
        monitor.close()
    return 1e6 * elapsed / steps


def train_step_us(algorithm, repeats: int = 30) -> float:
    x, y = torch.randn(64, 3, 32, 32), torch.arange(64) % 5
    for _ in range(3):
        algorithm.update({"x": x, "y": y})
    t0 = time.perf_counter()
    for _ in range(repeats):
        algorithm.update({"x": x, "y": y})
    return 1e6 * (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(1)
    hparams = hparams_registry.get_hparams("ProxyAnchor", "DigitsDG", 0, {"batch_size": 64})
    algorithm = create_algorithm("ProxyAnchor", create_model(hparams), 5, hparams,
                                 Schedule(10_000, 100))
    step = train_step_us(algorithm)
    print(f"DigitsDG ProxyAnchor training step (batch 64, 1 thread): {step:.0f} us")
    for loggers in ([], ["tensorboard"]):
        cost = monitor_us(loggers, algorithm.optimizers, args.steps)
        print(f"RunMonitor.after_step, loggers={loggers or 'none'}: {cost:.1f} us/step "
              f"= {100 * cost / step:.2f}% of the training step")


if __name__ == "__main__":
    main()
