"""Hyperparameters: their declarations, and the one path that resolves a run's values.

Each component declares its own hparams in its file (``declare_hparams(hp, small)``; the
distributions are ``sdgdml.search_space``'s); this module adds the network and optimisation
hparams every run has, and those of how the components are trained
(``Algorithm.declare_training_hparams``). A declaration is
``hp(name, default, distribution, choices=(...), help="one line")``:
:func:`hparam_specs` returns them as :class:`HparamSpec`.

A run's values come from, each source overriding the one before (:func:`resolve_hparams`):

1. ``default``: the declared default, or with ``hparams_seed > 0`` a random-search draw
   (``search``) from the declared distribution;
2. ``<Algorithm>.recipe``: the algorithm's own published recipe (``Algorithm.recipe``); its
   values are not searched;
3. ``--recipe <name>``: a named recipe (``sdgdml.recipes``); a key that applies to none of the
   algorithm's hparams is reported (``Resolution.ignored``), not applied;
4. ``sweep``: a sweep's fixed values and the values drawn from its ranges (``--sweep_hparams``);
5. ``--hparams``: the user's JSON overrides;
6. several processes: ``lr`` times the ``--lr_scaling`` factor.

The origin of every value is returned with it, written to the run's ``hparam_origins.json``,
its records and its log.

A random draw uses an RNG of its own per hparam, seeded by a hash of (algorithm, dataset,
hparams_seed, name): adding an hparam never changes the others, and two algorithms'
same-named hparams are not tied (DomainBed's hash left the algorithm out). Names of component
hparams carry their component's prefix (``pa_``, ``st_``, ...), so that compositions such as
``SoftTriple+SEE+PFML`` never collide.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import recipes
from .algorithms import algorithm_class, components
from .algorithms.base import LR_SCHEDULES, OPTIMIZERS
from .datasets.samplers import MODES as BATCH_SAMPLERS
from .datasets.transforms import NORMALIZATIONS
from .networks import EMBED_INITS, HEADS, POOLINGS, backbone_names
from .search_space import describe, fixed, log2_uniform_int, log_uniform
from .suggest import did_you_mean
from .validation import InvalidValueError, check_hparams

SMALL_IMAGE_DATASETS = {"DigitsDG", "GlyphsDG"}
DEFAULT, SEARCH, SWEEP, OVERRIDE = "default", "search", "sweep", "--hparams"


class UnknownHparamError(ValueError):
    pass


@dataclass(frozen=True)
class HparamSpec:
    """One declared hparam: ``default`` (after the algorithm's own recipe), its random-search
    ``distribution`` (printed by ``sampler``), the ``choices`` it may take (None: any value of
    the default's kind), a one-line ``help``, and the ``origin`` of the default."""

    name: str
    default: Any
    distribution: Any
    help: str = ""
    origin: str = DEFAULT
    choices_from: tuple | Callable[[], tuple] | None = field(default=None, repr=False)

    @property
    def choices(self) -> tuple | None:
        """The allowed values (a long list such as the backbones is read when asked for)."""
        c = self.choices_from
        return tuple(c()) if callable(c) else c

    @property
    def sampler(self) -> str:
        """The distribution as printed, e.g. ``log_uniform(1e-05, 0.001)``."""
        return describe(self.distribution)


def seed_hash(*args) -> int:
    """A stable 31-bit integer from any printable arguments."""
    return int(hashlib.md5(repr(args).encode()).hexdigest(), 16) % (2 ** 31)


def _common(hp, small: bool, batch_sampler: str) -> None:
    """Network and optimisation, shared by every algorithm."""
    hp("backbone", "digits_cnn" if small else "resnet50.tv_in1k", fixed(), choices=backbone_names,
       help="feature extractor: ours (digits_cnn) or any timm model name")
    hp("pretrained", not small, fixed(), help="start from the backbone's published weights")
    hp("embed_dim", 64 if small else 512, fixed(), help="size of the embedding (linear head)")
    hp("freeze_bn", not small, fixed(), help="backbone BatchNorm layers stay in eval mode")
    hp("freeze_bn_affine", False, fixed(),
       help="backbone BatchNorm weight/bias never train (ProxyAnchor's bn_freeze)")
    hp("pooling", "avg", fixed(), choices=POOLINGS,
       help="global pooling before the head; avg+max: GAP + GMP (ProxyAnchor's head)")
    hp("head", "linear", fixed(), choices=HEADS,
       help="embedding head: linear (features -> Linear -> L2; ProxyAnchor's) or layernorm "
            "(LayerNorm without affine weights first; SEE's released ViT head)")
    hp("embed_init", "kaiming", fixed(), choices=EMBED_INITS,
       help="init of the head's Linear: kaiming (fan_out; ProxyAnchor's) or orthogonal (SEE's)")
    hp("freeze_patch_embed", False, fixed(),
       help="a ViT's patch embedding never trains (SEE's released code)")
    hp("image_size", 32 if small else 224, fixed(), help="training/evaluation crop size")
    hp("normalization", "imagenet", fixed(), choices=NORMALIZATIONS,
       help="input mean/std and eval crop: ImageNet's, or the backbone's timm data config")
    hp("optimizer", "adamw", fixed(), choices=OPTIMIZERS, help="optimiser of every group")
    hp("lr_schedule", "cosine", fixed(), choices=LR_SCHEDULES,
       help="learning-rate schedule over the run")
    hp("lr", 1e-3 if small else 1e-4,
       log_uniform(10 ** -3.5, 10 ** -2.5) if small else log_uniform(1e-5, 10 ** -3.5),
       help="learning rate of the backbone and head")
    hp("weight_decay", 1e-4, log_uniform(1e-6, 1e-3), help="weight decay of the optimiser")
    hp("batch_size", 64, log2_uniform_int(32, 128), help="training images per step (per process)")
    hp("sampler", batch_sampler, fixed(), choices=BATCH_SAMPLERS,
       help="batch sampler: random, or m_per_class (class-balanced, pair losses)")
    hp("samples_per_class", 4, fixed(), help="images per class in an m_per_class batch")


def _declared(algorithm: str, dataset: str) -> dict[str, HparamSpec]:
    specs: dict[str, HparamSpec] = {}

    def hp(name, default, distribution, choices=None, help=""):
        if name in specs:
            raise KeyError(f"hparam {name!r} is declared twice for {algorithm}")
        specs[name] = HparamSpec(name, default, distribution, help, DEFAULT, choices)

    small = dataset in SMALL_IMAGE_DATASETS
    parts = components(algorithm)
    _common(hp, small, parts[0].cls.SAMPLER)
    cls = algorithm_class(algorithm)
    cls.declare_training_hparams(hp, small, parts[0].cls)
    for c in parts:
        c.declare_hparams(hp, small)
    return specs


def hparam_specs(algorithm: str, dataset: str) -> dict[str, HparamSpec]:
    """name -> :class:`HparamSpec` of every hparam of ``algorithm`` on ``dataset``, in
    declaration order; the algorithm's own recipe (``Algorithm.recipe``) already applied to
    the defaults (those are fixed, their origin ``<Algorithm>.recipe``)."""
    specs = _declared(algorithm, dataset)
    cls = algorithm_class(algorithm)
    for name, value in cls.recipe(dataset in SMALL_IMAGE_DATASETS).items():
        if name not in specs:
            raise KeyError(f"{cls.__name__}.recipe sets {name!r}, which is not declared")
        specs[name] = HparamSpec(name, value, fixed(), specs[name].help,
                                 f"{cls.__name__}.recipe", specs[name].choices_from)
    return specs


def default_hparams(algorithm: str, dataset: str) -> dict[str, Any]:
    return {k: s.default for k, s in hparam_specs(algorithm, dataset).items()}


def _draw(spec: HparamSpec, algorithm: str, dataset: str, seed: int):
    return spec.distribution(np.random.RandomState(seed_hash(algorithm, dataset, seed,
                                                             spec.name)))


def random_hparams(algorithm: str, dataset: str, seed: int) -> dict[str, Any]:
    out = {}
    for name, spec in hparam_specs(algorithm, dataset).items():
        value = _draw(spec, algorithm, dataset, seed)
        out[name] = spec.default if value is None else value
    return out


@dataclass
class Resolution:
    """A run's hparam ``values``, the ``origins`` of each (module doc), and the ``ignored``
    keys of ``--recipe`` that apply to none of the algorithm's hparams."""

    values: dict[str, Any]
    origins: dict[str, str]
    ignored: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):                     # values, origins = resolve_hparams(...)
        return iter((self.values, self.origins))

    def by_origin(self) -> dict[str, list[str]]:
        """origin -> the hparams it set, for the log (declared defaults left out)."""
        out: dict[str, list[str]] = {}
        for name, origin in self.origins.items():
            if origin != DEFAULT:
                out.setdefault(origin, []).append(name)
        return out


def resolve_hparams(algorithm: str, dataset: str, hparams_seed: int = 0,
                    recipe: str | None = None, sweep: dict | None = None,
                    overrides: dict | None = None, lr_scale: float = 1,
                    world_size: int = 1) -> Resolution:
    """The run's values through every source in order (module doc), on ``world_size``
    processes (a recipe's global batch is shared by them, unless the sweep or ``overrides``
    set ``batch_size``: that is per process, as always). Each given source is checked (names
    with a did-you-mean, kinds, ranges and choices: ``validation.check_hparams``) before
    anything exists."""
    specs = hparam_specs(algorithm, dataset)
    values = {k: s.default for k, s in specs.items()}
    origins = {k: s.origin for k, s in specs.items()}
    if hparams_seed > 0:
        for name, spec in specs.items():
            drawn = _draw(spec, algorithm, dataset, hparams_seed)
            if drawn is not None:
                values[name], origins[name] = drawn, f"{SEARCH} (hparams_seed {hparams_seed})"
    given = _recipe_values(recipe, dataset, "batch_size" in {**(sweep or {}), **(overrides or {})},
                           lr_scale, world_size)
    ignored = {k: v for k, v in given.items() if k not in specs}
    for origin, source in ((f"--recipe {recipe}", {k: v for k, v in given.items()
                                                  if k in specs}),
                           (SWEEP, sweep or {}), (OVERRIDE, overrides or {})):
        _check_source(algorithm, dataset, specs, origin, source)
        for name, value in source.items():
            values[name], origins[name] = value, origin
    if lr_scale != 1 and "lr" in values:
        values["lr"] *= lr_scale
        origins["lr"] += f", x{lr_scale:g} for several processes"
    return Resolution(values, origins, ignored)


def _recipe_values(recipe: str | None, dataset: str, batch_given: bool, lr_scale: float,
                   world_size: int) -> dict:
    """``--recipe``'s values, its global batch shared by the processes (none when a later
    source sets ``batch_size``)."""
    spec = recipes.RECIPES[recipe] if recipe else None
    if spec is None or spec.global_batch_size is None or batch_given:
        return recipes.recipe_hparams(recipe, dataset, world_size=None)
    if lr_scale != 1:
        raise InvalidValueError(f"recipe {recipe} keeps its global batch of "
                                f"{spec.global_batch_size} on any number of processes: "
                                f"--lr_scaling linear has nothing to scale (use none)")
    return recipes.recipe_hparams(recipe, dataset, world_size)


def _check_source(algorithm: str, dataset: str, specs: dict[str, HparamSpec], origin: str,
                  given: dict) -> None:
    for name in given:
        if name not in specs:
            raise UnknownHparamError(
                f"unknown hparam {name!r} ({origin}) for {algorithm} on {dataset}"
                f"{did_you_mean(name, specs)}; known: {', '.join(sorted(specs))}")
    check_hparams(given, {k: specs[k].default for k in given},
                  {k: specs[k].choices for k in given if specs[k].choices_from is not None})


def get_hparams(algorithm: str, dataset: str, hparams_seed: int = 0,
                overrides: dict | None = None) -> dict[str, Any]:
    """Defaults (seed 0) or a random sample, then ``overrides`` (unknown names are an error):
    :func:`resolve_hparams`'s values."""
    return resolve_hparams(algorithm, dataset, hparams_seed, overrides=overrides).values
