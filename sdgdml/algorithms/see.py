"""SEE: Spherical Embedding Expansion (Le & Woo, PAKDD 2024; IJCAI 2025 extended abstract).

For an embedding z of class y and its proxy w_y (both unit vectors), SEE synthesises ``n_aug``
embeddings on the (d-2)-sphere of radius ||r|| in the null space of w_y, where
r = z - <w_y, z> w_y (Sec. 2.2):

    z*_k = <w_y, z> w_y + ||r|| mu*_k,    k = 2 .. n_aug + 1            (Alg. 1, line 6)

with mu*_1 = r / ||r|| and {mu*_k} the Max-Mahalanobis (MMD) centres built from an orthonormal
basis {v_1 = r/||r||, v_2, ..., v_{n_aug+1}} of (part of) the null space of w_y:
mu*_k = sum_i alpha_ki v_i, so that <mu*_i, mu*_j> = -1/n_aug for i != j (Eq. 2). Every z*_k has
the same distance to w_y as z, and the n_aug + 1 points are maximally dispersed.

The objective (Eq. 3-4) is L = L_ML + lambda * L_SEE over the top-k samples of the batch
closest to their proxy, k growing with the epochs (curriculum). The extended abstract leaves
lambda, n_aug, the schedule and the gradient flow open; the authors' released code
(Leminhbinh0209/PAKDD24-SEE: trainer/losses.py ``SEEProxyAnchor``,
trainer/sphericalexpansion.py, scripts/Deit/*.sh) fixes them, and ``SEE``'s defaults are theirs:

- ``see_grad = "proxies"``: the synthetic embeddings are built from the *detached* embeddings
  and a *detached* proxy, and scored detached: L_SEE trains the proxies only (extra positives
  and hard negatives for them); the backbone gets no gradient from it;
- ``see_aug_weighting = "once"``: L_SEE = l(Z*, Y*), the base loss of the whole synthetic batch
  computed once, L = L_ML + lambda * L_SEE with ``see_lambda = 0.2`` and ``see_n_aug = 8``
  (the released scripts);
- ``see_schedule = "cosine"``: the expanded fraction of epoch e of E is
  f(e) = max - (max - min) (cos(pi e / E) + 1) / 2 (the released "type 1" schedule, updated at
  the start of every epoch: e = floor(epoch)), min = ``see_topk_start`` = 0.0,
  max = ``see_topk_end`` = 0.4; the expanded samples are the round(f B) with the largest cosine
  to their own proxy. (The released code caps e and E at 200 epochs; no run here is longer.)

Our first reading of the abstract (``SEEFirstReading``: same code, other defaults) differs in
each: ``see_grad = "all"`` (gradients of L_SEE reach the backbone through z and the proxy),
``see_aug_weighting = "per_aug"`` (Eq. 3 read literally: L_SEE = n_aug * l(Z*, Y*), the sum over
the n_aug copies of the mean over expanded samples), ``see_schedule = "linear"`` (the fraction
grows linearly with the epoch index from ``see_topk_start`` = 0.25 at epoch 0 to
``see_topk_end`` = 1.0 at the last), n_aug = 3 (the abstract's Fig. 1), lambda = 0.5. The
authors' settings are ``SEE``'s.

Implementation choices (the paper leaves them open):

- The extra basis vectors v_2.. are obtained without a sequential Gram-Schmidt loop: a random
  orthonormal frame (a, b, e_1..e_n) of R^d is drawn once per step (QR of a Gaussian matrix,
  from the global torch RNG, so seeded runs and resumed runs reproduce it), and two Householder
  reflections per sample map a to +-w_y and b to +-r/||r||; the images of e_1..e_n are then an
  orthonormal basis orthogonal to w_y and r, distributed as Gram-Schmidt of random vectors
  would be, but exactly orthonormal whatever the conditioning (each reflection vector has
  norm >= sqrt(2)). Everything is batched; with ``see_grad = "all"`` gradients flow through
  z and the proxy.
- A sample sitting on its proxy (||r|| < 1e-6) has no null-space direction: any unit vector
  orthogonal to w_y stands in for r/||r||, and its synthetic embeddings coincide with z.
- Multi-centre losses (SoftTriple, PFML) use each sample's closest proxy of its own class.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..search_space import choice, log_uniform, uniform
from .base import Plugin, MetricLoss
from .tensor_ops import nearest_class_proxy, unit_rows
from .registry import UnknownAlgorithmError, proxy_losses, register_plugin

DEGENERATE_NORM = 1e-6


@functools.lru_cache(maxsize=None)
def mmd_coefficients(n_aug: int) -> torch.Tensor:
    """Alg. 1, lines 2-5: the (n_aug+1, n_aug+1) lower-triangular alpha with
    mu*_k = sum_i alpha_ki v_i (row k-1 is mu*_k; row 0 is mu*_1 = v_1). float64."""
    if n_aug < 1:
        raise ValueError(f"see_n_aug must be >= 1, got {n_aug}")
    n = n_aug
    a = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    a[0, 0] = 1.0
    for k in range(1, n + 1):
        a[k, 0] = -1.0 / n
        for j in range(1, k):
            a[k, j] = -(1.0 + n * (a[k, :j] @ a[j, :j])) / (n * a[j, j])
        a[k, k] = math.sqrt(max(0.0, 1.0 - float(a[k, :k] @ a[k, :k])))
    return a


@functools.lru_cache(maxsize=None)
def _mmd_coefficients_on(n_aug: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The coefficients copied to a device once (a per-step copy would wait for the device)."""
    return mmd_coefficients(n_aug).to(device=device, dtype=dtype)


