"""The random-search distributions of hyperparameters: one vocabulary for the components'
declarations and the sweep files' ``hparam_ranges``.

A component declares each hparam once: ``hp(name, default, distribution, choices=..., help=...)``
(``hparams_registry`` collects the declarations). A distribution draws a random-search value from
a ``numpy`` RandomState (``hparams_registry`` seeds one per hparam) and prints as it is written:
``log_uniform(1e-05, 0.001)``. Bounds are always the values themselves, never exponents:
``log_uniform(1e-5, 1e-3)`` draws 10 ** U(-5, -3). ``fixed()`` keeps the default (not searched).

A sweep file writes the same distributions as ``{name: [arguments]}``:
``lr: {log_uniform: [1.0e-5, 1.0e-3]}``, ``batch_size: {choice: [32, 64]}``
(:func:`from_spec`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


class Distribution:
    """A random-search distribution: ``dist(rng)`` draws a value (None: keep the default)."""

    name = ""
    args: tuple = ()

    def __call__(self, rng: np.random.RandomState) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(_fmt(a) for a in self.args)})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.args == other.args

    def __hash__(self) -> int:
        return hash((type(self), self.args))


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


class _Fixed(Distribution):
    name = "fixed"

    def __init__(self, value=None):
        self.args = () if value is None else (value,)

    def __call__(self, rng):
        return self.args[0] if self.args else None


class _Uniform(Distribution):
    name = "uniform"

    def __init__(self, lo: float, hi: float):
        self.args = (lo, hi)

    def __call__(self, rng):
        return float(rng.uniform(*self.args))


class _LogUniform(Distribution):
    name = "log_uniform"

    def __init__(self, lo: float, hi: float):
        self.args = (lo, hi)

    def __call__(self, rng):
        return float(10 ** rng.uniform(math.log10(self.args[0]), math.log10(self.args[1])))


class _Log2UniformInt(Distribution):
    name = "log2_uniform_int"

    def __init__(self, lo: int, hi: int):
        self.args = (lo, hi)

    def __call__(self, rng):
        return int(2 ** rng.uniform(math.log2(self.args[0]), math.log2(self.args[1])))


class _IntUniform(Distribution):
    name = "int_uniform"

    def __init__(self, lo: int, hi: int):
        self.args = (lo, hi)

    def __call__(self, rng):
        return int(rng.randint(self.args[0], self.args[1] + 1))


class _Choice(Distribution):
    name = "choice"

    def __init__(self, *options):
        self.args = options

    def __call__(self, rng):
        return self.args[int(rng.randint(len(self.args)))]


def fixed(value=None) -> Distribution:
    """Not searched: every sample keeps ``value`` (None: the default)."""
    return _Fixed(value)


def uniform(lo: float, hi: float) -> Distribution:
    """U(lo, hi)."""
    return _Uniform(lo, hi)


def log_uniform(lo: float, hi: float) -> Distribution:
    """Uniform in log scale between the values ``lo`` and ``hi`` (> 0): 10 ** U(log10 lo,
    log10 hi)."""
    return _LogUniform(lo, hi)


def log2_uniform_int(lo: int, hi: int) -> Distribution:
    """int(2 ** U(log2 lo, log2 hi)), e.g. batch sizes between ``lo`` and ``hi``."""
    return _Log2UniformInt(lo, hi)


def int_uniform(lo: int, hi: int) -> Distribution:
    """An integer in [lo, hi], each equally likely."""
    return _IntUniform(lo, hi)


def choice(*options) -> Distribution:
    """One of ``options``, each equally likely."""
    return _Choice(*options)


# what a sweep file may write: name -> (constructor, number of arguments or None for any)
DISTRIBUTIONS: dict[str, Callable[..., Distribution]] = {
    "uniform": uniform, "log_uniform": log_uniform, "log2_uniform_int": log2_uniform_int,
    "int_uniform": int_uniform, "choice": choice}


def describe(distribution) -> str:
    """How a declared distribution prints (``custom`` for a plain function)."""
    return repr(distribution) if isinstance(distribution, Distribution) else "custom"


def from_spec(spec) -> Distribution:
    """A sweep file's range, ``{distribution: [arguments]}``, as the distribution it names;
    ``ValueError`` saying how to write it otherwise."""
    known = " | ".join(f"{d}: [...]" for d in DISTRIBUTIONS)
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS
            and isinstance(next(iter(spec.values())), list)):
        raise ValueError(f"must be one of {{{known}}}, got {spec!r}")
    (dist, values), = spec.items()
    problem = _problem(dist, values)
    if problem:
        raise ValueError(f"({dist}: {values}) {problem}")
    return DISTRIBUTIONS[dist](*values)


def _problem(dist: str, values: list) -> str:
    """What is wrong with a distribution's arguments ('' if nothing)."""
    if dist == "choice":
        return "" if values else "needs at least one value"
    integer = dist in ("int_uniform", "log2_uniform_int")
    number = int if integer else (int, float)
    if len(values) != 2 or not all(isinstance(v, number) and not isinstance(v, bool)
                                   for v in values):
        kind = "integers" if integer else "numbers"
        hint = ("; YAML reads 1e-3 as text: write 1.0e-3" if any(isinstance(v, str)
                                                                 for v in values) else "")
        return f"needs two {kind} [low, high]{hint}"
    if values[0] > values[1]:
        return "has low > high"
    if dist in ("log_uniform", "log2_uniform_int") and values[0] <= 0:
        if dist == "log_uniform" and values[0] < 0 and values[1] < 300:   # exponents
            raw = ", ".join(f"{10.0 ** v:.2e}" for v in values)         # YAML reads these
            return (f"needs low > 0: its bounds are the values themselves, not exponents "
                    f"(for 10^{values[0]} .. 10^{values[1]} write {dist}: [{raw}])")
        return "needs low > 0 (its bounds are the values themselves, not exponents)"
    return ""
