"""The algorithm interface (DomainBed style) and the metric-loss interface.

An :class:`Algorithm` owns its network, losses, optimizers and schedulers. The trainer
(``sdgdml.train``) knows it only through this interface:

- ``NEEDS`` (:class:`DataNeeds`): the data streams it trains on; the trainer builds them and
  calls ``train_step(batch)`` with a dict: ``x`` source images; ``y`` labels (``needs.labels``);
  ``index`` the images' indices in the source view (``needs.indices``); ``unlabeled``
  {domain: images} and ``unlabeled_index`` {domain: indices} (``needs.unlabeled_targets``);
- ``update(batch) -> dict[str, Tensor | float]``: one optimisation step, the scalars to log
  as 0-dim tensors left on the device (or numbers the host knows): nothing in a step reads a
  tensor back to the host (``sdgdml.scalars``; the trainer reads them in batches, and
  :func:`step_scalars` reads one step's, for tests);
- stages: ``stage_at(step)`` names the stage of a step; ``train_step`` calls
  ``enter_stage(name)`` (snapshot or freeze modules there) when it changes. The stage is saved
  in ``state_dict``, so a run killed in stage 2 resumes in stage 2;
- ``embed(x)``: L2-normalised embeddings (no grad, eval mode);
- ``declare_hparams`` / ``declare_training_hparams`` / ``recipe`` (classmethods): the hparams
  it reads (``hparams_registry``); it reads no other name and gives none a fallback;
- ``check_options(options, hparams)`` (a classmethod): refuse run options the method cannot
  serve, before the run folder or any model exists;
  ``extra_metrics(ctx)``: method-specific metrics recorded with every checkpoint;
- ``state_dict()`` / ``load_state_dict()``: modules (network, proxies, memories, frozen
  copies), optimizers, schedulers, step and stage, so that a run resumes exactly.

A :class:`MetricLoss` maps (embeddings, labels) to a scalar and exposes its proxies uniformly
(``proxies()``) so that plug-ins (:class:`Plugin`) can extend any proxy baseline. A plug-in
may also create extra training images (``expand_inputs``), see :class:`MetricLoss`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from ..scalars import read_scalars
from ..speed import Precision
from .registry import DataNeeds


@dataclass(frozen=True)
class Schedule:
    """Length of the run: ``total_steps`` optimisation steps, ``steps_per_epoch`` per epoch."""

    total_steps: int
    steps_per_epoch: int

    @property
    def total_epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch


@dataclass
class EvalContext:
    """What ``extra_metrics`` may use: the source training split, a function embedding any
    split with the evaluation transform, and the run's options (its parsed arguments)."""

    train_split: Any
    embed_split: Callable[[Any], np.ndarray]
    options: Any


def step_scalars(values: dict) -> dict[str, float]:
    """One step's logged values (``update``'s, ``raw_terms``) as floats, read in one transfer."""
    return read_scalars([values])[0]


@contextmanager
def frozen(network: nn.Module):
    """The network as an input-space plug-in may use it: eval mode (BatchNorm uses and keeps its
    running statistics), parameters without gradients, autograd on (gradients flow to the
    inputs only). Modes and ``requires_grad`` flags are restored afterwards."""
    params = list(network.parameters())
    flags, was_training = [p.requires_grad for p in params], network.training
    network.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield network
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        network.train(was_training)


