"""CenterPolar: class-centric polarization for SDG-DML (Yuan, Wan, Liu, Xu, Wang, 2026).

The code is not released; this is an implementation from the abstract
(``shared/papers/centerpolar-abstract.txt``). The sentences it implements are quoted as [A1]-[A5]:

[A1] "these methods rely on proxy-based expansion, which tends to generate samples clustered near
     class proxies, failing to simulate the broad and distant domain shifts"
[A2] "CenterPolar ... dynamically expands and constrains domain distributions"
[A3] "C3E drives the source domain distribution by shifting the source data away from class
     centroids using centrifugal expansion to generalize to more unseen domains."
[A4] "C4 pulls all seen and unseen samples toward their class centroids while enforcing
     inter-class separation via centripetal constraint."
[A5] "two collaborative class-centric polarization phases"

Everything else is our design, each open choice an hparam (``cp_*`` in hparams_registry):

- Where: on the L2-normalised embeddings the base loss sees (the plug-in interface gives the
  loss only embeddings); a shift is a rotation on the unit sphere.
- Class centroids (``CentroidMemory``): per class, an EMA over batches of the batch mean,
  ``c = normalize(m * c_old + (1 - m) * batch_mean)`` with ``cp_momentum`` = m (0: batch
  centroids only); the batch mean of unit vectors is not renormalised before mixing, so a
  spread-out batch (a short mean) moves the centroid less than a tight one. This step's
  centroid is differentiable through the batch mean (so C4 can move centroids); the memory
  stores it detached.
- C3E ([A1], [A3]): each source embedding z at angle theta from its centroid is rotated away
  from it, in the plane (c, z), to angle ``min(theta + delta, cp_max_angle_deg)``
  (``centrifugal_expand``). delta = s(t) * r_y * u: s(t) the scheduled strength
  (``cp_expand`` reached by ``cp_expand_schedule``: "dynamically expands", [A2]); r_y the class's
  running angular radius when ``cp_adaptive`` (else 1 radian); u ~ U(1 - cp_expand_jitter, 1)
  per sample for a broad, not a single-shell, expansion [A1]. Synthetic samples keep their
  label and are scored by the bare base loss (``bare()``: plug-ins stacked inside
  CenterPolar see only the real batch), weight ``cp_expand_weight``.
- C4 ([A4]): pull = mean(1 - cos(z, c_y)) over seen and (``cp_c4_on_expanded``) synthetic
  samples; separation = ``cp_separation``: "margin", a squared hinge on the distance between
  the normalised centroids of the classes in the batch, ``relu(cp_margin - ||c_a - c_b||)^2``,
  or "softmax", cross-entropy of each sample over ``cp_scale`` * cos to every centroid.
  L_C4 = pull + cp_sep_weight * separation, weight ``cp_c4_weight``.

L = L_base(z, y) + cp_expand_weight * L_base(C3E(z), y) + cp_c4_weight * L_C4   ([A5])

With ``cp_expand_weight = 0`` and ``cp_c4_weight = 0`` the loss is the base loss exactly (the extra
terms are not computed and draw no random numbers).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..search_space import choice, log_uniform, uniform
from .base import LossWrapper, MetricLoss
from .registry import register_plugin

SCHEDULES = ("constant", "linear", "cosine")
SEPARATIONS = ("margin", "softmax")


def expansion_strength(progress: float, maximum: float, schedule: str) -> float:
    """s(t) for training progress in [0, 1]: constant, linear ramp or cosine ramp to ``maximum``
    ("dynamically expands", [A2])."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return maximum
    if schedule == "linear":
        return maximum * p
    if schedule == "cosine":
        return maximum * 0.5 * (1.0 - math.cos(math.pi * p))
    raise ValueError(f"unknown cp_expand_schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def centrifugal_expand(z: torch.Tensor, c: torch.Tensor, delta: torch.Tensor,
                       max_angle: float = math.pi) -> torch.Tensor:
    """C3E's shift ([A3]): rotate unit vectors ``z`` (B, d) away from unit centroids ``c`` (B, d)
    by ``delta`` (B,) radians in the plane (c, z), never beyond ``max_angle`` from c and never
    toward c. With theta = angle(z, c) and w the unit direction in that plane orthogonal to z
    pointing away from c, ``z' = cos(a) z + sin(a) w`` lies at angle theta + a, where
    a = clamp(min(delta, max_angle - theta), 0). Differentiable in z; a sample that sits on its
    centroid is pushed in a random tangent direction."""
    cos = (z * c).sum(1).clamp(-1.0, 1.0)
    theta = torch.acos(cos.detach())
    step = torch.minimum(delta, max_angle - theta).clamp(min=0.0)
    away = cos.unsqueeze(1) * z - c        # in the plane (c, z), orthogonal to z, norm sin(theta)
    # a sample on its centroid has no "away": a random tangent direction (computed for every
    # sample and selected, so the host never waits for the device to know which)
    r = torch.randn_like(z)
    zd = z.detach()
    tangent = r - (r * zd).sum(1, keepdim=True) * zd
    away = torch.where((away.norm(dim=1) < 1e-6).unsqueeze(1), tangent, away)
    w = F.normalize(away, dim=1)
    return torch.cos(step).unsqueeze(1) * z + torch.sin(step).unsqueeze(1) * w


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise angle (radians) between unit vectors."""
    return torch.acos((a * b).sum(1).clamp(-1.0, 1.0))


class CentroidMemory(nn.Module):
    """Running class centroids and angular radii of the source embeddings (buffers, so they are
    checkpointed and resumed with the model)."""

    def __init__(self, num_classes: int, embed_dim: int, momentum: float):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"cp_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("centroids", torch.zeros(num_classes, embed_dim))
        self.register_buffer("radius", torch.zeros(num_classes))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def current(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's centroids (C, d), differentiable through the batch means of the classes
        present, and the (C,) mask of classes that have a centroid."""
        num_classes = self.centroids.shape[0]
        onehot = F.one_hot(y, num_classes).to(z.dtype)              # (B, C)
        counts = onehot.sum(0)
        present = counts > 0
        batch_mean = (onehot.T @ z) / counts.clamp(min=1).unsqueeze(1)
        old = self.centroids.to(z.dtype)
        m = torch.where(self.seen, torch.full_like(counts, self.momentum), torch.zeros_like(counts))
        mixed = F.normalize(m.unsqueeze(1) * old + (1 - m).unsqueeze(1) * batch_mean, dim=1)
        cents = torch.where(present.unsqueeze(1), mixed, old)
        return cents, present | self.seen

    @torch.no_grad()
    def update(self, cents: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> None:
        """Store this step's centroids and EMA angular radii of the classes in the batch (masked
        updates: no data-dependent shapes, so the host never waits for the device)."""
        num_classes = self.centroids.shape[0]
        counts = torch.zeros(num_classes, device=z.device).index_add_(
            0, y, torch.ones_like(y, dtype=torch.float32))
        present = counts > 0
        self.centroids.copy_(torch.where(present.unsqueeze(1),
                                         cents.detach().to(self.centroids.dtype), self.centroids))
        theta = angle(z.detach(), cents.detach()[y])
        mean_theta = torch.zeros(num_classes, device=z.device, dtype=theta.dtype).index_add_(
            0, y, theta) / counts.clamp(min=1).to(theta.dtype)
        m = torch.where(self.seen, self.momentum, 0.0).to(self.radius.dtype)
        new_radius = m * self.radius + (1 - m) * mean_theta.to(self.radius.dtype)
        self.radius.copy_(torch.where(present, new_radius, self.radius))
        self.seen |= present


def c4_loss(z: torch.Tensor, y: torch.Tensor, cents: torch.Tensor, valid: torch.Tensor,
            separation: str = "margin", margin: float = 1.2, scale: float = 16.0,
            sep_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """C4 ([A4]): (pull, separation). pull = mean(1 - cos(z_i, c_{y_i})); separation, on the
    centroids of the classes in ``valid``: "margin": mean over pairs of
    relu(margin - ||c_a - c_b||)^2; "softmax": mean cross-entropy of ``scale * cos(z, c)``."""
    pull = (1.0 - (z * cents[y]).sum(1)).mean()
    # masks over all classes rather than selecting the valid ones: no data-dependent shapes
    if separation == "margin":
        pairs = torch.triu(valid.unsqueeze(0) & valid.unsqueeze(1), diagonal=1).to(z.dtype)
        dist = (2.0 - 2.0 * (cents @ cents.T)).clamp(min=1e-12).sqrt()
        sep = (F.relu(margin - dist).pow(2) * pairs).sum() / pairs.sum().clamp(min=1)
    elif separation == "softmax":
        logits = (scale * z @ cents.T).masked_fill(~valid.unsqueeze(0), float("-inf"))
        sep = F.cross_entropy(logits, y)
    else:
        raise ValueError(f"unknown cp_separation {separation!r}; known: {', '.join(SEPARATIONS)}")
    return pull, sep_weight * sep


@register_plugin("CenterPolar", default_base="ProxyAnchor")
class CenterPolar(LossWrapper):
    """``Base+CenterPolar``: C3E expansion and C4 constraint around any base metric loss.
    The bare name ``CenterPolar`` is ``ProxyAnchor+CenterPolar``."""

    @staticmethod
    def declare_hparams(hp, small):
        """The open design choices (module docstring says what each means)."""
        hp("cp_expand", 1.0, uniform(0.25, 2.0))                 # C3E max strength s_max
        hp("cp_expand_schedule", "linear", choice("constant", "linear", "cosine"))
        hp("cp_adaptive", True, choice(True, False))             # delta in class radii
        hp("cp_expand_jitter", 0.5, uniform(0.0, 1.0))
        hp("cp_max_angle_deg", 90.0, uniform(45.0, 120.0))
        hp("cp_expand_weight", 1.0, log_uniform(-1, 0.3))
        hp("cp_detach_expanded", False, choice(False, True))
        hp("cp_momentum", 0.9, uniform(0.0, 0.99))               # centroid EMA (0: batch)
        hp("cp_c4_weight", 1.0, log_uniform(-1, 0.5))
        hp("cp_c4_on_expanded", True, choice(True, False))
        hp("cp_separation", "margin", choice("margin", "softmax"))
        hp("cp_sep_weight", 1.0, log_uniform(-1, 0.5))
        hp("cp_margin", 1.2, uniform(0.8, 1.5))                  # distance of unit centroids
        hp("cp_scale", 16.0, uniform(8.0, 32.0))                 # centroid softmax scale

    def __init__(self, base: MetricLoss, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__(base)
        h = hparams
        self.expand_max = h["cp_expand"]
        self.schedule = h["cp_expand_schedule"]
        expansion_strength(0.0, 0.0, self.schedule)               # validate early
        if h["cp_separation"] not in SEPARATIONS:
            raise ValueError(f"unknown cp_separation {h['cp_separation']!r}; "
                             f"known: {', '.join(SEPARATIONS)}")
        self.adaptive, self.jitter = h["cp_adaptive"], h["cp_expand_jitter"]
        self.max_angle = math.radians(h["cp_max_angle_deg"])
        self.expand_weight, self.detach_expanded = h["cp_expand_weight"], h["cp_detach_expanded"]
        self.c4_weight, self.c4_on_expanded = h["cp_c4_weight"], h["cp_c4_on_expanded"]
        self.separation, self.margin = h["cp_separation"], h["cp_margin"]
        self.scale, self.sep_weight = h["cp_scale"], h["cp_sep_weight"]
        self.memory = CentroidMemory(num_classes, embed_dim, h["cp_momentum"])
        self.progress = 0.0

    def set_progress(self, epoch: float, total_epochs: float) -> None:
        super().set_progress(epoch, total_epochs)
        self.progress = epoch / total_epochs if total_epochs > 0 else 1.0

    def expand(self, z: torch.Tensor, y: torch.Tensor, cents: torch.Tensor) -> torch.Tensor:
        """C3E ([A3]): the synthetic samples (B, d), one per source sample, same labels."""
        strength = expansion_strength(self.progress, self.expand_max, self.schedule)
        scale = self.memory.radius[y].to(z.dtype) if self.adaptive else torch.ones_like(z[:, 0])
        u = 1.0 - self.jitter * torch.rand(len(y), device=z.device, dtype=z.dtype)
        c = cents[y].detach()
        src = z.detach() if self.detach_expanded else z
        return centrifugal_expand(src, c, strength * scale * u, self.max_angle)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        base = self.base(z, y)
        self.raw_terms = {**self.base.raw_terms, "cp_base": base.detach()}
        if self.expand_weight == 0 and self.c4_weight == 0:
            return base
        cents, valid = self.memory.current(z, y)
        loss = base
        z_exp = None
        if self.expand_weight != 0:
            z_exp = self.expand(z, y, cents)
            exp_loss = self.base.bare()(z_exp, y)
            loss = loss + self.expand_weight * exp_loss
            with torch.no_grad():
                shift = (angle(z_exp, cents[y]) - angle(z, cents[y])).mean() * (180 / math.pi)
            self.raw_terms.update(cp_expand=exp_loss.detach(), cp_shift_deg=shift)
        if self.c4_weight != 0:
            zs, ys = z, y
            if z_exp is not None and self.c4_on_expanded:
                zs, ys = torch.cat([z, z_exp]), torch.cat([y, y])
            pull, sep = c4_loss(zs, ys, cents, valid, self.separation, self.margin, self.scale,
                                self.sep_weight)
            loss = loss + self.c4_weight * (pull + sep)
            self.raw_terms.update(cp_pull=pull.detach(), cp_sep=sep.detach())
        self.memory.update(cents, z, y)
        return loss
