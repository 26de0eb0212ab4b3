"""CenterPolar: class-centric polarization for SDG-DML (Yuan, Wan, Liu, Xu, Wang: "Beyond Seen
Bounds: Class-Centric Polarization for Single-Domain Generalized Deep Metric Learning", arXiv
2601.09121, 2026). Code not released; the method section as a review of the full paper states it
(summarised in docs/methods.md; the paper's equation numbers could not be read, so the relations
are cited by name):

C3E, class-centric centrifugal expansion ("adversarial manifold expansion", pixel space): for a
source image x of class c a copy x~ = x is updated, with the network phi and the class
centroids mu frozen, by gradient steps minimising

    L_geo(x~) = - d(mu_c, phi(x~)),     d(a, b) = arccos<a, b>   (geodesic distance on the sphere)

The expanded images keep label c and join training as "unseen" samples.
C4, class-centric centripetal constraint: pull all seen and unseen samples toward their class
centroids and keep the centroids apart. Objective of a step on the batch x plus the expanded
images x~ drawn for it:

    L = L_base(phi([x; x~]), [y; y~]) + cp_c4_weight * (pull + cp_sep_weight * separation)

What the review leaves open is chosen from the closest published relatives, adversarial data
augmentation for unseen domains (ADA: Volpi et al., NeurIPS 2018) and M-ADA (Qiao et al., CVPR
2020); every choice is an hparam (``declare_hparams``):

- ``cp_c3e_steps`` = 15 ascent steps: ADA's and M-ADA's T_max. 0 turns C3E off.
- ``cp_c3e_step_size`` = 1.0: ADA's and M-ADA's ascent rate (plain gradient steps, not signed),
  on the network's normalised input.
- ``cp_c3e_gamma`` = 1.0, the semantic constraint: the ascent maximises
  d(mu_c, phi(x~)) - gamma ||phi(x~) - phi(x)||^2 (ADA's and M-ADA's gamma = 1 on the feature
  distance; here in the embedding space, where C3E's distance is measured).
- ``cp_c3e_distance`` = "geodesic" (the paper's arccos) or "cosine" (1 - cos: the same ascent
  direction without arccos's steep slope near the centroid); cos is clamped to +-(1 - 1e-6).
- ``cp_c3e_every`` = 10: a new generation of expanded images, made from that step's batch,
  every 10 steps. ADA appends a whole dataset of adversarial images every T_min steps; we expand
  one batch at a time, so more often: 15 ascent passes every 10 steps, about 1.5 extra
  forward+backward passes per step (the paper claims a short training time).
- ``cp_c3e_pool`` = 8 generations kept ("dynamically expands": expansions accumulate as new
  domains, as ADA's K rounds do); bounded, the oldest (made by an older network) leaves first.
- ``cp_c3e_ratio`` = 1.0: each step, ratio * batch-size expanded images drawn uniformly from the
  pool join the batch (M-ADA trains on as many generated images as source images).
- The ascent runs under :func:`~sdgdml.algorithms.base.frozen`: eval mode (BatchNorm uses its
  running statistics and does not move them), parameters without gradients, and
  ``torch.autograd.grad`` to the images only, so no parameter gradient or graph is kept. The
  objective is a sum over images: each image's ascent is independent of the batch.
- Images of a class with no centroid yet are not expanded: the first batch makes no
  generation (no class has a centroid before the first step); later, such an image joins its
  generation unchanged (a mask rather than a selection, so that the host never waits for the
  device to learn how many images a generation keeps).
- Class centroids (:class:`CentroidMemory`): per class, an exponential moving average over steps
  of the mean embedding of the class's *seen* samples in the batch,
  mu = normalize(m mu_old + (1 - m) mean) with m = ``cp_momentum`` = 0.9 (a class's first
  batch: its mean). This step's centroids are differentiable through the batch means (so C4
  can push them apart); the memory stores them detached; C3E uses the stored ones.
- C4: pull = mean over seen and (``cp_c4_on_expanded``) expanded samples of 1 - cos(z, mu_y);
  separation ``cp_separation``: "margin", mean over pairs of classes in the batch of
  relu(``cp_margin`` - ||mu_a - mu_b||)^2, or "softmax", cross-entropy of ``cp_scale`` * cos to
  every centroid.

With ``cp_c3e_steps = 0`` (or ``cp_c3e_ratio = 0``) and ``cp_c4_weight = 0`` the loss is the base
loss exactly. Logged: ``cp_base``, ``cp_pull``, ``cp_sep``, ``cp_expanded`` (expanded images in
the step's batch), ``cp_pool`` (images in the pool), ``cp_c3e_gain_deg`` (mean geodesic distance
gained by the last generation, degrees).
The abstract-based reading (C3E as an embedding rotation) is ``CenterPolarRotation``.
"""
from __future__ import annotations