class MetricLoss(nn.Module):
    """A loss on L2-normalised embeddings ``z`` (B, d) and integer labels ``y`` (B,).

    Declared with ``@register_loss``; ``declare_hparams(hp, small)`` declares its hparams
    (``sdgdml.search_space``); ``HAS_PROXIES`` says whether ``proxies()`` returns proxies;
    ``SAMPLER`` is the batch sampler it needs by default.

    A forward stores named components for logging in ``raw_terms`` as detached tensors (or
    floats the host knows): converting them to Python floats would make the step wait for the
    device. The trainer reads them in batches; ``terms`` reads them at once (tests).
    """

    HAS_PROXIES = False
    SAMPLER = "random"      # or "m_per_class" (class-balanced batches, pair-based losses)
    NEEDS = DataNeeds()
    MULTI_PROCESS = True    # False: keeps per-process state that the gathered batch would mix
    SINGLE_PROCESS_REASON = ""      # with MULTI_PROCESS False: why, in one line
    # forward(z, y, split=n) gives the losses (2,) of rows [:n] and [n:] as two batches in one
    # pass (fewer operators for a plug-in that scores the batch and synthetic embeddings)
    SPLITS = False
    # why its own forward runs eager under ``--compile`` (one line); "": it compiles without
    # recompiles after warm-up (``Algorithm.compile_parts``)
    EAGER_REASON = ""

    @classmethod
    def check_hparams(cls, hparams: dict) -> None:
        """Raise ValueError for hparams the loss cannot be built with (called before the
        run folder exists)."""

    def __init__(self):
        super().__init__()
        self.raw_terms: dict[str, torch.Tensor | float] = {}

    @staticmethod
    def declare_hparams(hp, small: bool) -> None:
        """Declare this component's hparams: ``hp(name, default, distribution, choices=...,
        help=...)`` (``hparams_registry``)."""

    @property
    def terms(self) -> dict[str, float]:
        return step_scalars(self.raw_terms)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def proxies(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(P, d) L2-normalised proxies (differentiable) and their (P,) class labels; None for
        proxy-free losses."""
        return None

    def set_progress(self, epoch: float, total_epochs: float) -> None:
        """Called before every step (curricula and schedules inside losses)."""

    def expand_inputs(self, x: torch.Tensor, y: torch.Tensor, network: nn.Module
                      ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Extra training images and their labels made from the batch (x, y), or None.

        Called before the step's forward pass with ``network`` under :func:`frozen`: eval
        mode, parameters without gradients, autograd on, so a plug-in can run forward and
        backward passes to the images (e.g. adversarial ascent). The images returned are
        detached and appended to the batch: the step's forward embeds ``cat([x, x_extra])``
        in train mode, and ``forward`` receives the embeddings of both, real ones first."""
        return None

    def bare(self) -> "MetricLoss":
        """The base loss without plug-ins: what synthetic embeddings are scored with (SEE's
        L_SEE, CenterPolar's expanded samples), so that stacked plug-ins neither expand samples
        twice nor feed synthetic ones into another plug-in's state."""
        return self


class Plugin(MetricLoss):
    """A plug-in around a base loss (``Base+Plugin`` names), declared with
    ``@register_plugin``. Delegates proxies, progress and input expansion to the base."""

    def __init__(self, base: MetricLoss):
        super().__init__()
        self.base = base

    def proxies(self):
        return self.base.proxies()

    def bare(self) -> MetricLoss:
        return self.base.bare()

    def set_progress(self, epoch: float, total_epochs: float) -> None:
        self.base.set_progress(epoch, total_epochs)

    def expand_inputs(self, x, y, network):
        return self.base.expand_inputs(x, y, network)

    def base_and_bare(self, z, y, zs, ys) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """The base loss of the batch (z, y) with the base's logged terms, and the bare base
        loss of synthetic embeddings (zs, ys) as a batch of their own: one pass when the base
        is bare and ``SPLITS``, else two calls."""
        bare = self.base.bare()
        if self.base is bare and bare.SPLITS:
            both = bare(torch.cat([z, zs]), torch.cat([y, ys]), split=len(z))
            return both[0], dict(bare.raw_terms), both[1]
        loss = self.base(z, y)
        terms = dict(self.base.raw_terms)
        return loss, terms, bare(zs, ys)


LossWrapper = Plugin     # the former name, while branches written against it are merged


class Algorithm(nn.Module):
    """Base of every algorithm. Subclasses build ``self.optimizers`` / ``self.schedulers``.
    ``domain_sizes`` ({domain: training images}) is given when ``NEEDS.indices``."""

    NEEDS = DataNeeds()
    SAMPLER = "random"
    # trains exactly across processes (``distributed``): its update computes the batch loss
    # on ``gather``'s global batch and keeps no per-process state
    MULTI_PROCESS = False
    # state-dict prefixes of state created on first use or resized during training (a resumed
    # checkpoint may hold it in other shapes than the fresh model; ``load_state_dict`` rebuilds it)
    LAZY_STATE: tuple[str, ...] = ()
    # why not, in the one-line refusal of a several-process run (``train``)
    SINGLE_PROCESS_REASON = "it keeps per-process state"
    # why its update's own computation runs eager under ``--compile`` (one line); "": none
    EAGER_REASON = ""

    def __init__(self, network: nn.Module, num_classes: int, hparams: dict, schedule: Schedule,
                 domain_sizes: dict[str, int] | None = None):
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self.hparams = hparams
        self.schedule = schedule
        self.domain_sizes = domain_sizes or {}
        self.step = 0
        self.stage: str | None = None     # entered by the first train_step
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.precision = Precision()      # fp32, one process; set by ``speed.configure``

    @staticmethod
    def declare_hparams(hp, small: bool) -> None:
        """A standalone algorithm's own hparams: ``hp(name, default, distribution, choices=...,
        help=...)`` (``hparams_registry``)."""

    @classmethod
    def recipe(cls, small: bool) -> dict:
        """This method's own published training recipe: values of declared hparams (the
        common ones included) that replace their defaults and are not searched
        (``hparams_registry.resolve_hparams``, source 2); {}: none."""
        return {}

    @classmethod
    def declare_training_hparams(cls, hp, small: bool, base: type) -> None:
        """Hparams of how this class trains the component ``base`` (proxy learning rate,
        warm-up...); standalone algorithms declare everything in ``declare_hparams``."""

    @property
    def epoch(self) -> float:
        return self.step / self.schedule.steps_per_epoch

    def stage_at(self, step: int) -> str:
        """The stage that step ``step`` belongs to (one stage: "main")."""
        return "main"

    def enter_stage(self, stage: str) -> None:
        """Called once when training reaches ``stage`` (snapshot or freeze modules here)."""

    def train_step(self, batch: dict) -> dict[str, torch.Tensor | float]:
        """Switch stage if this step starts a new one, then ``update``."""
        stage = self.stage_at(self.step)
        if stage != self.stage:
            self.enter_stage(stage)
            self.stage = stage
        return self.update(batch)

    def update(self, batch: dict) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError

    def start(self, embed_training_images) -> None:
        """Called by the trainer once before the first step of a new run (never on resume):
        ``embed_training_images()`` gives {domain: embeddings (n, d) of every training image of
        that domain, in the order of ``batch["index"]`` / ``batch["unlabeled_index"]``}, by the
        current network in eval mode with the evaluation transform. Nothing by default."""

    def autocast(self):
        """The run's mixed precision (``--precision``) for the network's forward; what comes
        out is cast to fp32 before losses see it (``speed`` module doc)."""
        return self.precision.autocast()

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      clip_value: float = 0.0) -> None:
        """zero_grad, backward, step: with fp16's gradient scaler, across processes the
        gradients averaged, and with ``clip_value`` > 0 each gradient element clipped, before
        the step (``speed.Precision.backward_step``)."""
        self.precision.backward_step(loss, optimizer, self, clip_value)

    @staticmethod
    def gather(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch a batch loss sees: every process's embeddings and labels in rank
        order, gradients flowing to this process's own rows (``distributed.gather_batch``);
        (z, y) unchanged on one process."""
        return distributed.gather_batch(z, y)

    @classmethod
    def check_options(cls, options, hparams: dict) -> None:
        """Raise ``UnknownAlgorithmError`` for run options (the train args, split resolved)
        this method cannot serve with these hparams; called before anything is created."""

    def compile_parts(self) -> tuple[list[nn.Module], dict[str, str]]:
        """What ``--compile`` compiles (``speed.configure``): the modules, and {part: one-line
        reason} of what runs eager. By default the network, and the update eager where the
        class gives an ``EAGER_REASON``."""
        eager = {type(self).__name__: self.EAGER_REASON} if self.EAGER_REASON else {}
        return [self.network], eager

    def extra_metrics(self, ctx: EvalContext) -> dict[str, float]:
        """Method-specific metrics recorded with every checkpoint."""
        return {}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.network.training
        self.network.eval()
        with self.autocast():           # evaluation embeds as training does
            z = self.network(x)
        self.network.train(was_training)
        return F.normalize(z.float(), dim=1)

    def state_dict(self, *args, **kwargs) -> dict:  # noqa: D102 - structured, see module doc
        return {
            "modules": super().state_dict(*args, **kwargs),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "step": self.step,
            "stage": self.stage,
            "precision": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict, strict: bool = True):
        super().load_state_dict(state["modules"], strict=strict)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.step = state["step"]
        self.stage = state.get("stage")
        self.precision.load_state_dict(state.get("precision", {}))


LR_SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adamw", "adam", "sgd")


def lr_lambda(schedule: Schedule, kind: str, step_epochs: float = 0.0, gamma: float = 0.5):
    """Multiplicative LR factor per step: ``constant``, ``cosine`` (to 0 at the last step) or
    ``step`` (x ``gamma`` every ``step_epochs`` epochs: torch's StepLR stepped per epoch)."""
    if kind == "constant":
        return lambda step: 1.0
    if kind == "step":
        if step_epochs <= 0:
            raise ValueError("lr_schedule step needs lr_step_epochs > 0")
        every = max(1, round(step_epochs * schedule.steps_per_epoch))
        return lambda step: gamma ** (step // every)
    if kind == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, schedule.total_steps)
                                                  / schedule.total_steps))
    raise ValueError(f"unknown lr_schedule {kind!r}; known: {', '.join(LR_SCHEDULES)}")


def make_optimizer(kind: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
