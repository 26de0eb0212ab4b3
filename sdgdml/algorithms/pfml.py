"""PFML: Potential Field based Deep Metric Learning (Bhatnagar & Ahuja).

Every embedding and proxy is a unit charge. A point z_i creates, at a location r,

    psi_att(r, z_i) = -1/delta^alpha        if ||r - z_i|| < delta,  -1/||r - z_i||^alpha  otherwise (Eq. 1)
    psi_rep(r, z_i) =  1/||r - z_i||^alpha  if ||r - z_i|| < delta,   1/delta^alpha         otherwise (Eq. 2)

i.e. psi_att = -1/max(d, delta_att)^alpha and psi_rep = 1/min(d, delta_rep)^alpha: attraction has
no force inside delta and a force decaying as alpha/d^(alpha+1) outside; repulsion acts only
inside delta. The field of class j, Psi_j, superposes the attraction of the class-j batch
embeddings and M proxies of class j and the repulsion of every other embedding and proxy
(Eq. 3-5); the total energy U = sum_i Psi_{y_i}(z_i) + sum_{j,k} Psi_j(p_{j,k}) (Eq. 6), a
point's own field excluded, is minimised. Proxies train at ``lr * proxy_lr_mult``.

Choices the paper leaves open (documented):

- Normalisation: the loss is U measured in units of delta_att (distances divided by delta_att,
  which multiplies U by delta_att^alpha and so keeps its minimisers), taken relative to its value
  with every charge far apart (a repelling pair beyond delta_rep adds the constant
  (delta_att/delta_rep)^alpha, which is subtracted: repulsion energy then starts at 0, as a
  potential measured from infinity), and divided by the number of batch embeddings, the
  convention of losses averaged over a batch. Neither changes a gradient's direction. An earlier
  version divided by the N (N - 1) ordered pairs of all N charges: with 109 classes x 15 proxies
  the gradients fell to ~3e-11, below Adam's eps (1e-8), and standalone PFML did not train on
  GlyphsDG (README, GlyphsDG comparison); per batch embedding they are N (N - 1) / B times
  larger (B: the batch size).
- Numerical safety: distances come from squared distances, and the clamps are applied to the
  squares (no square root, so no infinite gradient at d = 0); repulsion distances are floored
  at ``MIN_DISTANCE`` (1e-3), so coinciding points of different classes give a large but
  finite energy.
- Proxies are L2-normalised before use, like the embeddings.
- alpha = 0 makes both potentials constant (-1 and +1): literally Eq. 1-2 then exert no force.

Standalone ``PFML`` has its own M proxies per class (``pfml_m``; 0 = no proxies, the Sec. 4.5
ablation). The ``Base+PFML`` plug-in adds ``pfml_weight`` times the energy of the batch
embeddings and the base loss's proxies to the base loss.
The cost is O(N^2 d) for N = batch + proxies charges (every pair interacts).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..search_space import choice, fixed, log_uniform, uniform
from .base import Plugin, MetricLoss
from .tensor_ops import as_dtype, unit_rows
from .registry import register_loss, register_plugin

MIN_DISTANCE = 1e-3


def attraction(dist2: torch.Tensor, delta: float, alpha: float) -> torch.Tensor:
    """Eq. 1 from squared distances: -1 / max(d, delta)^alpha."""
    return -dist2.clamp_min(delta * delta).pow(-alpha / 2)


def repulsion(dist2: torch.Tensor, delta: float, alpha: float,
              min_distance: float = MIN_DISTANCE) -> torch.Tensor:
    """Eq. 2 from squared distances: 1 / min(d, delta)^alpha (d floored at min_distance, so
    that the energy stays finite; closer pairs get no repulsive gradient)."""
    return dist2.clamp(min_distance * min_distance, delta * delta).pow(-alpha / 2)


def potential_energy(x: torch.Tensor, labels: torch.Tensor, delta_att: float, delta_rep: float,
                     alpha: float, unit: float = 1.0, min_distance: float = MIN_DISTANCE,
                     far: float = 0.0) -> torch.Tensor:
    """Eq. 6: U = sum_a Psi_{y_a}(x_a) over all charges x (embeddings and proxies) with
    ``labels``, each point's own field excluded, distances measured in units of ``unit``,
    minus ``far`` per ordered pair of different classes (differentiable in x:
    :class:`_PairEnergy`)."""
    return _PairEnergy.apply(x, labels, delta_att * delta_att, delta_rep * delta_rep,
                             min_distance * min_distance, alpha, unit ** alpha, far)


class _PairEnergy(torch.autograd.Function):
    """U in one pass over the N x N pairs (the clamped squared distance of each pair, Eq. 1
    for the same class and Eq. 2 otherwise, one power, a sign), and its gradient in closed
    form, so that the backward is a few operators rather than autograd's chain:
    with G = dU/d(d_ab^2) (zero where a clamp is active) and H = G + G^T,
    dU/dx_a = 2 (sum_b H_ab) x_a - 2 (H x)_a, from d_ab^2 = |x_a|^2 + |x_b|^2 - 2 <x_a, x_b>."""

    @staticmethod
    def forward(ctx, x, labels, att2, rep2, min2, alpha, scale, far):
        sq = (x * x).sum(1)
        d2 = (sq.unsqueeze(1) + sq - 2.0 * (x @ x.T)).clamp_min_(0.0)
        d2.fill_diagonal_(0.0)                          # a point's own field: excluded below
        same = labels.unsqueeze(1) == labels
        clamped = torch.where(same, d2.clamp_min(att2), d2.clamp(min2, rep2))
        p = clamped.pow(-alpha / 2)
        attract_repel = torch.where(same, -p, p)        # -1 attract, +1 repel
        # the diagonal (same class, clamped to att2) added back: no self-interaction
        u = (attract_repel.sum() + len(x) * att2 ** (-alpha / 2)) * scale
        if far:
            u = u - (len(x) ** 2 - same.sum()) * far
        # dU/dd2 = -alpha/2 * sign * p / d2 where no clamp is active (clamped == d2)
        grad_d2 = torch.where(clamped == d2, attract_repel / clamped, 0.0)
        ctx.save_for_backward(x, grad_d2)
        ctx.factor = -alpha * scale                     # 2 * (-alpha / 2) * scale
        return u

    @staticmethod
    def backward(ctx, grad):
        x, grad_d2 = ctx.saved_tensors
        h = grad_d2 + grad_d2.T
        gx = (h.sum(1, keepdim=True) * x - h @ x) * (grad * ctx.factor)
        return gx, None, None, None, None, None, None, None


@dataclass(frozen=True)
class PotentialField:
    """The PFML field's parameters and the normalised energy used as a loss."""

    delta_att: float
    delta_rep: float
    alpha: float

    @classmethod
    def from_hparams(cls, hparams: dict) -> "PotentialField":
        delta = float(hparams["pfml_delta"])
        delta_rep = hparams["pfml_delta_rep"]
        field = cls(delta, delta if delta_rep is None else float(delta_rep),
                    float(hparams["pfml_alpha"]))
        if min(field.delta_att, field.delta_rep) <= MIN_DISTANCE or field.alpha < 0:
            raise ValueError(f"PFML needs pfml_delta, pfml_delta_rep > {MIN_DISTANCE} and "
                             f"pfml_alpha >= 0, got {field}")
        return field

    def energy(self, x: torch.Tensor, labels: torch.Tensor,
               n_samples: int | None = None) -> torch.Tensor:
        """U in units of delta_att, relative to all charges far apart, per batch embedding
        (``n_samples``, default all of x; module doc)."""
        n = len(x)
        if n < 2:
            return x.sum() * 0.0
        far_repulsion = (self.delta_att / self.delta_rep) ** self.alpha
        u = potential_energy(as_dtype(x, torch.float32), labels,
                             self.delta_att, self.delta_rep, self.alpha, unit=self.delta_att,
                             far=far_repulsion)
        return u / (n if n_samples is None else n_samples)