import collections
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..search_space import choice, log_uniform, uniform
from .base import Plugin, MetricLoss
from .tensor_ops import as_dtype
from .registry import register_plugin

SEPARATIONS = ("margin", "softmax")
DISTANCES = ("geodesic", "cosine")
COS_CLAMP = 1.0 - 1e-6


def distance(z: torch.Tensor, mu: torch.Tensor, kind: str = "geodesic") -> torch.Tensor:
    """Row-wise distance of unit vectors: geodesic arccos<z, mu> or cosine 1 - <z, mu>."""
    cos = (z * mu).sum(1).clamp(-COS_CLAMP, COS_CLAMP)
    if kind == "geodesic":
        return torch.acos(cos)
    if kind == "cosine":
        return 1.0 - cos
    raise ValueError(f"unknown cp_c3e_distance {kind!r}; known: {', '.join(DISTANCES)}")


def c3e_ascent(net: nn.Module, x: torch.Tensor, mu: torch.Tensor, steps: int, step_size: float,
               gamma: float, kind: str = "geodesic") -> tuple[torch.Tensor, torch.Tensor]:
    """C3E on images ``x`` (B, ...) whose class centroids are ``mu`` (B, d): ``steps`` gradient
    steps on x~ minimising L_geo = -d(mu, phi(x~)) + gamma ||phi(x~) - phi(x)||^2, with ``net``
    as given (call it under ``frozen``). Returns the expanded images (detached) and the
    geodesic/cosine distances (steps + 1, B) before each step and after the last."""
    with torch.no_grad():
        z0 = F.normalize(net(x), dim=1)
    x_adv, dists = x.detach().clone(), []
    for _ in range(steps):
        x_adv.requires_grad_(True)
        z = F.normalize(net(x_adv), dim=1)
        d = distance(z, mu, kind)
        gain = (d - gamma * (z - z0).pow(2).sum(1)).sum()
        grad, = torch.autograd.grad(gain, x_adv)
        dists.append(d.detach())
        x_adv = (x_adv.detach() + step_size * grad).detach()
    with torch.no_grad():
        dists.append(distance(F.normalize(net(x_adv), dim=1), mu, kind))
    return x_adv, torch.stack(dists)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise angle (radians) between unit vectors."""
    return torch.acos((a * b).sum(1).clamp(-1.0, 1.0))


class CentroidMemory(nn.Module):
    """Running class centroids and angular radii of the source embeddings (buffers, so they are
    checkpointed and resumed with the model)."""

    def __init__(self, num_classes: int, embed_dim: int, momentum: float):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"centroid momentum must be in [0, 1), got {momentum}")
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
        old = as_dtype(self.centroids, z.dtype)
        m = (self.seen * self.momentum).unsqueeze(1)                # 0 for a class's first batch
        mixed = F.normalize(m * old + (1 - m) * batch_mean, dim=1)
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
        cents = cents.detach()
        self.centroids.copy_(torch.where(present.unsqueeze(1),
                                         as_dtype(cents, self.centroids.dtype), self.centroids))
        theta = angle(z.detach(), cents[y])
        mean_theta = torch.zeros(num_classes, device=z.device, dtype=theta.dtype).index_add_(
            0, y, theta) / as_dtype(counts.clamp(min=1), theta.dtype)
        m = as_dtype(self.seen * self.momentum, self.radius.dtype)
        new_radius = m * self.radius + (1 - m) * as_dtype(mean_theta, self.radius.dtype)
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
        raise ValueError(f"unknown separation {separation!r}; known: {', '.join(SEPARATIONS)}")
    return pull, sep_weight * sep


def declare_c4_hparams(hp, prefix: str) -> None:
    """C4's hparams (centroid EMA, pull, separation), named ``<prefix><name>``: shared by
    CenterPolar (``cp_``) and CenterPolarRotation (``cpr_``)."""
    hp(f"{prefix}momentum", 0.9, uniform(0.0, 0.99),
       help="EMA momentum of the class centroids (0: the batch mean)")
    hp(f"{prefix}c4_weight", 1.0, log_uniform(0.1, 10 ** 0.5),
       help="weight of the C4 loss (pull + separation)")
    hp(f"{prefix}c4_on_expanded", True, choice(True, False),
       help="C4 also pulls the expanded samples to their centroids")
    hp(f"{prefix}separation", "margin", choice(*SEPARATIONS),
       choices=SEPARATIONS, help="how C4 keeps centroids apart: margin or softmax")
    hp(f"{prefix}sep_weight", 1.0, log_uniform(0.1, 10 ** 0.5),
       help="weight of the separation term inside C4")
    hp(f"{prefix}margin", 1.2, uniform(0.8, 1.5),               # distance of unit centroids
       help="separation margin between unit centroids (separation margin)")
    hp(f"{prefix}scale", 16.0, uniform(8.0, 32.0),              # centroid softmax scale
       help="softmax scale over centroids (separation softmax)")


def init_c4(loss: nn.Module, h: dict, prefix: str, num_classes: int, embed_dim: int) -> None:
    """Set C4's settings and centroid memory on ``loss`` from the ``<prefix>`` hparams."""
    if h[f"{prefix}separation"] not in SEPARATIONS:
        raise ValueError(f"unknown {prefix}separation {h[f'{prefix}separation']!r}; "
                         f"known: {', '.join(SEPARATIONS)}")
    loss.c4_weight, loss.c4_on_expanded = h[f"{prefix}c4_weight"], h[f"{prefix}c4_on_expanded"]
    loss.separation, loss.margin = h[f"{prefix}separation"], h[f"{prefix}margin"]
    loss.scale, loss.sep_weight = h[f"{prefix}scale"], h[f"{prefix}sep_weight"]
    loss.memory = CentroidMemory(num_classes, embed_dim, h[f"{prefix}momentum"])


