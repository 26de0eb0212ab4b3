"""UEM's equations as pure functions (Wang, Du & Zhu, NeurIPS 2024; docs/methods.md).
Equation numbers are the paper's. ``tau`` is the temperature (0.07), features ``z`` are
L2-normalised rows, ``d`` the Euclidean distance, ``D(u, v) = (1 - cos(u, v)) d(u, v)`` the
distance of the cross-domain searches (Eq. 15-17, App. B.1). Losses are means over the batch
(the paper writes sums over i for Eq. 6-7 and means for Eq. 11, 14, 17: only a scale)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..prototypes import (Merged, euclidean, min_pairwise_distance, search_distance,
                          translate_merge)


# ---------------------------------------------------------------- Eq. 5-7 (IDSE, per domain)
@torch.no_grad()
def update_memory(bank: torch.Tensor, index: torch.Tensor, z: torch.Tensor, beta: float
                  ) -> None:
    """Eq. 5, in place: m_i <- beta m_i + (1 - beta) f(x_i) for the batch's indices, then
    re-normalised to unit length (the paper leaves it open; InstDisc/PCS memory banks
    normalise, so that m_i . f / tau stays a cosine over tau)."""
    bank[index] = F.normalize(beta * bank[index] + (1.0 - beta) * z.detach().to(bank.dtype),
                              dim=1)


def instance_nce(z: torch.Tensor, index: torch.Tensor, bank: torch.Tensor, tau: float
                 ) -> torch.Tensor:
    """Eq. 6, L_INCE: -log softmax over the domain's memory entries, the own entry m_i the
    positive, every other entry a negative."""
    return F.cross_entropy(z @ bank.T / tau, index)


def proto_nce(z: torch.Tensor, prototypes: torch.Tensor, assign: torch.Tensor, tau: float,
              reduction: str = "mean") -> torch.Tensor:
    """Eq. 7, L_PNCE: -log softmax over the (merged) prototypes toward the sample's own
    (``reduction`` "none": per sample)."""
    return F.cross_entropy(z @ prototypes.T / tau, assign, reduction=reduction)


def ipm_alpha(epoch: float, idse_epochs: float) -> float:
    """Eq. 10's weight alpha = 1 / (1 + exp(0.5 E - e)) (E: IDSE epochs, e: current epoch),
    without overflow for any E."""
    x = 0.5 * idse_epochs - epoch
    if x > 0:
        return float(np.exp(-x) / (1.0 + np.exp(-x)))
    return float(1.0 / (1.0 + np.exp(x)))


# ---------------------------------------------------------------- Eq. 11 (SEL)
def semantic_enhanced_loss(z: torch.Tensor, prototypes: torch.Tensor, tau: float
                           ) -> torch.Tensor:
    """Eq. 11, L_SEL = (1/B) sum_i sum_c softmax_c(f_i . p_c / tau) d(f_i, p_c) over the merged
    prototypes (a softmax-weighted Euclidean distance to every prototype)."""
    weights = F.softmax(z @ prototypes.T / tau, dim=1)
    return (weights * euclidean(z, prototypes)).sum(1).mean()


# ---------------------------------------------------------------- Eq. 13-14 (SPDA)
def domain_adversarial_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Eq. 13, L_DAL: binary cross-entropy of the domain classifier over the 2B features,
    domain A labelled 1 and B labelled 0 (the sign flip for f_theta is the caller's gradient
    reversal)."""
    logits = torch.cat([logits_a, logits_b]).squeeze(1)
    target = torch.cat([torch.ones(len(logits_a)), torch.zeros(len(logits_b))]).to(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def semantic_preserving_loss(z: torch.Tensor, z_frozen: torch.Tensor) -> torch.Tensor:
    """Eq. 14, L_SPR = (1/B^2) sum_{i,j} [(cos(f_i, f_j) - cos(f'_i, f'_j))^2
    + (d(f_i, f_j) - d(f'_i, f'_j))^2], f' the frozen stage-1 model (one domain's batch)."""
    def geometry(x):
        cos = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
        dist = euclidean(x, x)
        eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
        return cos, dist.masked_fill(eye, 0.0)        # d(x_i, x_i) = 0 exactly
    cos, dist = geometry(z)
    cos_f, dist_f = geometry(z_frozen.detach())
    return ((cos - cos_f) ** 2 + (dist - dist_f) ** 2).mean()


class GradReverse(torch.autograd.Function):
    """Identity forward, gradient times -coeff backward (DANN's gradient reversal)."""

    @staticmethod
    def forward(ctx, x, coeff: float):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


# ---------------------------------------------------------------- Eq. 15-17 (SN2M)
@dataclass(frozen=True)
class SN2MInputs:
    """What SN2M needs for queries of domain A against domain B: A's own prototypes P^A, B's
    merged set P^{B'} (a :class:`Merged` built with B as ``own`` and A as ``other``), B's
    memory bank M^B and the own-prototype index of each of B's memory entries."""

    own_prototypes: torch.Tensor        # P^A (k_A, d)
    other_merged: Merged                # P^{B'}, with .other mapping A's prototypes into it
    other_bank: torch.Tensor            # M^B (N_B, d)
    other_assign: torch.Tensor          # (N_B,) B's own prototype of each memory entry


def sn2m_loss(z: torch.Tensor, s: SN2MInputs, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 15-17 for the batch ``z`` of domain A; returns (L_SN2M, fraction of queries whose
    neighbour agreed). c_i = argmin_{p in P^A} D(f_i, p) (Eq. 15); x_i^{A,B} =
    argmin_{x in M^B} D(f_i, x) (Eq. 16); p~ = the row of P^{B'} that p^A_{c_i} became
    (translated, merged); the neighbour agrees when its own prototype's row in P^{B'} is p~.
    L = -log(Delta / (sum_c exp(f.p^{B'}_c/tau) + sum_j exp(f.m^B_j/tau))), Delta =
    exp(f.p~/tau) + [agree] exp(f.x^{A,B}/tau) (Eq. 17). No similarity threshold."""
    with torch.no_grad():
        zd = z.detach()
        c = search_distance(zd, s.own_prototypes).argmin(1)
        nn_idx = search_distance(zd, s.other_bank).argmin(1)
        target = s.other_merged.other[c].to(z.device)
        nn_row = s.other_merged.own.to(z.device)[s.other_assign[nn_idx]]
        agree = nn_row == target
    protos = s.other_merged.prototypes.to(z)
    logits_p = z @ protos.T / tau
    logits_m = z @ s.other_bank.T / tau
    denom = torch.logsumexp(torch.cat([logits_p, logits_m], 1), 1)
    pos_p = logits_p.gather(1, target.unsqueeze(1)).squeeze(1)
    pos_m = logits_m.gather(1, nn_idx.unsqueeze(1)).squeeze(1)
    delta = torch.where(agree, torch.logaddexp(pos_p, pos_m), pos_p)
    return (denom - delta).mean(), agree.float().mean()


def ucdir_self_entropy(z: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """UCDIR's instance-prototype self-entropy (Hu & Lee, ECCV 2022; ``builder.py``,
    ``self_entropy_loss_onepair``): the mean entropy of softmax(f_i . p_c / tau) over the unit
    prototypes ``prototypes``; minimising it makes each sample commit to one prototype."""
    logits = z @ prototypes.T / tau
    return -(F.log_softmax(logits, 1) * F.softmax(logits, 1)).sum(1).mean()


def ucdir_dist_of_dist(z: torch.Tensor, protos_a: torch.Tensor, protos_b: torch.Tensor,
                       tau: float = 0.01) -> torch.Tensor:
    """UCDIR's distance-of-distance loss (``dist_of_dist_loss_onepair``): a batch's pairwise
    distances 1 - cos(s_i, s_j) between soft assignments s = softmax(f . P / tau), once over
    A's prototypes and once over B's; the mean over i of the squared Euclidean distance between
    the two rows i (both domains' prototypes must arrange the batch alike). ``tau`` 0.01 is
    fixed in UCDIR's code."""
    def distances(p):
        s = F.normalize(F.softmax(z @ p.T / tau, dim=1), dim=1)
        return 1.0 - s @ s.T
    return ((distances(protos_a) - distances(protos_b)) ** 2).sum(1).mean()


def ucdir_cross_domain_loss(z_a: torch.Tensor, z_b: torch.Tensor, protos_a: torch.Tensor,
                            protos_b: torch.Tensor, se_tau: float, se_weight: float,
                            dd_weight: float) -> torch.Tensor:
    """Ablation "w/o SN2M" (Table 4: SN2M replaced by UCDIR's cross-domain matching), as UCDIR's
    released code defines its cross-domain terms (``builder.py``, ``main.py``): K-Means
    prototypes normalised to unit length; ``se_weight`` x the mean self-entropy of both
    domains' features against both domains' prototypes (the four pairs A-A, A-B, B-A, B-B)
    + ``dd_weight`` x the mean distance-of-distance loss of the features of A and of B."""
    pa, pb = F.normalize(protos_a, dim=1), F.normalize(protos_b, dim=1)
    entropy = torch.stack([ucdir_self_entropy(z, p, se_tau)
                           for z in (z_a, z_b) for p in (pa, pb)]).mean()
    dist = torch.stack([ucdir_dist_of_dist(z, pa, pb) for z in (z_a, z_b)]).mean()
    return se_weight * entropy + dd_weight * dist