def _charges(z, y, proxies):
    if proxies is None:
        return z, y
    p, p_labels = proxies
    return torch.cat([z, p]), torch.cat([y, p_labels])


def declare_pfml_hparams(hp, small):
    """Sec. 4.1/4.5: delta in [0.1, 0.35], alpha in [0, 6] with 3-6 best (alpha = 0 gives no
    force, so the search starts at 1), M = 15 (CUB, Cars). ``pfml_m`` is used by standalone
    PFML, ``pfml_weight`` by the Base+PFML plug-in; ``pfml_delta_rep`` None means equal to
    ``pfml_delta`` (Fig. 3(d) ablation otherwise). Declared once for both roles."""
    hp("pfml_m", 15, choice(2, 5, 10, 15, 30),
       help="proxies per class M (standalone PFML, Sec. 4.1)")
    hp("pfml_delta", 0.2, uniform(0.1, 0.35),
       help="interaction range delta of the attraction (PFML Eq. 1-2)")
    hp("pfml_delta_rep", None, fixed(),
       help="range delta of the repulsion; null: pfml_delta (Fig. 3(d) ablation)")
    hp("pfml_alpha", 4.0, uniform(1, 6), help="field strength alpha (PFML Eq. 1-2)")
    hp("pfml_weight", 1.0, log_uniform(10 ** -1.5, 10 ** 0.5),
       help="weight of the PFML term on a base loss (Base+PFML)")


@register_loss("PFML")
class PFML(MetricLoss):
    """Standalone PFML: batch embeddings and M learnable proxies per class (Eq. 3-6)."""

    HAS_PROXIES = True
    declare_hparams = staticmethod(declare_pfml_hparams)

    @classmethod
    def check_hparams(cls, hparams: dict) -> None:
        PotentialField.from_hparams(hparams)

    def __init__(self, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__()
        self.field = PotentialField.from_hparams(hparams)
        self.m = int(hparams["pfml_m"])
        if self.m < 0:
            raise ValueError(f"pfml_m must be >= 0, got {self.m}")
        self.proxy_vectors = (nn.Parameter(torch.randn(num_classes * self.m, embed_dim))
                              if self.m > 0 else None)
        self.register_buffer("proxy_classes",
                             torch.arange(num_classes).repeat_interleave(self.m))

    def proxies(self):
        if self.m == 0:
            return None
        return unit_rows(self.proxy_vectors), self.proxy_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, labels = _charges(unit_rows(z), y, self.proxies())
        loss = self.field.energy(x, labels, len(z))
        self.raw_terms = {"pfml_energy": loss.detach()}
        return loss


@register_plugin("PFML")
class PFMLPlugin(Plugin):
    """``Base+PFML``: base loss + pfml_weight * energy of the batch embeddings and the base
    loss's proxies (batch embeddings only when the base has no proxies)."""

    declare_hparams = staticmethod(declare_pfml_hparams)
    check_hparams = PFML.check_hparams

    def __init__(self, base: MetricLoss, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__(base)
        self.field = PotentialField.from_hparams(hparams)
        self.weight = float(hparams["pfml_weight"])

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss_base = self.base(z, y)
        x, labels = _charges(unit_rows(z), y, self.base.proxies())
        energy = self.field.energy(x, labels, len(z))
        self.raw_terms = {**self.base.raw_terms, "loss_base": loss_base.detach(),
                          "pfml_energy": energy.detach()}
        return loss_base + self.weight * energy
