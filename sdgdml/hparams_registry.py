"""Hyperparameters: defaults and seeded random-search samples per (algorithm, dataset).

Each component declares its own hparams in its file (``declare_hparams``; the distributions
are ``sdgdml.search_space``'s); this module adds the network and optimisation hparams every run
has, and those of how the components are trained (``Algorithm.declare_training_hparams``).
A random sample draws each hparam from its own RNG seeded by a hash of (algorithm, dataset,
hparams_seed, name): adding an hparam never changes the others, and two algorithms'
same-named hparams are not tied (DomainBed's hash left the algorithm out).
``hparams_seed == 0`` means the defaults. A JSON ``--hparams`` override is applied last.

Names of component hparams carry their component's prefix (``pa_``, ``st_``, ...), so that
compositions such as ``SoftTriple+SEE+PFML`` never collide.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np

from .algorithms import algorithm_class, components
from .search_space import Declare, fixed, log2_uniform_int, log_uniform

SMALL_IMAGE_DATASETS = {"DigitsDG"}


class UnknownHparamError(ValueError):
    pass


def seed_hash(*args) -> int:
    """A stable 31-bit integer from any printable arguments."""
    return int(hashlib.md5(repr(args).encode()).hexdigest(), 16) % (2 ** 31)


def _common(hp: Declare, small: bool, sampler: str) -> None:
    """Network and optimisation, shared by every algorithm."""
    hp("backbone", "digits_cnn" if small else "resnet50.tv_in1k", fixed())
    hp("pretrained", not small, fixed())
    hp("embed_dim", 64 if small else 512, fixed())
    hp("freeze_bn", not small, fixed())
    hp("freeze_bn_affine", False, fixed())      # BN weight/bias never train (ProxyAnchor's)
    hp("pooling", "avg", fixed())               # or "avg+max": GAP + GMP (ProxyAnchor's head)
    # embedding head: "linear" (features -> Linear -> L2) is the DML default (ProxyAnchor's
    # official head); "layernorm" puts a LayerNorm without affine weights before the Linear
    # (SEE's released ViT head, --use_lastnorm)
    hp("head", "linear", fixed())
    # Linear init: "kaiming" (normal, fan_out: ProxyAnchor's official code) or "orthogonal"
    # (SEE's released code)
    hp("embed_init", "kaiming", fixed())
    hp("freeze_patch_embed", False, fixed())    # a ViT's patch embedding never trains (SEE's)
    hp("image_size", 32 if small else 224, fixed())
    hp("normalization", "imagenet", fixed())    # or "timm": the backbone's data config
    hp("optimizer", "adamw", fixed())
    hp("lr_schedule", "cosine", fixed())
    hp("lr", 1e-3 if small else 1e-4, log_uniform(-3.5, -2.5) if small else log_uniform(-5, -3.5))
    hp("weight_decay", 1e-4, log_uniform(-6, -3))
    hp("batch_size", 64, log2_uniform_int(5, 7))
    hp("sampler", sampler, fixed())
    hp("samples_per_class", 4, fixed())


def _space(algorithm: str, dataset: str) -> dict[str, tuple[Any, Callable]]:
    """name -> (default, random_fn) for every hparam of ``algorithm`` on ``dataset``."""
    space: dict[str, tuple[Any, Callable]] = {}

    def hp(name, default, random_fn):
        if name in space:
            raise KeyError(f"hparam {name!r} is declared twice for {algorithm}")
        space[name] = (default, random_fn)

    small = dataset in SMALL_IMAGE_DATASETS
    parts = components(algorithm)
    _common(hp, small, parts[0].cls.SAMPLER)
    cls = algorithm_class(algorithm)
    for name, value in getattr(cls, "recipe", lambda small: {})(small).items():
        space[name] = (value, fixed())    # a standalone method's published training recipe
    cls.declare_training_hparams(hp, small, parts[0].cls)
    for c in parts:
        c.declare_hparams(hp, small)
    return space


def default_hparams(algorithm: str, dataset: str) -> dict[str, Any]:
    return {k: d for k, (d, _) in _space(algorithm, dataset).items()}


def random_hparams(algorithm: str, dataset: str, seed: int) -> dict[str, Any]:
    out = {}
    for name, (default, random_fn) in _space(algorithm, dataset).items():
        value = random_fn(np.random.RandomState(seed_hash(algorithm, dataset, seed, name)))
        out[name] = default if value is None else value
    return out


def get_hparams(algorithm: str, dataset: str, hparams_seed: int = 0,
                overrides: dict | None = None) -> dict[str, Any]:
    """Defaults (seed 0) or a random sample, then ``overrides`` (unknown names are an error)."""
    hparams = (default_hparams(algorithm, dataset) if hparams_seed == 0
               else random_hparams(algorithm, dataset, hparams_seed))
    for k, v in (overrides or {}).items():
        if k not in hparams:
            raise UnknownHparamError(f"unknown hparam {k!r} for {algorithm} on {dataset}; "
                           f"known: {', '.join(sorted(hparams))}")
        hparams[k] = v
    return hparams
