"""How a component declares its hyperparameters: ``declare(name, default, sample)`` once per
hparam, where ``sample(rng)`` draws a random-search value from a ``numpy`` RandomState
(``hparams_registry`` seeds one RNG per hparam). The distributions below are the ones the
registry's components use; a sampler returning None keeps the default."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

Sampler = Callable[[np.random.RandomState], Any]
Declare = Callable[[str, Any, Sampler], None]


def fixed(value=None) -> Sampler:
    """Not searched: every sample keeps ``value`` (None: the default)."""
    return lambda r: value


def uniform(lo: float, hi: float) -> Sampler:
    return lambda r: float(r.uniform(lo, hi))


def log_uniform(lo: float, hi: float) -> Sampler:
    """10 ** U(lo, hi)."""
    return lambda r: float(10 ** r.uniform(lo, hi))


def log2_uniform_int(lo: float, hi: float) -> Sampler:
    """int(2 ** U(lo, hi)), e.g. batch sizes."""
    return lambda r: int(2 ** r.uniform(lo, hi))


def choice(*options) -> Sampler:
    return lambda r: options[int(r.randint(len(options)))]
