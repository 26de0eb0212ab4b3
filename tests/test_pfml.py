"""PFML (Bhatnagar & Ahuja): the paper's claims about the potentials (Eq. 1-2), the energy
(Eq. 3-6) against a brute-force double loop, the plug-in, and the proxy alignment metric."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from sdgdml.algorithms import UnknownAlgorithmError, create_loss, parse_algorithm
from sdgdml.algorithms.pfml import (MIN_DISTANCE, PotentialField, attraction,
                                    potential_energy, repulsion)
from sdgdml.evaluation import proxy_alignment
from sdgdml.hparams_registry import default_hparams

DELTA = 0.2


def _force(potential, distance, delta, alpha, dim=3):
    """Force -grad_r psi(r, z) on a point r at ``distance`` from a charge z at the origin,
    and the unit direction from z to r."""
    direction = F.normalize(torch.tensor([1.0, -2.0, 0.5][:dim], dtype=torch.float64), dim=0)
    r = (distance * direction).requires_grad_()
    psi = potential((r * r).sum(), delta, alpha)
    (grad,) = torch.autograd.grad(psi, r)
    return -grad, direction


@pytest.mark.parametrize("alpha", [1.0, 3.0, 6.0])
def test_attraction_force_is_zero_inside_delta_and_decays_outside(alpha):
    for d in [0.0, 0.05, 0.1, 0.199]:
        force, _ = _force(attraction, d, DELTA, alpha)
        assert torch.all(force == 0), d
    magnitudes = []
    for d in [0.21, 0.3, 0.5, 0.9, 1.5, 2.0]:
        force, direction = _force(attraction, d, DELTA, alpha)
        assert force @ direction < 0                                  # towards the charge
        assert force.norm().item() == pytest.approx(alpha / d ** (alpha + 1), rel=1e-9)
        magnitudes.append(force.norm().item())
    assert all(a > b for a, b in zip(magnitudes, magnitudes[1:]))     # decays with distance


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_repulsion_force_is_zero_beyond_delta(alpha):
    for d in [0.201, 0.3, 1.0, 2.0]:
        force, _ = _force(repulsion, d, DELTA, alpha)
        assert torch.all(force == 0), d
    for d in [0.02, 0.1, 0.19]:
        force, direction = _force(repulsion, d, DELTA, alpha)
        assert force @ direction > 0                                  # away from the charge
        assert force.norm().item() == pytest.approx(alpha / d ** (alpha + 1), rel=1e-9)


def test_potentials_are_eq1_and_eq2_and_continuous_at_delta():
    d = torch.tensor([0.0, 0.1, 0.2, 0.5, 1.7], dtype=torch.float64)
    alpha = 3.0
    att = attraction(d * d, DELTA, alpha)
    rep = repulsion(d * d, DELTA, alpha)
    exp_att = [-1 / DELTA ** alpha if x < DELTA else -1 / x ** alpha for x in d.tolist()]
    exp_rep = [1 / max(x, MIN_DISTANCE) ** alpha if x < DELTA else 1 / DELTA ** alpha
               for x in d.tolist()]
    assert torch.allclose(att, torch.tensor(exp_att, dtype=torch.float64))
    assert torch.allclose(rep, torch.tensor(exp_rep, dtype=torch.float64))


def test_alpha_zero_field_has_no_decay():
    """alpha = 0: both potentials are the same at every distance (Eq. 1-2 with
    1/x^0 = 1), so neither the potential nor the force decays; the force is zero."""
    d2 = torch.tensor([0.01, 0.04, 0.25, 1.0, 4.0], dtype=torch.float64) ** 2
    assert torch.equal(attraction(d2, DELTA, 0.0), -torch.ones(5, dtype=torch.float64))
    assert torch.equal(repulsion(d2, DELTA, 0.0), torch.ones(5, dtype=torch.float64))
    for d in [0.1, 0.5, 1.5]:
        assert torch.all(_force(attraction, d, DELTA, 0.0)[0] == 0)
    # whereas alpha > 0 decays outside delta
    assert attraction(torch.tensor(1.0), DELTA, 2.0) > attraction(torch.tensor(0.25), DELTA, 2.0)


def _brute_force_energy(points, labels, delta_att, delta_rep, alpha):
    """Eq. 3-6 by hand: for each point a, the field of its class at a (every other point of
    the same class attracts with Eq. 1, every point of another class repels with Eq. 2)."""
    total = 0.0
    for a, (xa, ya) in enumerate(zip(points, labels)):
        for b, (xb, yb) in enumerate(zip(points, labels)):
            if a == b:
                continue                                   # own field excluded
            dist = math.dist(xa, xb)
            if ya == yb:
                total += -1 / delta_att ** alpha if dist < delta_att else -1 / dist ** alpha
            else:
                total += 1 / dist ** alpha if dist < delta_rep else 1 / delta_rep ** alpha
    return total


@pytest.mark.parametrize("delta_att,delta_rep,alpha", [(0.3, 0.3, 2.0), (0.2, 0.35, 4.0),
                                                       (0.5, 0.25, 1.0), (0.3, 0.3, 0.0)])
def test_energy_equals_a_brute_force_double_loop(delta_att, delta_rep, alpha):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(9, 3)) * 0.2            # pairs inside and outside delta
    labels = [0, 0, 1, 2, 1, 0, 2, 2, 1]
    expected = _brute_force_energy(points.tolist(), labels, delta_att, delta_rep, alpha)
    got = potential_energy(torch.tensor(points), torch.tensor(labels), delta_att, delta_rep,
                           alpha)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # measuring distances in units of delta_att multiplies U by delta_att^alpha
    scaled = potential_energy(torch.tensor(points), torch.tensor(labels), delta_att, delta_rep,
                              alpha, unit=delta_att)
    assert scaled.item() == pytest.approx(expected * delta_att ** alpha, rel=1e-10)


@pytest.mark.parametrize("delta_rep,alpha", [(0.3, 4.0), (0.6, 1.0)])
def test_energy_gradient_is_the_derivative_of_the_energy(delta_rep, alpha):
    """The closed-form backward of the energy against finite differences (float64): points
    inside and outside both ranges, same and different classes."""
    rng = np.random.default_rng(1)
    points = torch.tensor(rng.normal(size=(9, 3)) * 0.25, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2, 1])
    assert torch.autograd.gradcheck(
        lambda x: potential_energy(x, labels, 0.3, delta_rep, alpha, unit=0.3), (points,))


def _pfml_hp(name="PFML", **over):
    return {**default_hparams(name, "DigitsDG"), **over}


def test_standalone_loss_is_the_normalised_energy_of_embeddings_and_proxies():
    hp = _pfml_hp(pfml_m=3, pfml_delta=0.3, pfml_alpha=3.0)
    torch.manual_seed(0)
    loss = create_loss("PFML", 4, 8, hp)
    proxies, labels = loss.proxies()
    assert proxies.shape == (12, 8) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert torch.allclose(proxies.norm(dim=1), torch.ones(12))
    z = F.normalize(torch.randn(10, 8), dim=1)
    y = torch.arange(10) % 4
    points = torch.cat([z, proxies.detach()]).double()
    all_labels = torch.cat([y, labels]).tolist()
    expected = _brute_force_energy(points.tolist(), all_labels, 0.3, 0.3, 3.0)
    # in units of delta, minus 1 per repelling (different-class) ordered pair, per embedding
    different = sum(a != b for a in all_labels for b in all_labels)
    assert loss(z, y).item() == pytest.approx((expected * 0.3 ** 3 - different) / 10, rel=1e-5)


def test_energy_is_zero_for_far_apart_classes_and_negative_for_a_clustered_class():
    """Relative to infinity: different classes beyond delta_rep contribute nothing, and a
    class whose members sit within delta_att has energy -1 per ordered pair (Eq. 1 at its
    floor), per batch embedding."""
    field = PotentialField(0.2, 0.2, 4.0)
    far = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert field.energy(far, torch.tensor([0, 1, 2])).item() == pytest.approx(0.0, abs=1e-7)
    clustered = torch.tensor([[0.0, 0.0], [0.05, 0.0], [0.0, 0.05], [1.0, 0.0]])
    got = field.energy(clustered, torch.tensor([0, 0, 0, 1]), n_samples=2)
    assert got.item() == pytest.approx(-6 / 2)


def test_gradients_do_not_vanish_with_many_classes_of_proxies():
    """109 classes x 15 proxies (GlyphsDG's seen classes): the embeddings' gradients at
    initialisation stay far above Adam's eps (1e-8); averaged over all pairs they were ~3e-11."""
    torch.manual_seed(0)
    loss = create_loss("PFML", 109, 64, _pfml_hp())
    z = torch.randn(64, 64, requires_grad=True)
    loss(z, torch.randint(0, 109, (64,))).backward()
    assert z.grad.abs().mean() > 1e-7


def test_proxies_and_embeddings_both_receive_gradients():
    torch.manual_seed(0)
    loss = create_loss("PFML", 4, 8, _pfml_hp(pfml_m=2))
    z = F.normalize(torch.randn(12, 8), dim=1).requires_grad_()
    loss(z, torch.arange(12) % 4).backward()
    assert z.grad.abs().sum() > 0 and loss.proxy_vectors.grad.abs().sum() > 0


def test_coinciding_points_are_finite():
    """Same-class duplicates (attraction) and different-class duplicates (repulsion floored
    at MIN_DISTANCE) give finite energies and gradients."""
    field = PotentialField(0.2, 0.2, 6.0)
    x = F.normalize(torch.randn(3, 5), dim=1)
    x = torch.cat([x, x]).requires_grad_()
    for labels in (torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 1, 2, 0])):
        energy = field.energy(x, labels)
        (grad,) = torch.autograd.grad(energy, x)
        assert torch.isfinite(energy) and torch.isfinite(grad).all()


