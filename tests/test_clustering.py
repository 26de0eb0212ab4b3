"""Spherical k-means (torch and scikit-learn backends), equiangular anchors, anchor matching."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from sdgdml.clustering import equiangular_anchors, match_to_anchors, spherical_kmeans


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
