"""Clustering of embeddings: spherical k-means (torch, on any device, or scikit-learn), fixed
equiangular anchor sets and one-to-one matching of centroids to anchors.

Used by UEM (prototypes of each domain's embeddings, a unified prototypical structure shared by
the domains) and by the cluster-based open-set rejection rule of the evaluation module.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

BACKENDS = ("torch", "sklearn")


def _kmeans_pp_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007) with cosine distance 1 - <x, c>."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    dist = (1.0 - x @ x[first]).clamp(min=0)
    for _ in range(1, k):
        p = dist.double().cpu()
        idx = (int(torch.multinomial(p / p.sum(), 1, generator=gen)) if p.sum() > 0
               else int(torch.randint(n, (1,), generator=gen)))
        centres.append(x[idx])
        dist = torch.minimum(dist, (1.0 - x @ x[idx]).clamp(min=0))
    return torch.stack(centres)


def _torch_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = _kmeans_pp_init(x, k, gen)
    for _ in range(iters):
        assign = (x @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if empty.any():                 # re-seed empty clusters with the worst-fitted points
            worst = (x * centres[assign]).sum(1).argsort()[: int(empty.sum())]
            sums[empty] = x[worst]
        new = F.normalize(sums, dim=1)
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def _sklearn_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, max_iter=max(iters, 1), random_state=seed)
    km.fit(x.detach().cpu().double().numpy())
    return F.normalize(torch.from_numpy(km.cluster_centers_).to(x), dim=1)


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0,
                     backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of L2-normalised rows ``x`` (n, d) under cosine similarity.

    Returns (centroids (k, d), unit norm; assignments (n,) by the highest cosine). ``backend``:
    "torch" (k-means++ then Lloyd iterations of spherical k-means, on ``x``'s device) or
    "sklearn" (``sklearn.cluster.KMeans``, Euclidean k-means on the CPU, centres normalised).
    Deterministic for a given ``seed``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"cannot make {k} clusters of {x.shape[0]} points")
    x = F.normalize(x.float(), dim=1)
    fit = _torch_kmeans if backend == "torch" else _sklearn_kmeans
    centres = fit(x, k, iters, seed)
    return centres, (x @ centres.T).argmax(1)


def equiangular_anchors(k: int, d: int, seed: int = 0) -> torch.Tensor:
    """k fixed unit vectors in R^d, as spread as possible: a simplex equiangular tight frame
    (pairwise cosine -1/(k-1)) when k <= d, else seeded Gaussian directions (nearly orthogonal
    in high dimension)."""
    gen = torch.Generator().manual_seed(seed)
    if k == 1:
        return F.normalize(torch.randn(1, d, generator=gen), dim=1)
    if k > d:
        return F.normalize(torch.randn(k, d, generator=gen), dim=1)
    basis, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
    return F.normalize((basis @ centred).T, dim=1).float()


def match_to_anchors(centroids: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The one-to-one assignment of centroids (k, d) to anchors (k, d) that maximises the total
    cosine similarity (Hungarian algorithm): ``result[i]`` is the anchor of centroid i."""
    sims = (centroids @ anchors.T).detach().cpu().double().numpy()
    rows, cols = linear_sum_assignment(-sims)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out).to(centroids.device)