def random_frame(dim: int, size: int, device=None, dtype=torch.float32,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(dim, size) orthonormal columns: QR of a Gaussian matrix (Haar-distributed), drawn from
    the CPU RNG and computed on the CPU (a small QR on a GPU makes the host wait for it); the
    copy to the device does not wait."""
    g = torch.randn(dim, size, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(g)
    q = (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)).to(dtype)   # Gram-Schmidt signs
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        return q.pin_memory().to(device, non_blocking=True)
    return q.to(device)


def _reflect(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Householder reflection I - 2 u u^T / ||u||^2 of x (B, d, m) by u (B, d)."""
    coef = 2.0 * torch.einsum("bd,bdm->bm", u, x) / (u * u).sum(1, keepdim=True)
    return x - u.unsqueeze(2) * coef.unsqueeze(1)


def _reflector(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """u such that the reflection by u maps the unit vector ``source`` to +-``target``
    (the sign that keeps ||u|| >= sqrt(2))."""
    s = torch.where((source * target).sum(1, keepdim=True) >= 0, -1.0, 1.0)
    return source - s * target


def null_space_basis(w: torch.Tensor, r: torch.Tensor, n_extra: int, frame: torch.Tensor
                     ) -> torch.Tensor:
    """(B, n_extra + 1, d) orthonormal vectors orthogonal to w: v_1 = r/||r|| (or any unit
    vector orthogonal to w when ||r|| < 1e-6), then n_extra more (Alg. 1, line 1).

    ``frame`` (d, n_extra + 2): orthonormal columns (a, b, e_1..e_n); per sample, reflection H1
    maps a to +-w and H2 maps H1 b to +-v_1 while fixing w; v_{i+1} = H2 H1 e_i."""
    b = w.shape[0]
    fr = frame.to(w.dtype).unsqueeze(0).expand(b, -1, -1)              # (B, d, n+2)
    u1 = _reflector(fr[:, :, 0], w)
    rest = _reflect(fr[:, :, 1:], u1)                                  # H1 b, H1 e_i
    r_norm = r.norm(dim=1, keepdim=True)
    v1 = torch.where(r_norm > DEGENERATE_NORM, r / r_norm.clamp_min(DEGENERATE_NORM),
                     rest[:, :, 0])
    u2 = _reflector(rest[:, :, 0], v1)
    extra = _reflect(rest[:, :, 1:], u2)                               # H2 H1 e_i
    return torch.cat([v1.unsqueeze(1), extra.transpose(1, 2)], dim=1)


def expand(z: torch.Tensor, w: torch.Tensor, n_aug: int, frame: torch.Tensor) -> torch.Tensor:
    """Synthetic embeddings (B, n_aug, d) of unit z (B, d) around unit proxies w (B, d):
    z*_k = <w, z> w + ||r|| mu*_k, k = 2..n_aug+1 (Alg. 1)."""
    if not 1 <= n_aug <= z.shape[1] - 2:
        raise ValueError(f"see_n_aug must be in [1, embed_dim - 2 = {z.shape[1] - 2}], "
                         f"got {n_aug}")
    along = (z * w).sum(1, keepdim=True)
    r = z - along * w
    basis = null_space_basis(w, r, n_aug, frame)                       # (B, n+1, d)
    alpha = _mmd_coefficients_on(n_aug, z.device, z.dtype)
    mu = torch.einsum("ki,bid->bkd", alpha[1:], basis)                 # mu*_2 .. mu*_{n+1}
    return (along * w).unsqueeze(1) + r.norm(dim=1, keepdim=True).unsqueeze(1) * mu


GRADS = ("proxies", "all")
WEIGHTINGS = ("once", "per_aug")
SCHEDULES = ("cosine", "linear")
_CHOICES = {"see_schedule": SCHEDULES, "see_grad": GRADS, "see_aug_weighting": WEIGHTINGS}
_HELP = {
    "see_n_aug": "synthetic embeddings per expanded sample (SEE Alg. 1)",
    "see_lambda": "weight lambda of L_SEE (SEE Eq. 3-4)",
    "see_topk_start": "fraction of the batch expanded at the first epoch",
    "see_topk_end": "fraction of the batch expanded at the last epoch",
    "see_schedule": "how the expanded fraction grows: cosine or linear",
    "see_grad": "what L_SEE trains: the proxies only, or all (backbone too)",
    "see_aug_weighting": "L_SEE once over the synthetic batch, or x n_aug (per_aug)",
}


def declare_see_hparams(hp, values: dict) -> None:
    """SEE's hparams: ``values`` {name: (default, distribution)}; a distribution of None is
    lambda's log-uniform or the name's choices (the two readings differ only in defaults and
    ranges)."""
    for name, (default, distribution) in values.items():
        choices = _CHOICES.get(name)
        if distribution is None:
            distribution = choice(*choices) if choices else log_uniform(10 ** -1.5, 10 ** 0.5)
        hp(name, default, distribution, choices=choices, help=_HELP[name])


def _check_choice(name: str, value, known: tuple) -> None:
    if value not in known:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(known)}")


def expanded_fraction(epoch: float, total_epochs: float, start: float, end: float,
                      schedule: str) -> float:
    """Fraction of the batch expanded at ``epoch`` of ``total_epochs``: "cosine" (released,
    type 1) end - (end - start) (cos(pi e / E) + 1) / 2 with e = floor(epoch); "linear" (first
    reading) from ``start`` at epoch 0 to ``end`` at the last epoch index."""
    _check_choice("see_schedule", schedule, SCHEDULES)
    e = math.floor(epoch)
    if schedule == "cosine":
        t = min(e, total_epochs) / total_epochs if total_epochs > 0 else 1.0
        return end - (end - start) * (math.cos(math.pi * t) + 1.0) / 2.0
    last = max(1, math.ceil(total_epochs) - 1)
    return start + (end - start) * min(1.0, e / last)


@register_plugin("SEE")
class SEE(Plugin):
    """``Base+SEE``: L = L_ML + lambda * L_SEE (Eq. 3-4) on any proxy-based base loss, with the
    authors' released settings by default (module docstring)."""

    EAGER_REASON = ("the number of expanded samples follows the epoch, host-side state a "
                    "compiled forward would guard on and recompile for (+765% per step)")

    @staticmethod
    def declare_hparams(hp, small):
        """The released code's values (module docstring says where each comes from)."""
        declare_see_hparams(hp, {
            "see_n_aug": (8, choice(2, 4, 8, 16)), "see_lambda": (0.2, None),
            "see_topk_start": (0.0, uniform(0.0, 0.2)), "see_topk_end": (0.4, uniform(0.2, 1.0)),
            "see_schedule": ("cosine", None), "see_grad": ("proxies", None),
            "see_aug_weighting": ("once", None)})

    def __init__(self, base: MetricLoss, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__(base)
        if base.proxies() is None:
            raise UnknownAlgorithmError(
                f"SEE expands embeddings around their class proxy, and {type(base).__name__} "
                f"has no proxies: put SEE after a proxy-based loss "
                f"({', '.join(proxy_losses())})")
        self.n_aug = int(hparams["see_n_aug"])
        if not 1 <= self.n_aug <= embed_dim - 2:
            raise ValueError(f"see_n_aug must be in [1, embed_dim - 2 = {embed_dim - 2}], "
                             f"got {self.n_aug}")
        self.lam = float(hparams["see_lambda"])
        self.topk_start = float(hparams["see_topk_start"])
        self.topk_end = float(hparams["see_topk_end"])
        if not 0.0 <= self.topk_start <= self.topk_end <= 1.0:
            raise ValueError("need 0 <= see_topk_start <= see_topk_end <= 1")
        self.schedule, self.grad = hparams["see_schedule"], hparams["see_grad"]
        self.weighting = hparams["see_aug_weighting"]
        _check_choice("see_schedule", self.schedule, SCHEDULES)
        _check_choice("see_grad", self.grad, GRADS)
        _check_choice("see_aug_weighting", self.weighting, WEIGHTINGS)
        self.epoch, self.total_epochs = 0.0, 1.0

    def set_progress(self, epoch: float, total_epochs: float) -> None:
        self.epoch, self.total_epochs = epoch, total_epochs
        super().set_progress(epoch, total_epochs)

    def expanded_fraction(self) -> float:
        """Fraction of the batch expanded at the current epoch (``see_schedule``)."""
        return expanded_fraction(self.epoch, self.total_epochs, self.topk_start, self.topk_end,
                                 self.schedule)

    def num_expanded(self, batch_size: int) -> int:
        return min(batch_size, round(self.expanded_fraction() * batch_size))

    def synthesize(self, z: torch.Tensor, y: torch.Tensor, k: int):
        """The k samples closest to their proxy (largest cosine), expanded: (k * n_aug, d)
        embeddings and their labels; built from detached z and proxies when
        ``see_grad = "proxies"``."""
        proxies, proxy_labels = self.base.proxies()
        if self.grad == "proxies":
            z, proxies = z.detach(), proxies.detach()
        w = nearest_class_proxy(z, y, proxies, proxy_labels)
        d_y = -(z * w).sum(1)
        idx = torch.topk(d_y.detach(), k, largest=False).indices
        frame = random_frame(z.shape[1], self.n_aug + 2, z.device, z.dtype)
        zs = expand(z[idx], w[idx], self.n_aug, frame)
        return zs.reshape(-1, z.shape[1]), y[idx].repeat_interleave(self.n_aug)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = self.num_expanded(len(z))
        if k > 0 and self.lam != 0.0:
            zs, ys = self.synthesize(unit_rows(z), y, k)
            if self.grad == "proxies":
                zs = zs.detach()
            loss_ml, terms, loss_see = self.base_and_bare(z, y, zs, ys)
            if self.weighting == "per_aug":
                loss_see = self.n_aug * loss_see
        else:
            loss_ml, loss_see = self.base(z, y), z.new_zeros(())
            terms = dict(self.base.raw_terms)
        self.raw_terms = {**terms, "loss_ml": loss_ml.detach(), "loss_see": loss_see.detach(),
                          "see_expanded": float(k)}
        return loss_ml + self.lam * loss_see


@register_plugin("SEEFirstReading")
class SEEFirstReading(SEE):
    """``Base+SEEFirstReading``: SEE with our first reading of the extended abstract as defaults
    (gradients into the backbone, L_SEE x n_aug, linear 0.25 -> 1.0, n_aug 3, lambda 0.5), kept
    for comparison and for the refactor's golden records. Not the authors' settings: ``SEE``."""

    @staticmethod
    def declare_hparams(hp, small):
        declare_see_hparams(hp, {
            "see_n_aug": (3, choice(1, 2, 3, 4, 6, 8)), "see_lambda": (0.5, None),
            "see_topk_start": (0.25, uniform(0.0, 0.5)), "see_topk_end": (1.0, uniform(0.5, 1.0)),
            "see_schedule": ("linear", None), "see_grad": ("all", None),
            "see_aug_weighting": ("per_aug", None)})
