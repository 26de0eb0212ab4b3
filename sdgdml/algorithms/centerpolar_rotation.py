"""CenterPolarRotation: our first reading of CenterPolar (Yuan, Wan, Liu, Xu, Wang, 2026) from its
abstract alone, kept under its own name (deliberate deviation: C3E as an *embedding-space
rotation*). The full paper's C3E is an adversarial expansion of the *images*: that is
``CenterPolar`` (``centerpolar.py``). This reading stays available for comparison and for the
golden records of the interface refactor (``tests/golden``); its hparams carry the ``cpr_``
prefix and its logged terms ``cpr_*``.

From the abstract of arXiv 2601.09121, quoted as [A1]-[A5]:

[A1] "these methods rely on proxy-based expansion, which tends to generate samples clustered near
     class proxies, failing to simulate the broad and distant domain shifts"
[A2] "CenterPolar ... dynamically expands and constrains domain distributions"
[A3] "C3E drives the source domain distribution by shifting the source data away from class
     centroids using centrifugal expansion to generalize to more unseen domains."
[A4] "C4 pulls all seen and unseen samples toward their class centroids while enforcing
     inter-class separation via centripetal constraint."
[A5] "two collaborative class-centric polarization phases"

Everything else is our design, each open choice an hparam (``cpr_*`` in hparams_registry):

- Where: on the L2-normalised embeddings the base loss sees (the plug-in interface gives the
  loss only embeddings); a shift is a rotation on the unit sphere.
- Class centroids (``CentroidMemory``): per class, an EMA over batches of the batch mean,
  ``c = normalize(m * c_old + (1 - m) * batch_mean)`` with ``cpr_momentum`` = m (0: batch
  centroids only); the batch mean of unit vectors is not renormalised before mixing, so a
  spread-out batch (a short mean) moves the centroid less than a tight one. This step's
  centroid is differentiable through the batch mean (so C4 can move centroids); the memory
  stores it detached.
- C3E ([A1], [A3]): each source embedding z at angle theta from its centroid is rotated away
  from it, in the plane (c, z), to angle ``min(theta + delta, cpr_max_angle_deg)``
  (``centrifugal_expand``). delta = s(t) * r_y * u: s(t) the scheduled strength
  (``cpr_expand`` reached by ``cpr_expand_schedule``: "dynamically expands", [A2]); r_y the class's
  running angular radius when ``cpr_adaptive`` (else 1 radian); u ~ U(1 - cpr_expand_jitter, 1)
  per sample for a broad, not a single-shell, expansion [A1]. Synthetic samples keep their
  label and are scored by the bare base loss (``bare()``: plug-ins stacked inside
  CenterPolarRotation see only the real batch), weight ``cpr_expand_weight``.
- C4 ([A4]): pull = mean(1 - cos(z, c_y)) over seen and (``cpr_c4_on_expanded``) synthetic
  samples; separation = ``cpr_separation``: "margin", a squared hinge on the distance between
  the normalised centroids of the classes in the batch, ``relu(cpr_margin - ||c_a - c_b||)^2``,
  or "softmax", cross-entropy of each sample over ``cpr_scale`` * cos to every centroid.
  L_C4 = pull + cpr_sep_weight * separation, weight ``cpr_c4_weight``.

L = L_base(z, y) + cpr_expand_weight * L_base(C3E(z), y) + cpr_c4_weight * L_C4   ([A5])

With ``cpr_expand_weight = 0`` and ``cpr_c4_weight = 0`` the loss is the base loss exactly (the extra
terms are not computed and draw no random numbers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..search_space import choice, log_uniform, uniform
from .base import Plugin, MetricLoss
from .centerpolar import angle, c4_loss, declare_c4_hparams, init_c4
from .registry import register_plugin

SCHEDULES = ("constant", "linear", "cosine")


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
    raise ValueError(f"unknown cpr_expand_schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


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


@register_plugin("CenterPolarRotation", default_base="ProxyAnchor")
class CenterPolarRotation(Plugin):
    """``Base+CenterPolarRotation``: rotation-C3E and C4 around any base metric loss. The bare
    name ``CenterPolarRotation`` is ``ProxyAnchor+CenterPolarRotation``."""

    EAGER_REASON = ("its expansion strength follows the training progress, a host-side number "
                    "that changes every step, and C4 writes the centroid memory in place")

    @staticmethod
    def declare_hparams(hp, small):
        """The open design choices (module docstring says what each means)."""
        hp("cpr_expand", 1.0, uniform(0.25, 2.0),                 # C3E max strength s_max
           help="rotation-C3E maximum strength s_max")
        hp("cpr_expand_schedule", "linear", choice("constant", "linear", "cosine"),
           choices=SCHEDULES, help="how the expansion strength grows over training")
        hp("cpr_adaptive", True, choice(True, False),             # delta in class radii
           help="expansion angle in units of the class's radius")
        hp("cpr_expand_jitter", 0.5, uniform(0.0, 1.0),
           help="random fraction of the strength removed per sample")
        hp("cpr_max_angle_deg", 90.0, uniform(45.0, 120.0),
           help="largest rotation angle in degrees")
        hp("cpr_expand_weight", 1.0, log_uniform(0.1, 10 ** 0.3),
           help="weight of the loss on the rotated embeddings")
        hp("cpr_detach_expanded", False, choice(False, True),
           help="rotated embeddings carry no gradient to the backbone")
        declare_c4_hparams(hp, "cpr_")

    def __init__(self, base: MetricLoss, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__(base)
        h = hparams
        self.expand_max = h["cpr_expand"]
        self.schedule = h["cpr_expand_schedule"]
        expansion_strength(0.0, 0.0, self.schedule)               # validate early
        self.adaptive, self.jitter = h["cpr_adaptive"], h["cpr_expand_jitter"]
        self.max_angle = math.radians(h["cpr_max_angle_deg"])
        self.expand_weight, self.detach_expanded = h["cpr_expand_weight"], h["cpr_detach_expanded"]
        init_c4(self, h, "cpr_", num_classes, embed_dim)
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

    def _base_only(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The base loss of the batch, logged as ``cpr_base`` with the base's terms."""
        base = self.base(z, y)
        self.raw_terms = {**self.base.raw_terms, "cpr_base": base.detach()}
        return base

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.expand_weight == 0 and self.c4_weight == 0:
            return self._base_only(z, y)
        cents, valid = self.memory.current(z, y)
        z_exp = None
        if self.expand_weight != 0:
            z_exp = self.expand(z, y, cents)
            base, terms, exp_loss = self.base_and_bare(z, y, z_exp, y)
            self.raw_terms = {**terms, "cpr_base": base.detach()}
            loss = base + self.expand_weight * exp_loss
            with torch.no_grad():
                shift = (angle(z_exp, cents[y]) - angle(z, cents[y])).mean() * (180 / math.pi)
            self.raw_terms.update(cpr_expand=exp_loss.detach(), cpr_shift_deg=shift)
        else:
            loss = self._base_only(z, y)
        if self.c4_weight != 0:
            zs, ys = z, y
            if z_exp is not None and self.c4_on_expanded:
                zs, ys = torch.cat([z, z_exp]), torch.cat([y, y])
            pull, sep = c4_loss(zs, ys, cents, valid, self.separation, self.margin, self.scale,
                                self.sep_weight)
            loss = loss + self.c4_weight * (pull + sep)
            self.raw_terms.update(cpr_pull=pull.detach(), cpr_sep=sep.detach())
        self.memory.update(cents, z, y)
        return loss
