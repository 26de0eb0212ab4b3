"""The algorithm interface (DomainBed style) and the metric-loss interface.

An :class:`Algorithm` owns its network, losses, optimizers and schedulers:

- ``update(batch) -> dict[str, float]`` takes one optimisation step on a batch dict
  (``x``: images; ``y``: labels when ``USES_LABELS``; ``unlabeled``: {domain: images} when
  ``TRANSDUCTIVE``) and returns the scalars to log;
- ``embed(x)`` returns L2-normalised embeddings (no grad, eval mode);
- ``state_dict()`` / ``load_state_dict()`` cover modules (network and proxies), optimizers,
  schedulers and the step counter, so that a run can resume exactly.

A :class:`MetricLoss` maps (embeddings, labels) to a scalar and exposes its proxies uniformly
(``proxies()``) so that plug-ins such as SEE and PFML can wrap any proxy baseline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class UnknownAlgorithmError(ValueError):
    """An algorithm name, or a composition of components, that cannot be built."""


@dataclass(frozen=True)
class Schedule:
    """Length of the run: ``total_steps`` optimisation steps, ``steps_per_epoch`` per epoch."""

    total_steps: int
    steps_per_epoch: int

    @property
    def total_epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch


class MetricLoss(nn.Module):
    """A loss on L2-normalised embeddings ``z`` (B, d) and integer labels ``y`` (B,).

    A forward stores named components for logging in ``raw_terms`` as detached tensors (or
    floats): converting them to Python floats would make the forward wait for the device.
    ``terms`` converts them when read, after the optimiser step.
    """

    def __init__(self):
        super().__init__()
        self.raw_terms: dict[str, torch.Tensor | float] = {}

    @property
    def terms(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.raw_terms.items()}

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def proxies(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(P, d) L2-normalised proxies (differentiable) and their (P,) class labels; None for
        proxy-free losses."""
        return None

    def set_progress(self, epoch: float, total_epochs: float) -> None:
        """Called before every step (curricula and schedules inside losses)."""

    def bare(self) -> "MetricLoss":
        """The base loss without plug-ins: what synthetic embeddings are scored with (SEE's
        L_SEE, CenterPolar's expanded samples), so that stacked plug-ins neither expand samples
        twice nor feed synthetic ones into another plug-in's state."""
        return self


class LossWrapper(MetricLoss):
    """A plug-in around a base loss (``Base+Wrapper`` names). Delegates proxies and progress."""

    def __init__(self, base: MetricLoss):
        super().__init__()
        self.base = base

    def proxies(self):
        return self.base.proxies()

    def bare(self) -> MetricLoss:
        return self.base.bare()

    def set_progress(self, epoch: float, total_epochs: float) -> None:
        self.base.set_progress(epoch, total_epochs)


def nearest_class_proxy(z: torch.Tensor, y: torch.Tensor, proxies: torch.Tensor,
                        proxy_labels: torch.Tensor) -> torch.Tensor:
    """For each sample, the most similar proxy of its own class (B, d) (one proxy per class:
    simply w_y; several per class, e.g. SoftTriple: the closest centre)."""
    sims = z @ proxies.T
    own = proxy_labels.unsqueeze(0) == y.unsqueeze(1)
    idx = sims.masked_fill(~own, -math.inf).argmax(dim=1)
    return proxies[idx]


class Algorithm(nn.Module):
    """Base of every algorithm. Subclasses build ``self.optimizers`` / ``self.schedulers``."""

    USES_LABELS = True      # False: training batches carry no labels (unsupervised methods)
    TRANSDUCTIVE = False    # True: batches carry unlabeled target-domain images

    def __init__(self, network: nn.Module, num_classes: int, hparams: dict, schedule: Schedule):
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self.hparams = hparams
        self.schedule = schedule
        self.step = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}

    @property
    def epoch(self) -> float:
        return self.step / self.schedule.steps_per_epoch

    def update(self, batch: dict) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.network.training
        self.network.eval()
        z = F.normalize(self.network(x), dim=1)
        self.network.train(was_training)
        return z

    def state_dict(self, *args, **kwargs) -> dict:  # noqa: D102 - structured, see module doc
        return {
            "modules": super().state_dict(*args, **kwargs),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "step": self.step,
        }

    def load_state_dict(self, state: dict, strict: bool = True):
        super().load_state_dict(state["modules"], strict=strict)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.step = state["step"]


def lr_lambda(schedule: Schedule, kind: str):
    """Multiplicative LR factor per step: ``constant`` or ``cosine`` (to 0 at the last step)."""
    if kind == "constant":
        return lambda step: 1.0
    if kind == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, schedule.total_steps)
                                                  / schedule.total_steps))
    raise ValueError(f"unknown lr_schedule {kind!r}; known: constant, cosine")


def make_optimizer(kind: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; known: adamw, adam, sgd")


class MetricLearning(Algorithm):
    """Supervised DML: network + a (possibly wrapped) metric loss.

    Optimiser groups: backbone and embedding head at ``lr``; the loss's parameters (proxies) at
    ``lr * proxy_lr_mult`` (x100 in ProxyAnchor / ProxyNCA / SoftTriple / PFML recipes).
    Warm-up (ProxyAnchor's recipe): for the first ``warmup_epochs`` the backbone is frozen and
    only the embedding head and the proxies train.
    """

    def __init__(self, network, num_classes, hparams, schedule, loss: MetricLoss):
        super().__init__(network, num_classes, hparams, schedule)
        self.loss = loss
        lr = hparams["lr"]
        groups = [
            {"params": list(network.backbone.parameters()), "lr": lr, "name": "backbone"},
            {"params": list(network.embedding.parameters()), "lr": lr, "name": "embedding"},
        ]
        loss_params = list(loss.parameters())
        if loss_params:
            groups.append({"params": loss_params, "lr": lr * hparams.get("proxy_lr_mult", 1.0),
                           "name": "proxies"})
        opt = make_optimizer(hparams.get("optimizer", "adamw"), groups, hparams["weight_decay"])
        self.optimizers["main"] = opt
        self.schedulers["main"] = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(schedule, hparams.get("lr_schedule", "constant")))
        self.warmup_steps = round(hparams.get("warmup_epochs", 0) * schedule.steps_per_epoch)

    def _freeze_backbone(self, frozen: bool) -> None:
        for p in self.network.backbone.parameters():
            p.requires_grad_(not frozen)

    def update(self, batch: dict) -> dict[str, float]:
        self._freeze_backbone(self.step < self.warmup_steps)
        self.loss.set_progress(self.epoch, self.schedule.total_epochs)
        self.network.train()
        z = self.network(batch["x"])
        loss = self.loss(z, batch["y"])
        opt = self.optimizers["main"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.schedulers["main"].step()
        self.step += 1
        return {"loss": loss.item(), **self.loss.terms}
