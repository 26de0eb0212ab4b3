"""The component registry: every base loss, plug-in and standalone algorithm declares itself in
its own file with a decorator (timm's ``register_model`` style), and importing
``sdgdml.algorithms`` imports every module of the package, so everything registers itself.

    @register_loss("ProxyAnchor")
    class ProxyAnchor(PMLProxyLoss):
        @staticmethod
        def declare_hparams(hp, small): hp("pa_margin", 0.1, uniform(0.0, 0.3)); ...

A name is a standalone algorithm, or a base loss followed by ``+Plugin``s applied left to
right (``SoftTriple+SEE+PFML``). A plug-in registered with ``default_base`` also stands alone:
``CenterPolar`` means ``ProxyAnchor+CenterPolar``. Every message listing known components is
generated from here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

from ..suggest import did_you_mean

KINDS = ("loss", "plugin", "algorithm")


class UnknownAlgorithmError(ValueError):
    """An algorithm name, or a composition of components, that cannot be built."""


@dataclass(frozen=True)
class DataNeeds:
    """What a method needs from the data; the trainer builds the matching streams.

    - ``labels``: training batches carry class labels ``y`` (False: unsupervised);
    - ``indices``: batches carry each image's index in its domain's training view (``index``,
      and ``unlabeled_index`` per target), for per-sample state such as memory banks; the
      method is then built with ``domain_sizes`` = {domain: number of training images};
    - ``unlabeled_targets``: batches carry unlabeled images of every target domain
      (``unlabeled``: {domain: images}) (transductive methods).
    """

    labels: bool = True
    indices: bool = False
    unlabeled_targets: bool = False

    def __or__(self, other: "DataNeeds") -> "DataNeeds":
        """Needs of a composition: labels only if every part trains on labels, the rest if any
        part needs it."""
        return DataNeeds(self.labels and other.labels, self.indices or other.indices,
                         self.unlabeled_targets or other.unlabeled_targets)

    def describe(self) -> str:
        return ", ".join(f.name for f in fields(self) if getattr(self, f.name)) or "nothing"


@dataclass(frozen=True)
class Component:
    name: str
    kind: str                   # one of KINDS
    cls: type
    default_base: str | None    # plug-ins that also stand alone: the base they get

    def declare_hparams(self, hp, small: bool) -> None:
        self.cls.declare_hparams(hp, small)


_REGISTRY: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}


def _register(kind: str, name: str | None, default_base: str | None = None) -> Callable:
    def decorate(cls: type) -> type:
        key = name or cls.__name__
        if key in _REGISTRY[kind]:
            raise ValueError(f"a {kind} named {key!r} is registered twice "
                             f"({_REGISTRY[kind][key].cls.__module__} and {cls.__module__})")
        _REGISTRY[kind][key] = Component(key, kind, cls, default_base)
        return cls
    return decorate


def register_loss(name: str | None = None) -> Callable:
    """Register a :class:`MetricLoss` subclass as a base loss (``Base`` or ``Base+Plugin``)."""
    return _register("loss", name)


def register_plugin(name: str | None = None, default_base: str | None = None) -> Callable:
    """Register a :class:`Plugin` subclass as a plug-in (``Base+Name``); with
    ``default_base``, the bare name stands for ``default_base+Name``."""
    return _register("plugin", name, default_base)


def register_algorithm(name: str | None = None) -> Callable:
    """Register an :class:`Algorithm` subclass that trains alone (takes no plug-ins)."""
    return _register("algorithm", name)


def unregister(kind: str, name: str) -> None:
    """Remove a component (for tests that register toy components)."""
    _REGISTRY[kind].pop(name, None)


def names(kind: str) -> list[str]:
    return list(_REGISTRY[kind])


def component(kind: str, name: str) -> Component:
    return _REGISTRY[kind][name]


def known_components() -> str:
    """The registered names, for error messages."""
    shorthands = [f"{c.name} = {c.default_base}+{c.name}" for c in _REGISTRY["plugin"].values()
                  if c.default_base]
    return (f"base losses: {', '.join(names('loss'))}; "
            f"plug-ins to append with '+' (e.g. ProxyAnchor+SEE): "
            f"{', '.join(names('plugin')) or 'none'}; "
            f"standalone: {', '.join(names('algorithm')) or 'none'}; "
            f"shorthands: {', '.join(shorthands) or 'none'}")


def proxy_losses() -> list[str]:
    """The registered base losses that have proxies (what proxy-based plug-ins wrap)."""
    return [n for n, c in _REGISTRY["loss"].items() if c.cls.HAS_PROXIES]


def _expand_shorthand(parts: list[str]) -> list[str]:
    head = _REGISTRY["plugin"].get(parts[0])
    if parts[0] not in _REGISTRY["loss"] and head is not None and head.default_base:
        return [head.default_base, parts[0], *parts[1:]]
    return parts


def parse_algorithm(name: str) -> list[str]:
    """The component names of an algorithm name, validated and with a shorthand expanded:
    [base or algorithm, plug-in, ...]."""
    return [c.name for c in components(name)]


def components(name: str) -> list[Component]:
    """The components of an algorithm name, validated: [base or algorithm, plug-in, ...]."""
    parts = _expand_shorthand([p.strip() for p in name.split("+")])
    base, plugins = parts[0], parts[1:]
    if base in _REGISTRY["algorithm"]:
        if plugins:
            raise UnknownAlgorithmError(f"{base} is a standalone algorithm and takes no plug-ins")
        return [_REGISTRY["algorithm"][base]]
    if base not in _REGISTRY["loss"]:
        hint = (f" ({base} is a plug-in: put a base loss first, e.g. ProxyAnchor+{base})"
                if base in _REGISTRY["plugin"] else "")
        hint = hint or did_you_mean(base, [*_REGISTRY["loss"], *_REGISTRY["algorithm"],
                                           *(n for n, c in _REGISTRY["plugin"].items()
                                             if c.default_base)])
        raise UnknownAlgorithmError(f"unknown algorithm {name!r}{hint}; known "
                                    f"{known_components()}")
    for p in plugins:
        if p not in _REGISTRY["plugin"]:
            raise UnknownAlgorithmError(f"unknown plug-in {p!r} in {name!r}"
                                        f"{did_you_mean(p, _REGISTRY['plugin'])}; known "
                                        f"{known_components()}")
    if len(set(parts)) != len(parts):
        raise UnknownAlgorithmError(f"a component appears twice in {name!r}")
    return [_REGISTRY["loss"][base]] + [_REGISTRY["plugin"][p] for p in plugins]
