"""Spherical k-means (torch and scikit-learn backends), equiangular anchors, anchor matching."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from sdgdml.clustering import (elbow_k, elbow_point, equiangular_anchors, kmeans,
                               match_to_anchors, spherical_kmeans)


def _blobs(k=5, n=40, d=16, spread=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1)
    x = centres.repeat_interleave(n, 0) + spread * torch.randn(k * n, d, generator=g)
    return F.normalize(x, dim=1), torch.arange(k).repeat_interleave(n), centres


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_kmeans_recovers_separated_clusters(backend):
    x, truth, centres = _blobs()
    cents, assign = spherical_kmeans(x, 5, iters=20, seed=1, backend=backend)
    assert adjusted_rand_score(truth.numpy(), assign.numpy()) == 1.0
    assert torch.allclose(cents.norm(dim=1), torch.ones(5), atol=1e-5)
    # each found centre is close to one true centre
    assert ((cents @ centres.T).max(1).values > 0.95).all()


def test_kmeans_is_deterministic_and_assigns_by_cosine():
    x, _, _ = _blobs(seed=3)
    a = spherical_kmeans(x, 5, seed=7)
    b = spherical_kmeans(x, 5, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[1], (x @ a[0].T).argmax(1))


def test_kmeans_errors_are_clear():
    x, _, _ = _blobs()
    with pytest.raises(ValueError, match="known: torch, sklearn"):
        spherical_kmeans(x, 3, backend="faiss")
    with pytest.raises(ValueError, match="cannot make 500 clusters"):
        spherical_kmeans(x, 500)


@pytest.mark.parametrize("k,d", [(2, 8), (5, 8), (8, 8), (10, 64)])
def test_anchors_form_a_simplex_frame(k, d):
    a = equiangular_anchors(k, d, seed=1)
    gram = a @ a.T
    expected = torch.full((k, k), -1.0 / (k - 1))
    expected.fill_diagonal_(1.0)
    assert torch.allclose(gram, expected, atol=1e-5)
    assert torch.equal(a, equiangular_anchors(k, d, seed=1))


def test_more_anchors_than_dimensions_are_unit_vectors():
    a = equiangular_anchors(50, 8, seed=0)
    assert a.shape == (50, 8) and torch.allclose(a.norm(dim=1), torch.ones(50), atol=1e-5)


def test_matching_recovers_a_permutation():
    anchors = equiangular_anchors(6, 16, seed=2)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    noisy = F.normalize(anchors[perm] + 0.1 * torch.randn(6, 16), dim=1)
    assert torch.equal(match_to_anchors(noisy, anchors), perm)


# ---------------------------------------------------------------- Euclidean K-Means, Elbow
def _gaussian_blobs(k, per=40, dim=16, spread=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * spread
    return centres.repeat_interleave(per, 0) + torch.randn(k * per, dim, generator=g), centres


@pytest.mark.parametrize("k", [3, 7, 12])
def test_elbow_finds_the_number_of_well_separated_blobs(k):
    x, _ = _gaussian_blobs(k, seed=k)
    assert elbow_k(x, k_max=20) == k
    assert elbow_k(x, k_max=20, sample=200) == k          # on a subsample too


def test_elbow_point_is_the_knee_of_log_inertia_by_hand():
    # log W = 4.61, 3.91, 1.61, 1.39 -> scaled 1, 0.785, 0.069, 0; chord gap (1 - x) - y:
    # 0, 0.667 - 0.785, 0.333 - 0.069, 0 -> k = 3
    assert elbow_point({1: 100.0, 2: 50.0, 3: 5.0, 4: 4.0}) == 3
    assert elbow_point({1: 100.0, 2: 10.0, 3: 9.0, 4: 8.5}) == 2
    assert elbow_point({2: 7.0}) == 2


def test_euclidean_kmeans_recovers_blob_centres_and_reports_its_inertia():
    x, centres = _gaussian_blobs(4, per=50, spread=20.0, seed=3)
    c, assign, inertia = kmeans(x, 4, seed=0, n_init=2)
    order = torch.cdist(centres, c).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2, 3]                    # one centroid per blob
    assert torch.cdist(centres, c[order]).diagonal().max() < 1.0
    assert inertia == pytest.approx(float(((x - c[assign]) ** 2).sum()), rel=1e-4)
    for j in range(4):                              # every centroid is its members' mean
        assert torch.allclose(c[j], x[assign == j].mean(0), atol=1e-4)
    assert torch.equal(kmeans(x, 4, seed=0, n_init=2)[0], c)          # deterministic