@register_plugin("CenterPolar", default_base="ProxyAnchor")
class CenterPolar(Plugin):
    """``Base+CenterPolar``: C3E (adversarial expansion of the images) and C4 around any base
    metric loss. The bare name ``CenterPolar`` is ``ProxyAnchor+CenterPolar`` (the paper's base:
    proxy losses). The module docstring gives the equations and every default's reason."""

    MULTI_PROCESS = False
    SINGLE_PROCESS_REASON = (
        "C3E expands each process's own images into that process's pool, and the gathered "
        "batch would not say which of its rows are expanded images (C4's centroids need it)")
    EAGER_REASON = ("C4 writes the centroid memory in place inside the forward, which breaks "
                    "a compiled backward")

    @staticmethod
    def declare_hparams(hp, small):
        """The open design choices (module docstring: what each means, why its default)."""
        hp("cp_c3e_steps", 15, choice(1, 5, 10, 15),    # ADA/M-ADA T_max
           help="C3E gradient-ascent steps per expansion (ADA's T_max); 0: C3E off")
        hp("cp_c3e_step_size", 1.0, log_uniform(0.1, 10.0),     # ADA/M-ADA ascent rate
           help="C3E ascent rate on the normalised input (ADA's)")
        hp("cp_c3e_gamma", 1.0, log_uniform(0.1, 10.0),         # ADA/M-ADA constraint
           help="C3E semantic constraint gamma on the embedding shift (ADA's)")
        hp("cp_c3e_distance", "geodesic", choice("geodesic", "cosine"),
           choices=("geodesic", "cosine"),
           help="C3E distance to the centroid: geodesic (arccos) or cosine")
        hp("cp_c3e_every", 10, choice(1, 5, 10, 20),
           help="steps between two generations of expanded images")
        hp("cp_c3e_pool", 8, choice(1, 4, 8, 16),
           help="generations of expanded images kept in the pool")
        hp("cp_c3e_ratio", 1.0, uniform(0.25, 1.0),
           help="expanded images per step, as a fraction of the batch size")
        declare_c4_hparams(hp, "cp_")

    def __init__(self, base: MetricLoss, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__(base)
        h = hparams
        self.steps, self.step_size = int(h["cp_c3e_steps"]), float(h["cp_c3e_step_size"])
        self.gamma, self.distance = float(h["cp_c3e_gamma"]), h["cp_c3e_distance"]
        self.every, self.ratio = int(h["cp_c3e_every"]), float(h["cp_c3e_ratio"])
        distance(torch.ones(1, 1), torch.ones(1, 1), self.distance)       # validate early
        if self.steps < 0 or self.every < 1 or int(h["cp_c3e_pool"]) < 1 or self.ratio < 0:
            raise ValueError("need cp_c3e_steps >= 0, cp_c3e_every >= 1, cp_c3e_pool >= 1 and "
                             "cp_c3e_ratio >= 0")
        init_c4(self, h, "cp_", num_classes, embed_dim)
        self.pool: collections.deque = collections.deque(maxlen=int(h["cp_c3e_pool"]))
        self.pooled: tuple[torch.Tensor, torch.Tensor] | None = None   # the pool concatenated
        self.calls = 0                  # expand_inputs calls (steps): when to generate
        self.n_extra = 0                # expanded images at the end of the next forward's batch
        self.gain_deg = torch.zeros(())     # a tensor: read with the other logged values

    @property
    def expanding(self) -> bool:
        return self.steps > 0 and self.ratio > 0

    def generate(self, x: torch.Tensor, y: torch.Tensor, network: nn.Module) -> None:
        """C3E: a new generation of the batch's images, added to the pool: expanded where
        their class has a centroid, unchanged otherwise."""
        keep = self.memory.seen[y]
        mu = self.memory.centroids[y].to(x.dtype)
        x_adv, dists = c3e_ascent(network, x, mu, self.steps, self.step_size, self.gamma,
                                  self.distance)
        x_adv = torch.where(keep.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
        gain = ((dists[-1] - dists[0]) * keep).sum() / keep.sum().clamp(min=1)
        self.gain_deg = gain * (180 / math.pi if self.distance == "geodesic" else 1.0)
        self.pool.append((x_adv, y.clone()))
        self.pooled = None

    def expand_inputs(self, x, y, network):
        """Every ``cp_c3e_every`` calls a new generation; then ratio * B images drawn uniformly
        from the pool (detached, labels kept) join the batch."""
        self.n_extra = 0
        if not self.expanding:
            return None
        if self.calls % self.every == 0 and self.calls > 0:    # call 0: no centroid yet
            self.generate(x, y, network)
        self.calls += 1
        m = round(self.ratio * len(x))
        if not self.pool or m == 0:
            return None
        if self.pooled is None:         # concatenated once per generation, not every step
            self.pooled = (torch.cat([p[0] for p in self.pool]),
                           torch.cat([p[1] for p in self.pool]))
        px, py = self.pooled
        idx = torch.randint(len(px), (m,), device=px.device)
        self.n_extra = m
        return px[idx], py[idx]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n_seen = len(z) - self.n_extra
        self.n_extra = 0
        base = self.base(z, y)
        self.raw_terms = {**self.base.raw_terms, "cp_base": base.detach()}
        if self.expanding:
            self.raw_terms.update(cp_expanded=float(len(z) - n_seen),
                                  cp_pool=float(sum(len(p[1]) for p in self.pool)),
                                  cp_c3e_gain_deg=self.gain_deg)
        if not self.expanding and self.c4_weight == 0:
            return base
        z_seen, y_seen = z[:n_seen], y[:n_seen]
        cents, valid = self.memory.current(z_seen, y_seen)
        loss = base
        if self.c4_weight != 0:
            zs, ys = (z, y) if self.c4_on_expanded else (z_seen, y_seen)
            pull, sep = c4_loss(zs, ys, cents, valid, self.separation, self.margin, self.scale,
                                self.sep_weight)
            loss = loss + self.c4_weight * (pull + sep)
            self.raw_terms.update(cp_pull=pull.detach(), cp_sep=sep.detach())
        self.memory.update(cents, z_seen, y_seen)
        return loss

    def get_extra_state(self) -> dict:
        """The pool and the step counter, so that a resumed run continues identically."""
        return {"calls": self.calls, "gain_deg": self.gain_deg.clone(),
                "pool": [{"x": px, "y": py} for px, py in self.pool]}

    def set_extra_state(self, state: dict) -> None:
        self.calls = int(state["calls"])
        self.gain_deg = torch.as_tensor(state["gain_deg"], dtype=torch.float32)
        self.pool.clear()
        self.pool.extend((p["x"], p["y"]) for p in state["pool"])
        self.pooled = None
