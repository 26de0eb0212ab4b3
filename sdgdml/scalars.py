"""The scalars a training step reports (its loss and logged terms), kept on the device and read
in one batch.

A training step (``Algorithm.train_step``) returns ``{name: value}`` where a value is a 0-dim
tensor, still on the device, or a Python number known on the host. Reading a tensor
(``.item()``, ``float()``) makes the host wait until the device has computed it: done every
step, the host stops queueing kernels at every step and a GPU step becomes launch-bound. The
trainer therefore queues the steps' values (:class:`PendingScalars`) and reads them at the
progress interval and at checkpoints, all of them in one transfer (:func:`read_scalars`).
"""
from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from contextlib import contextmanager

import torch

Scalar = torch.Tensor | float | int


def read_scalars(rows: list[dict[str, Scalar]]) -> list[dict[str, float]]:
    """``rows`` with every value a Python float, in the same key order; the tensors among them
    (0-dim or one element) are read in one transfer per device. The floats equal what
    ``float(t)`` gives for each tensor (float32 values are exact in float64)."""
    out = [{k: (None if torch.is_tensor(v) else float(v)) for k, v in row.items()}
           for row in rows]
    groups: dict[tuple, list[tuple[int, str, torch.Tensor]]] = {}
    for r, row in enumerate(rows):
        for k, v in row.items():
            if torch.is_tensor(v):
                groups.setdefault((v.device, v.dtype), []).append((r, k, v))
    by_device: dict[torch.device, list] = {}
    for (device, _), items in groups.items():        # one stack per dtype, one cast each
        stacked = torch.stack([v.detach().reshape(()) for _, _, v in items]).double()
        by_device.setdefault(device, []).append((items, stacked))
    for parts in by_device.values():
        values = torch.cat([s for _, s in parts]).tolist()     # the one read of this device
        it = iter(values)
        for items, _ in parts:
            for r, k, _ in items:
                out[r][k] = next(it)
    return out


class PendingScalars:
    """The values of the steps since the last read: ``add`` every step (nothing is read),
    ``read`` returns them as floats, [(step, {name: float})], and empties the queue."""

    def __init__(self):
        self.steps: list[int] = []
        self.rows: list[dict[str, Scalar]] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, values: dict[str, Scalar]) -> None:
        self.steps.append(step)
        self.rows.append(values)

    def read(self) -> list[tuple[int, dict[str, float]]]:
        read = list(zip(self.steps, read_scalars(self.rows)))
        self.steps, self.rows = [], []
        return read


# what reads a tensor's value on the host (each waits for the device on a GPU)
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
_PACKAGE = f"{os.sep}sdgdml{os.sep}"          # any checkout's package (benchmarks compare two)


def _reader(filename: str) -> str:
    """Who reads: "ours" (sdgdml), "pml" (pytorch-metric-learning) or "torch" (torch itself,
    e.g. the optimiser's step counters, which live on the host)."""
    if _PACKAGE in filename:
        return "ours"
    if "pytorch_metric_learning" in filename:
        return "pml"
    return "torch" if f"{os.sep}torch{os.sep}" in filename else "other"


@contextmanager
def count_host_reads():
    """Count the tensor-to-host reads made inside the block, by who made them (the Python
    file calling ``Tensor.item``/``tolist``/``numpy``/``cpu``/``bool``/``float``/``int``/
    ``__index__``): yields a ``Counter`` {"ours"|"pml"|"torch"|"other": n}. Reads made
    inside torch's C++ (a boolean-mask selection's size) are not seen. For tests and
    benchmarks: the methods of ``torch.Tensor`` are patched while the block runs."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name, method):
        @functools.wraps(method)
        def read(self, *args, **kwargs):
            counts[_reader(sys._getframe(1).f_code.co_filename)] += 1
            return method(self, *args, **kwargs)
        return read

    for name, method in originals.items():
        setattr(torch.Tensor, name, counted(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