def test_separate_repulsion_radius():
    """delta_rep > delta_att repels different classes out to delta_rep (Sec. 4.5)."""
    field = PotentialField(0.2, 0.4, 2.0)
    x = torch.tensor([[0.0, 0.0], [0.3, 0.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(field.energy(x, torch.tensor([0, 1])), x)
    assert grad.abs().sum() > 0
    (grad,) = torch.autograd.grad(PotentialField(0.2, 0.2, 2.0).energy(x, torch.tensor([0, 1])), x)
    assert grad.abs().sum() == 0


@pytest.mark.parametrize("base", ["ProxyNCA", "SoftTriple", "ProxyAnchor"])
def test_plugin_adds_the_weighted_energy_of_batch_and_base_proxies(base):
    name = f"{base}+PFML"
    hp = _pfml_hp(name, pfml_weight=0.3)
    torch.manual_seed(0)
    loss = create_loss(name, 4, 8, hp)
    z = F.normalize(torch.randn(10, 8), dim=1)
    y = torch.arange(10) % 4
    proxies, labels = loss.proxies()
    field = PotentialField.from_hparams(hp)
    energy = field.energy(torch.cat([z, proxies]), torch.cat([y, labels]), n_samples=10)
    assert loss(z, y).item() == pytest.approx((loss.base(z, y) + 0.3 * energy).item(), rel=1e-6)
    assert loss.terms["pfml_energy"] == pytest.approx(energy.item(), rel=1e-6)


def test_pfml_hparams_are_declared_once_and_compositions_validate():
    hp = default_hparams("SoftTriple+SEE+PFML", "DigitsDG")
    for k in ("st_centers", "see_n_aug", "see_lambda", "pfml_delta", "pfml_alpha", "pfml_weight"):
        assert k in hp
    assert default_hparams("PFML", "DigitsDG")["pfml_m"] == 15
    assert parse_algorithm("PFML+SEE") == ["PFML", "SEE"]
    with pytest.raises(UnknownAlgorithmError, match="appears twice"):
        parse_algorithm("PFML+PFML")
    with pytest.raises(ValueError, match="pfml_alpha >= 0"):
        create_loss("PFML", 3, 8, _pfml_hp(pfml_alpha=-1.0))


def test_no_proxies_ablation_uses_the_batch_only():
    hp = _pfml_hp(pfml_m=0)
    loss = create_loss("PFML", 3, 8, hp)
    assert loss.proxies() is None and list(loss.parameters()) == []
    z, y = F.normalize(torch.randn(6, 8), dim=1), torch.arange(6) % 3
    assert loss(z, y).item() == pytest.approx(PotentialField.from_hparams(hp).energy(z, y).item())


# ------------------------------------------------------------------ proxy alignment (Sec. 4.4)
def test_alignment_with_one_proxy_per_class_is_the_distance_to_the_closest_embedding():
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[0.6, 0.8], [math.cos(0.1), math.sin(0.1)], [0.0, -1.0], [0.8, 0.6]])
    labels = torch.tensor([0, 0, 1, 1])
    d0 = 2 * math.sin(0.05)                  # class 0: the embedding at angle 0.1 rad
    d1 = math.dist([0.0, 1.0], [0.8, 0.6])   # class 1: (0.8, 0.6) is closer than (0, -1)
    assert proxy_alignment(proxies, torch.tensor([0, 1]), x, labels) == pytest.approx(
        (d0 + d1) / 2, rel=1e-6)


def test_alignment_with_several_proxies_is_the_w2_distance():
    """Against an optimal-transport solution (scipy's assignment) between a class's M proxies
    and the embeddings closest to them."""
    g = torch.Generator().manual_seed(0)
    p = F.normalize(torch.randn(12, 6, generator=g), dim=1)
    p_labels = torch.arange(3).repeat_interleave(4)
    x = F.normalize(torch.randn(40, 6, generator=g), dim=1)
    x_labels = torch.arange(40) % 3
    w2 = []
    for c in range(3):
        pc, xc = p[p_labels == c].double(), x[x_labels == c].double()
        nearest = xc[torch.cdist(pc, xc).argmin(1)]           # the data closest to them
        cost = torch.cdist(pc, nearest).pow(2).numpy()
        rows, cols = linear_sum_assignment(cost)
        w2.append(math.sqrt(cost[rows, cols].mean()))
    assert proxy_alignment(p, p_labels, x, x_labels) == pytest.approx(np.mean(w2), rel=1e-5)
