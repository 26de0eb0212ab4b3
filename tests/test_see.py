"""SEE (Le & Woo): the paper's claims about the synthetic embeddings, Eq. 2-4 and Alg. 1."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sdgdml.algorithms import (Schedule, UnknownAlgorithmError, create_algorithm, create_loss,
                               names)
from sdgdml.algorithms.see import SEE, expand, mmd_coefficients, random_frame
from sdgdml.hparams_registry import default_hparams
from sdgdml.networks import create_model

PROXY_BASES = [b for b in names("loss") if b != "MultiSimilarity"]


def _unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _expanded(n_aug, b=9, d=12, seed=0):
    z, w = _unit(b, d, seed=seed), _unit(b, d, seed=seed + 1)
    frame = random_frame(d, n_aug + 2, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed + 2))
    return z, w, expand(z, w, n_aug, frame)


@pytest.mark.parametrize("n_aug", [1, 2, 3, 5, 8])
def test_alg1_coefficients_give_mmd_centres(n_aug):
    """Eq. 2 for the coefficient rows alone: unit norm, pairwise -1/n_aug."""
    a = mmd_coefficients(n_aug)
    expected = torch.full((n_aug + 1, n_aug + 1), -1.0 / n_aug, dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    assert torch.allclose(a @ a.T, expected, atol=1e-12)
    assert torch.equal(a, torch.tril(a))


@pytest.mark.parametrize("n_aug", [1, 3, 6, 10])
def test_every_synthetic_vector_has_the_distance_of_z_to_its_proxy(n_aug):
    z, w, zs = _expanded(n_aug)
    assert zs.shape == (9, n_aug, 12)
    d_z = (z - w).norm(dim=1, keepdim=True)
    assert torch.allclose((zs - w.unsqueeze(1)).norm(dim=2), d_z.expand(-1, n_aug), atol=1e-12)
    assert torch.allclose(zs.norm(dim=2), torch.ones(9, n_aug, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("n_aug", [1, 3, 6, 10])
def test_synthetic_vectors_and_r_are_mmd_centres(n_aug):
    """The n_aug + 1 directions (r/||r|| and the synthetic ones) in the null space of w_y have
    pairwise inner products -1/n_aug (Eq. 2)."""
    z, w, zs = _expanded(n_aug, seed=3)
    along = (z * w).sum(1, keepdim=True)
    r = z - along * w
    r_norm = r.norm(dim=1, keepdim=True)
    mu = torch.cat([(r / r_norm).unsqueeze(1),
                    (zs - (along * w).unsqueeze(1)) / r_norm.unsqueeze(1)], dim=1)
    gram = mu @ mu.transpose(1, 2)
    expected = torch.full((n_aug + 1, n_aug + 1), -1.0 / n_aug, dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    assert torch.allclose(gram, expected.expand_as(gram), atol=1e-10)
    # centres are in the null space of w_y
    assert torch.allclose(torch.einsum("bkd,bd->bk", mu, w), torch.zeros(9, n_aug + 1,
                                                                      dtype=torch.float64),
                          atol=1e-12)


def test_synthetic_vectors_keep_the_component_along_the_proxy():
    z, w, zs = _expanded(4, seed=5)
    along_z = (z * w).sum(1, keepdim=True)
    assert torch.allclose(torch.einsum("bkd,bd->bk", zs, w), along_z.expand(-1, 4), atol=1e-12)


def test_consecutive_draws_orient_the_simplex_differently_but_reproducibly():
    z, w = _unit(4, 16), _unit(4, 16, seed=1)
    f1 = random_frame(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    f2 = random_frame(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    f1b = random_frame(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(expand(z, w, 3, f1), expand(z, w, 3, f1b))
    assert not torch.allclose(expand(z, w, 3, f1), expand(z, w, 3, f2))


def test_a_sample_on_its_proxy_gives_copies_of_itself_and_finite_gradients():
    w = _unit(3, 8)
    z = w.clone().requires_grad_()
    zs = expand(z, w, 3, random_frame(8, 5, dtype=torch.float64))
    assert torch.allclose(zs, w.unsqueeze(1).expand(-1, 3, -1), atol=1e-12)
    zs.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_expansion_is_differentiable_in_z_and_the_proxy():
    """Autograd matches finite differences (so gradients reach the backbone through z)."""
    z = _unit(3, 7, seed=2).requires_grad_()
    w = _unit(3, 7, seed=4).requires_grad_()
    frame = random_frame(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda a, b: expand(a, b, 3, frame), (z, w))


def test_too_many_synthetic_vectors_for_the_dimension_is_an_error():
    with pytest.raises(ValueError, match="see_n_aug"):
        expand(_unit(2, 5), _unit(2, 5, seed=1), 4, random_frame(5, 6))


# ------------------------------------------------------------------ the SEE loss wrapper
def _see_loss(base="NormSoftmax", classes=4, dim=16, **over):
    name = f"{base}+SEE"
    torch.manual_seed(0)
    hp = {**default_hparams(name, "DigitsDG"), **over}
    return create_loss(name, classes, dim, hp), hp


def test_curriculum_expands_a_growing_top_fraction():
    loss, _ = _see_loss(see_topk_start=0.25, see_topk_end=1.0)
    ks = []
    for epoch in [0.0, 0.9, 1.0, 2.5, 4.0, 9.99, 12.0]:
        loss.set_progress(epoch, 10.0)
        ks.append(loss.num_expanded(40))
    assert ks[0] == ks[1] == 10                     # constant within an epoch
    assert ks == sorted(ks) and ks[-2] == ks[-1] == 40
    assert ks[2] == round((0.25 + 0.75 / 9) * 40)


def test_the_expanded_samples_are_those_closest_to_their_proxy():
    loss, _ = _see_loss("ProxyAnchor", see_n_aug=2)
    z, y = _unit(12, 16, seed=5, dtype=torch.float32), torch.arange(12) % 4
    proxies, _ = loss.proxies()
    d_y = (z - proxies[y]).norm(dim=1)
    zs, ys = loss.synthesize(z, y, 5)
    chosen = torch.sort(d_y)[1][:5]
    assert torch.equal(ys, y[chosen].repeat_interleave(2))
    assert torch.allclose((zs - proxies[ys]).norm(dim=1), d_y[chosen].repeat_interleave(2),
                          atol=1e-5)


def test_loss_is_eq4_with_eq3_written_out_for_normsoftmax():
    """L = L_ML + lambda * E_{z in M_k} sum_i l(z*_i) with l the normalised-softmax loss,
    computed here by an explicit loop over the expanded samples and their copies."""
    loss, hp = _see_loss("NormSoftmax", see_n_aug=3, see_lambda=0.7, see_topk_start=0.5)
    loss.set_progress(0.0, 5.0)
    z, y = _unit(10, 16, seed=3, dtype=torch.float32), torch.arange(10) % 4
    torch.manual_seed(11)
    total = loss(z, y)
    torch.manual_seed(11)
    frame = random_frame(16, 5, dtype=torch.float32)       # the draw the wrapper made
    W = F.normalize(loss.base.pml.W.T, dim=1)

    def ell(v, c):
        return -torch.log_softmax(W @ v / hp["nsm_temperature"], dim=0)[c]

    l_ml = sum(ell(z[i], y[i]) for i in range(10)) / 10
    k = 5
    order = torch.argsort(-(z * W[y]).sum(1))[:k]
    zs = expand(z[order], W[y[order]], 3, frame)
    l_see = sum(sum(ell(zs[j, i], y[order[j]]) for i in range(3)) for j in range(k)) / k
    assert total.item() == pytest.approx((l_ml + 0.7 * l_see).item(), rel=1e-5)
    assert loss.terms["see_expanded"] == k


@pytest.mark.parametrize("base", PROXY_BASES)
def test_see_wraps_every_proxy_loss_and_keeps_distances_to_the_nearest_own_proxy(base):
    loss, _ = _see_loss(base, see_topk_start=1.0)
    z = _unit(16, 16, seed=1, dtype=torch.float32).requires_grad_()
    y = torch.arange(16) % 4
    out = loss(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all() and loss.terms["loss_see"] > 0
    proxies, labels = (t.detach() for t in loss.proxies())
    zs, ys = loss.synthesize(z.detach(), y, 16)
    own = labels.unsqueeze(0) == y.unsqueeze(1)
    sim, nearest = (z.detach() @ proxies.T).masked_fill(~own, -2).max(1)
    order = torch.argsort(-sim)                     # expansion order: closest first
    w = proxies[nearest[order]].repeat_interleave(3, dim=0)
    # each synthetic vector has the similarity of its z to z's nearest own-class proxy
    assert torch.allclose((zs * w).sum(1), sim[order].repeat_interleave(3), atol=1e-5)
    assert torch.equal(ys, y[order].repeat_interleave(3))


def test_gradients_of_the_synthetic_loss_reach_the_backbone():
    name = "ProxyAnchor+SEE"
    hp = default_hparams(name, "DigitsDG")
    torch.manual_seed(0)
    algo = create_algorithm(name, create_model(hp), 5, hp, Schedule(10, 5))
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 5
    z = algo.network(x)
    zs, ys = algo.loss.synthesize(z, y, 8)
    algo.loss.base(zs, ys).backward()
    first_conv = algo.network.backbone.features[0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0


def test_a_proxy_free_base_is_a_clear_error():
    with pytest.raises(UnknownAlgorithmError, match="MultiSimilarity has no proxies"):
        _see_loss("MultiSimilarity")


def test_lambda_zero_is_the_bare_base_loss():
    loss, _ = _see_loss("ProxyAnchor", see_lambda=0.0)
    z, y = _unit(8, 16, dtype=torch.float32), torch.arange(8) % 4
    assert torch.equal(loss(z, y), loss.base(z, y))
    assert isinstance(loss, SEE) and math.isfinite(loss.terms["loss_ml"])


@pytest.mark.parametrize("name", ["ProxyAnchor+SEE", "PFML", "SoftTriple+SEE+PFML"])
def test_a_resumed_algorithm_continues_identically(name):
    """state_dict covers the plug-ins' state (PFML proxies); SEE's random frame comes from the
    global RNG, which train.py checkpoints, so equal RNG states give equal steps."""
    hp = default_hparams(name, "DigitsDG")

    def build():
        torch.manual_seed(0)
        return create_algorithm(name, create_model(hp), 5, hp, Schedule(10, 5))

    def batch(s):
        g = torch.Generator().manual_seed(s)
        return {"x": torch.randn(16, 3, 32, 32, generator=g), "y": torch.arange(16) % 5}

    a = build()
    for s in range(2):
        a.update(batch(s))
    b = build()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for algo in (a, b):
        torch.manual_seed(42)
        algo.update(batch(7))
    for k, v in a.state_dict()["modules"].items():
        assert torch.equal(v, b.state_dict()["modules"][k]), k
