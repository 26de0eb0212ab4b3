"""Prototype geometry shared by UEM (``algorithms/uem.py``) and the open-set evaluation
(``evaluation.detector_scores``), from UEM (Wang, Du & Zhu, "Semantic Feature Learning for
Universal Unsupervised Cross-Domain Retrieval", NeurIPS 2024): translating and merging two
domains' prototypes (Eq. 8-9), the cross-domain search distance
D(u, v) = (1 - cos(u, v)) d(u, v) (Eq. 15-16, App. B.1) and the App. B.1 private-query
detector (Eq. 25-27). Equation numbers are the paper's; the method
is described in docs/methods.md."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- Eq. 8-9 (translate + merge)
@dataclass(frozen=True)
class Merged:
    """A domain's unified prototype set P' (Eq. 9) built from its own prototypes and the other
    domain's translated ones: ``prototypes`` (C', d); ``own`` (k_own,) and ``other``
    (k_other,): the row of P' each own / other prototype became; ``pairs``: the merged
    (own, other) index pairs."""

    prototypes: torch.Tensor
    own: torch.Tensor
    other: torch.Tensor
    pairs: tuple[tuple[int, int], ...]

    def is_merged(self) -> torch.Tensor:
        """(C',) bool: True for the rows that are a merged pair's mean."""
        out = torch.zeros(len(self.prototypes), dtype=torch.bool)
        for i, _ in self.pairs:
            out[int(self.own[i])] = True
        return out


def min_pairwise_distance(p: torch.Tensor) -> float:
    """min_{i != j} d(p_i, p_j) (inf for a single prototype)."""
    if len(p) < 2:
        return float("inf")
    d = torch.cdist(p.double(), p.double())
    return float(d.masked_fill(torch.eye(len(p), dtype=torch.bool), float("inf")).min())


def translate_merge(own: torch.Tensor, other: torch.Tensor, own_mean: torch.Tensor,
                    other_mean: torch.Tensor, merge: bool = True) -> Merged:
    """Eq. 8-9 for the domain of ``own`` (P^A; ``other`` = P^B):

    - translate: p^{B->A} = p^B + (mean(M^A) - mean(M^B));
    - pair each p^A with a translated p^{B->A} by the Hungarian algorithm on their Euclidean
      distances (one-to-one, minimal total distance);
    - a pair merges when d(p^{B->A}, p^A) < min(min_{i!=j} d(p^A_i, p^A_j),
      min_{i!=j} d(p^B_i, p^B_j));
    - P^{A'} = unmerged P^A, then unmerged P^{B->A}, then (p^A + p^{B->A}) / 2 per merged pair.

    ``merge=False`` (ablation "w/o P.M."): no pair merges, P^{A'} = P^A then every P^{B->A}."""
    k_own, k_other = len(own), len(other)
    moved = other + (own_mean - other_mean)
    dist = torch.cdist(own.double(), moved.double())
    from scipy.optimize import linear_sum_assignment  # 0.7 CPU-s: import on use

    rows, cols = linear_sum_assignment(dist.cpu().numpy())
    limit = min(min_pairwise_distance(own), min_pairwise_distance(other)) if merge else -1.0
    pairs = tuple((int(r), int(c)) for r, c in zip(rows, cols) if float(dist[r, c]) < limit)
    merged_own = {r for r, _ in pairs}
    merged_other = {c for _, c in pairs}
    keep_own = [i for i in range(k_own) if i not in merged_own]
    keep_other = [j for j in range(k_other) if j not in merged_other]
    own_map = torch.empty(k_own, dtype=torch.long)
    other_map = torch.empty(k_other, dtype=torch.long)
    rows_out = []
    for i in keep_own:
        own_map[i] = len(rows_out)
        rows_out.append(own[i])
    for j in keep_other:
        other_map[j] = len(rows_out)
        rows_out.append(moved[j])
    for i, j in pairs:
        own_map[i] = other_map[j] = len(rows_out)
        rows_out.append((own[i] + moved[j]) / 2)
    return Merged(torch.stack(rows_out), own_map, other_map, pairs)


def euclidean(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances with a finite gradient at 0."""
    sq = (u * u).sum(1, keepdim=True) + (v * v).sum(1) - 2.0 * u @ v.T
    return sq.clamp_min(1e-12).sqrt()


def search_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """D(u, v) = (1 - cos(u, v)) d(u, v), pairwise (n_u, n_v) (Eq. 15-16, App. B.1)."""
    cos = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T
    return (1.0 - cos) * euclidean(u, v)


# ---------------------------------------------------------------- App. B.1 (detector)
def _chunked_min_search(q: torch.Tensor, g: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """min over g of D(q_i, g_j) for every row of q."""
    return torch.cat([search_distance(q[s:s + chunk], g).min(1).values
                      for s in range(0, len(q), chunk)])


def _max_cross_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> float:
    """max over a in ``a``, b in ``b`` of D(a, b) (Eq. 25-26)."""
    return max(float(search_distance(a[s:s + chunk], b).max()) for s in range(0, len(a), chunk))


def detector_margin(fa: torch.Tensor, fb: torch.Tensor, pa: torch.Tensor, assign_a: torch.Tensor,
                    pb: torch.Tensor, assign_b: torch.Tensor, unmerged: float = -10.0
                    ) -> torch.Tensor:
    """App. B.1, Eq. 25-27: the private-query detector, as a margin per query of A (>= 0:
    retrieve; < 0: private, return null). Given both domains' K-Means prototypes and
    assignments: translate and merge (Eq. 8-9, in A's frame); D_{c+} = max D(f(x^A), f(x^B))
    over A's and B's members of each merged pair (Eq. 25-26); a query whose nearest merged-set
    prototype (Euclidean) is unmerged gets ``unmerged`` (private); otherwise margin =
    D_{c+} - D_i^{A->B}, with D_i^{A->B} = min over B of D(f(x_i^A), f(x^B)) (Eq. 27)."""
    merged = translate_merge(pa, pb, fa.mean(0), fb.mean(0))
    pair_of_row = {int(merged.own[i]): (i, j) for i, j in merged.pairs}
    nearest = torch.cdist(fa.double(), merged.prototypes.double()).argmin(1)
    d_min = _chunked_min_search(fa, fb)
    out = torch.full((len(fa),), unmerged, dtype=torch.float32)
    for row, (i, j) in pair_of_row.items():
        members = nearest == row
        if not members.any():
            continue
        xa, xb = fa[assign_a == i], fb[assign_b == j]
        d_c = _max_cross_distance(xa, xb) if len(xa) and len(xb) else 0.0
        out[members] = (d_c - d_min[members]).float()
    return out
