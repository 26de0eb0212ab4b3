"""Clustering of embeddings: spherical k-means (torch, on any device, or scikit-learn), fixed
equiangular anchor sets and one-to-one matching of centroids to anchors.

Euclidean K-Means and the Elbow estimate of the number of clusters (UEM, App. B.1 detector).
Used by ProtoAlign (prototypes of each domain's embeddings, a unified prototypical structure shared by
the domains) and by the cluster-based open-set rejection rule of the evaluation module.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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
    from scipy.optimize import linear_sum_assignment  # 0.7 CPU-s: import on use

    rows, cols = linear_sum_assignment(-sims)
    out = np.empty(len(rows), dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out).to(centroids.device)


# ---------------------------------------------------------------- Euclidean K-Means and Elbow
def _kmeans_once(x: torch.Tensor, k: int, iters: int, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """k-means++ seeding (squared Euclidean) then Lloyd iterations."""
    n = x.shape[0]
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2.double().cpu()
        idx = (int(torch.multinomial(p / p.sum(), 1, generator=gen)) if p.sum() > 0
               else int(torch.randint(n, (1,), generator=gen)))
        centres.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c)
        if torch.equal(new, c):
            break
        c = new
    dist = torch.cdist(x, c)
    assign = dist.argmin(1)
    inertia = float((dist.gather(1, assign.unsqueeze(1)) ** 2).sum())
    return c, assign, inertia


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, n_init: int = 1
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Euclidean K-Means of the rows of ``x`` (n, d): (centroids (k, d), assignments (n,),
    inertia = sum of squared distances to the assigned centroid); the best of ``n_init``
    k-means++ starts. Deterministic for a given ``seed``; runs on ``x``'s device."""
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"cannot make {k} clusters of {x.shape[0]} points")
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(max(1, n_init)):
        fit = _kmeans_once(x, k, iters, gen)
        if best is None or fit[2] < best[2]:
            best = fit
    return best


def elbow_point(inertias: dict[int, float], k_min: int = 1) -> int:
    """The elbow of an inertia curve {k: W(k)}: the "knee" (Satopaa et al. 2011, Kneedle) of
    log W(k), i.e. the k furthest below the chord joining the curve's ends once k and log W(k)
    are scaled to [0, 1] (ties: the smallest k). On log W a drop by a constant factor counts
    the same at any k, so a true count of 12 is found as easily as 3 (on W itself the late
    drops look flat next to the first ones); on noisy, weakly clustered embeddings it still
    lands inside the range rather than at its first step. A curve with one point gives it.
    Only k >= ``k_min`` is returned: a curve with no knee (log W(k) above its chord everywhere,
    as for features without cluster structure, e.g. a network at random initialisation) scores
    0 at both ends and <= 0 inside, and its first point, k_min - 1, is only there to draw the
    curve (it made UEM's Elbow return K = 1)."""
    ks = sorted(inertias)
    if len(ks) == 1:
        return ks[0]
    logw = {k: math.log(max(inertias[k], 1e-30)) for k in ks}
    lo, hi = min(logw.values()), max(logw.values())
    span = (hi - lo) or 1.0
    score = {k: (1 - (k - ks[0]) / (ks[-1] - ks[0])) - (logw[k] - lo) / span for k in ks}
    return max((k for k in ks if k >= k_min), key=lambda k: (score[k], -k), default=ks[-1])


@torch.no_grad()
def elbow_k(x: torch.Tensor, k_max: int, k_min: int = 2, iters: int = 20, seed: int = 0,
            n_init: int = 2, sample: int = 0) -> int:
    """The Elbow method: K-Means for every k in [k_min - 1, k_max] (capped by the number of
    points) and the elbow of the inertia curve (``elbow_point``); ``sample`` > 0 clusters a
    seeded random subset of that many rows (the estimate's cost is then independent of n)."""
    if sample and x.shape[0] > sample:
        gen = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=gen)[:sample].to(x.device)]
    k_max = min(k_max, x.shape[0])
    lo = max(1, k_min - 1)
    if k_max <= lo:
        return max(1, k_max)
    inertias = {k: kmeans(x, k, iters, seed + k, n_init)[2] for k in range(lo, k_max + 1)}
    return elbow_point(inertias, k_min)
