"""SEE (Le & Woo): the paper's claims about the synthetic embeddings, Eq. 2-4 and Alg. 1, and the
authors' released settings (repository Leminhbinh0209/PAKDD24-SEE): L_SEE trains the proxies
only, computed once, lambda 0.2, n_aug 8, cosine ramp 0 -> 0.4 of the batch."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sdgdml.algorithms import (Schedule, UnknownAlgorithmError, create_algorithm, create_loss,
                               proxy_losses)
from sdgdml.algorithms import see as see_module
from sdgdml.algorithms.see import SEE, SEEFirstReading, expand, mmd_coefficients, random_frame
from sdgdml.hparams_registry import default_hparams
from sdgdml.networks import create_model

PROXY_BASES = proxy_losses()           # the losses with proxies (HAS_PROXIES)


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


# ------------------------------------------------------------------ the SEE plug-in
def _see_loss(base="NormSoftmax", classes=4, dim=16, **over):
    name = f"{base}+SEE"
    torch.manual_seed(0)
    hp = {**default_hparams(name, "DigitsDG"), **over}
    return create_loss(name, classes, dim, hp), hp


def test_curriculum_expands_a_growing_top_fraction():
    loss, _ = _see_loss(see_topk_start=0.25, see_topk_end=1.0, see_schedule="linear")
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
    loss, hp = _see_loss("NormSoftmax", see_n_aug=3, see_lambda=0.7, see_topk_start=0.5,
                         see_topk_end=0.5, see_aug_weighting="per_aug")
    loss.set_progress(0.0, 5.0)
    z, y = _unit(10, 16, seed=3, dtype=torch.float32), torch.arange(10) % 4
    torch.manual_seed(11)
    total = loss(z, y)
    torch.manual_seed(11)
    frame = random_frame(16, 5, dtype=torch.float32)       # the draw the plug-in made
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
    loss, _ = _see_loss(base, see_topk_start=1.0, see_topk_end=1.0, see_n_aug=3)
    z = _unit(16, 16, seed=1, dtype=torch.float32).requires_grad_()
    y = torch.arange(16) % 4
    out = loss(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all() and loss.terms["loss_see"] != 0
    proxies, labels = (t.detach() for t in loss.proxies())
    zs, ys = loss.synthesize(z.detach(), y, 16)
    own = labels.unsqueeze(0) == y.unsqueeze(1)
    sim, nearest = (z.detach() @ proxies.T).masked_fill(~own, -2).max(1)
    order = torch.argsort(-sim)                     # expansion order: closest first
    w = proxies[nearest[order]].repeat_interleave(3, dim=0)
    # each synthetic vector has the similarity of its z to z's nearest own-class proxy
    assert torch.allclose((zs * w).sum(1), sim[order].repeat_interleave(3), atol=1e-5)
    assert torch.equal(ys, y[order].repeat_interleave(3))


def test_first_reading_gradients_of_the_synthetic_loss_reach_the_backbone():
    name = "ProxyAnchor+SEEFirstReading"
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


# ------------------------------------------------------------------ the released settings
def test_defaults_are_the_released_ones_and_the_first_reading_is_kept_by_name():
    hp = default_hparams("ProxyAnchor+SEE", "DigitsDG")
    assert (hp["see_lambda"], hp["see_n_aug"], hp["see_topk_start"], hp["see_topk_end"],
            hp["see_schedule"], hp["see_grad"], hp["see_aug_weighting"]) == (
        0.2, 8, 0.0, 0.4, "cosine", "proxies", "once")
    old = default_hparams("ProxyAnchor+SEEFirstReading", "DigitsDG")
    assert (old["see_lambda"], old["see_n_aug"], old["see_topk_start"], old["see_topk_end"],
            old["see_schedule"], old["see_grad"], old["see_aug_weighting"]) == (
        0.5, 3, 0.25, 1.0, "linear", "all", "per_aug")
    assert isinstance(create_loss("ProxyAnchor+SEEFirstReading", 4, 16, old), SEEFirstReading)
    with pytest.raises(ValueError, match="known: proxies, all"):
        create_loss("ProxyAnchor+SEE", 4, 16, {**hp, "see_grad": "backbone"})


@pytest.mark.parametrize("total", [10.0, 30.0])
def test_fraction_schedule_is_the_released_cosine_ramp(total):
    """f(e) = max - (max - min) (cos(pi e / E) + 1) / 2, min 0, max 0.4: 0 at e = 0, the middle
    at E/2, 0.4 at E; constant within an epoch (updated at its start)."""
    loss, _ = _see_loss("ProxyAnchor")
    for epoch, want in [(0.0, 0.0), (total / 2, 0.2), (total, 0.4), (0.7, 0.0)]:
        loss.set_progress(epoch, total)
        assert loss.expanded_fraction() == pytest.approx(want, abs=1e-12)
    e = 3.0
    loss.set_progress(e + 0.5, total)
    assert loss.expanded_fraction() == pytest.approx(
        0.4 - 0.4 * (math.cos(math.pi * e / total) + 1) / 2)
    loss.set_progress(total / 2, total)
    assert loss.num_expanded(90) == 18


def _released_proxy_anchor(x, y, proxies, num_classes, alpha=32.0, mrg=0.1):
    """ProxyAnchor as the released SEEProxyAnchor.proxy_loss computes it (written here)."""
    cos = F.normalize(x, dim=1) @ F.normalize(proxies, dim=1).T
    pos = F.one_hot(y, num_classes).to(cos.dtype)
    pos_sum = (pos * torch.exp(-alpha * (cos - mrg))).sum(0)
    neg_sum = ((1 - pos) * torch.exp(alpha * (cos + mrg))).sum(0)
    n_valid = (pos.sum(0) != 0).sum()
    return torch.log1p(pos_sum).sum() / n_valid + torch.log1p(neg_sum).sum() / num_classes


def _released_coefficients(n):
    """The released ``init_bweights`` recurrence (lower-triangular, last diagonal set to 0)."""
    b = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    b[:, 0] = -1.0 / n
    b[0, 0] = 1.0
    for i in range(1, n + 1):
        for j in range(1, i):
            b[i, j] = (-1.0 / n - b[i, :] @ b[j, :]) / b[j, j]
        b[i, i] = math.sqrt(max(0.0, 1 - float((b[i, :i + 1] ** 2).sum())))
    b[-1, -1] = 0.0
    return b


def test_loss_equals_the_released_algorithm_on_fixed_inputs(monkeypatch):
    """ProxyAnchor+SEE = batch loss + 0.2 * proxy loss of the synthetic batch, computed once,
    from the top round(f B) samples by cosine to their own proxy; the reference below redoes
    the released computation with the same random basis (any orthonormal completion is a
    valid draw of its Gram-Schmidt) and checks that basis."""
    classes, dim, n_aug, b = 4, 16, 8, 12
    loss, hp = _see_loss("ProxyAnchor", classes=classes, dim=dim)
    loss.set_progress(5.0, 10.0)                                  # f = 0.2: 2 of 12 expanded
    bases = []
    real_basis = see_module.null_space_basis
    monkeypatch.setattr(see_module, "null_space_basis",
                        lambda *a: (bases.append(real_basis(*a)), bases[-1])[1])
    z = _unit(b, dim, seed=21, dtype=torch.float32)
    y = torch.arange(b) % classes
    got = loss(z, y)
    proxies = loss.base.pml.proxies.detach()
    # reference
    P = F.normalize(proxies, dim=1)
    score = (z * P[y]).sum(1)
    top = torch.topk(score, round(0.2 * b)).indices
    coef = _released_coefficients(n_aug).to(torch.float32)
    basis, = bases
    synth, labels = [], []
    for row, i in enumerate(top.tolist()):
        w = P[y[i]]
        m = (z[i] @ w) * w
        r1 = z[i] - m
        v = basis[row]                                            # (n_aug + 1, d)
        assert torch.allclose(v[0], r1 / r1.norm(), atol=1e-6)
        assert torch.allclose(v @ v.T, torch.eye(n_aug + 1), atol=1e-5)
        assert (v @ w).abs().max() < 1e-5
        u = coef @ v
        synth.append((m + r1.norm() * u[1:])[-n_aug:])
        labels += [int(y[i])] * n_aug
    zs, ys = torch.cat(synth), torch.tensor(labels)
    want = (_released_proxy_anchor(z, y, proxies, classes)
            + 0.2 * _released_proxy_anchor(zs, ys, proxies, classes))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert loss.terms["see_expanded"] == 2


def test_with_the_released_settings_no_gradient_reaches_the_backbone_from_l_see():
    hp = default_hparams("ProxyAnchor+SEE", "DigitsDG")
    torch.manual_seed(0)
    algo = create_algorithm("ProxyAnchor+SEE", create_model(hp), 5, hp, Schedule(10, 5))
    see = algo.loss
    see.set_progress(5.0, 5.0)                                     # f = 0.4
    x, y = torch.randn(20, 3, 32, 32), torch.arange(20) % 5
    z = algo.network(x)
    params = list(algo.network.parameters())
    total = see(z, y)
    assert see.terms["see_expanded"] == 8 and see.terms["loss_see"] > 0
    g_total = torch.autograd.grad(total, params + list(see.base.parameters()))
    z = algo.network(x)
    g_ml = torch.autograd.grad(see.base(z, y), params + list(see.base.parameters()))
    n = len(params)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(g_total[:n], g_ml[:n]))
    assert not torch.allclose(g_total[n], g_ml[n])                 # the proxies get L_SEE
