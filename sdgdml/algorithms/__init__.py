"""Algorithm registry.

An algorithm name is either a standalone algorithm (``ALGORITHMS``) or a base metric loss
(``BASE_LOSSES``) followed by any number of ``+Wrapper`` plug-ins (``LOSS_WRAPPERS``), applied
left to right: ``ProxyAnchor``, ``ProxyAnchor+SEE``, ``SoftTriple+SEE+PFML``.
Loss-based names train with :class:`MetricLearning`. ``DEFAULT_COMPOSITIONS`` lets a bare
plug-in name stand for a documented composition (``CenterPolar`` = ``ProxyAnchor+CenterPolar``).
"""
from __future__ import annotations

from typing import Callable

from .base import (Algorithm, LossWrapper, MetricLearning, MetricLoss, Schedule,
                   UnknownAlgorithmError, nearest_class_proxy)
from .centerpolar import CenterPolar
from .pfml import PFML, PFMLPlugin
from .proxy import BASE_LOSSES
from .see import SEE
from .uem import UEM

BASE_LOSSES["PFML"] = PFML      # the paper's own loss, M learnable proxies per class

LOSS_WRAPPERS: dict[str, Callable[..., LossWrapper]] = {
    "SEE": SEE,
    "PFML": PFMLPlugin,
    "CenterPolar": CenterPolar,
}
ALGORITHMS: dict[str, type[Algorithm]] = {"UEM": UEM}
# a bare name that stands for "Base+Plugin" (the plug-in with its documented default base)
DEFAULT_COMPOSITIONS: dict[str, str] = {
    "CenterPolar": "ProxyAnchor+CenterPolar",    # README: CenterPolar section
}


def _known() -> str:
    shorthands = ", ".join(f"{k} = {v}" for k, v in DEFAULT_COMPOSITIONS.items())
    return (f"base losses: {', '.join(BASE_LOSSES)}; "
            f"plug-ins to append with '+' (e.g. ProxyAnchor+SEE): "
            f"{', '.join(LOSS_WRAPPERS) or 'none'}; "
            f"standalone: {', '.join(ALGORITHMS) or 'none'}; "
            f"shorthands: {shorthands or 'none'}")


def parse_algorithm(name: str) -> list[str]:
    """The components of an algorithm name, validated: [base, wrapper, ...]. A leading
    shorthand from ``DEFAULT_COMPOSITIONS`` is expanded first."""
    parts = [p.strip() for p in name.split("+")]
    if parts[0] in DEFAULT_COMPOSITIONS:
        parts = DEFAULT_COMPOSITIONS[parts[0]].split("+") + parts[1:]
    base, wrappers = parts[0], parts[1:]
    if base in ALGORITHMS:
        if wrappers:
            raise UnknownAlgorithmError(f"{base} is a standalone algorithm and takes no plug-ins")
    elif base not in BASE_LOSSES:
        hint = (f" ({base} is a plug-in: put a base loss first, e.g. ProxyAnchor+{base})"
                if base in LOSS_WRAPPERS else "")
        raise UnknownAlgorithmError(f"unknown algorithm {name!r}{hint}; known {_known()}")
    for w in wrappers:
        if w not in LOSS_WRAPPERS:
            raise UnknownAlgorithmError(
                f"unknown plug-in {w!r} in {name!r}; known {_known()}")
    if len(set(parts)) != len(parts):
        raise UnknownAlgorithmError(f"a component appears twice in {name!r}")
    return parts


def algorithm_class(name: str) -> type[Algorithm]:
    """The class that trains ``name`` (to read USES_LABELS / TRANSDUCTIVE before building)."""
    base = parse_algorithm(name)[0]
    return ALGORITHMS.get(base, MetricLearning)


def create_loss(name: str, num_classes: int, embed_dim: int, hparams: dict) -> MetricLoss:
    base, *wrappers = parse_algorithm(name)
    loss = BASE_LOSSES[base](num_classes, embed_dim, hparams)
    for w in wrappers:
        loss = LOSS_WRAPPERS[w](loss, num_classes, embed_dim, hparams)
    return loss


def create_algorithm(name: str, network, num_classes: int, hparams: dict,
                     schedule: Schedule) -> Algorithm:
    """Build the algorithm ``name`` around ``network`` (timm-style factory)."""
    base = parse_algorithm(name)[0]
    if base in ALGORITHMS:
        return ALGORITHMS[base](network, num_classes, hparams, schedule)
    loss = create_loss(name, num_classes, hparams["embed_dim"], hparams)
    return MetricLearning(network, num_classes, hparams, schedule, loss)


__all__ = ["ALGORITHMS", "BASE_LOSSES", "DEFAULT_COMPOSITIONS", "LOSS_WRAPPERS", "Algorithm",
           "LossWrapper", "MetricLearning", "MetricLoss", "Schedule", "UnknownAlgorithmError",
           "algorithm_class", "create_algorithm", "create_loss",
           "nearest_class_proxy", "parse_algorithm"]
