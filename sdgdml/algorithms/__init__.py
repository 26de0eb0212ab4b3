"""Algorithm registry: importing this package imports every module in it, and each module
registers its components (``registry.register_loss`` / ``register_plugin`` /
``register_algorithm``). Adding a loss, a plug-in or an algorithm is one new file here.

An algorithm name is a standalone algorithm, or a base loss followed by ``+Plugin``s applied
left to right (``ProxyAnchor``, ``ProxyAnchor+SEE``, ``SoftTriple+SEE+PFML``), trained by
:class:`MetricLearning`; a plug-in registered with a default base also stands alone
(``CenterPolar`` = ``ProxyAnchor+CenterPolar``).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Algorithm, EvalContext, MetricLoss, Plugin, Schedule, frozen, step_scalars
from .metric_learning import MetricLearning
from .tensor_ops import nearest_class_proxy
from .registry import (DataNeeds, UnknownAlgorithmError, components, known_components,
                       names, parse_algorithm, proxy_losses, register_algorithm, register_loss,
                       register_plugin)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def algorithm_class(name: str) -> type[Algorithm]:
    """The class that trains ``name`` (to read its ``NEEDS`` before building)."""
    head = components(name)[0]
    return head.cls if head.kind == "algorithm" else MetricLearning


def data_needs(name: str) -> DataNeeds:
    """What ``name`` needs from the data: its algorithm's needs and every component's."""
    needs = algorithm_class(name).NEEDS
    for c in components(name):
        needs = needs | c.cls.NEEDS
    return needs


def create_loss(name: str, num_classes: int, embed_dim: int, hparams: dict) -> MetricLoss:
    base, *plugins = components(name)
    loss = base.cls(num_classes, embed_dim, hparams)
    for p in plugins:
        loss = p.cls(loss, num_classes, embed_dim, hparams)
    return loss


def create_algorithm(name: str, network, num_classes: int, hparams: dict,
                     schedule: Schedule, domain_sizes: dict[str, int] | None = None
                     ) -> Algorithm:
    """Build the algorithm ``name`` around ``network`` (timm-style factory)."""
    head = components(name)[0]
    if head.kind == "algorithm":
        return head.cls(network, num_classes, hparams, schedule, domain_sizes)
    loss = create_loss(name, num_classes, hparams["embed_dim"], hparams)
    return MetricLearning(network, num_classes, hparams, schedule, loss, domain_sizes)


__all__ = ["Algorithm", "DataNeeds", "EvalContext", "MetricLearning", "Plugin",
           "MetricLoss", "Schedule", "UnknownAlgorithmError", "algorithm_class", "components",
           "create_algorithm", "create_loss", "data_needs", "frozen", "known_components",
           "names", "nearest_class_proxy", "parse_algorithm", "proxy_losses", "register_algorithm",
           "register_loss", "register_plugin", "step_scalars"]
