"""UEM's equations (``sdgdml/algorithms/uem_losses.py``) on hand-made inputs: Eq. 5-6 memory
bank and L_INCE, Eq. 8-9 translate + Hungarian + merge, Eq. 10, Eq. 11 SEL, Eq. 13 DAL,
Eq. 15-17 SN2M and the App. B.1 detector, each against a direct computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdgdml.algorithms import uem_losses as L
from sdgdml.clustering import kmeans
from sdgdml.prototypes import detector_margin


TAU = 0.07                      # the paper's temperature


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


# ---------------------------------------------------------------- Eq. 5-7, 10
def test_memory_update_eq5_by_hand():
    bank = _unit([1, 0], [0, 1], [1, 1])
    L.update_memory(bank, torch.tensor([0, 2]), _unit([0, 1], [1, 0]), beta=0.9)
    assert torch.allclose(bank[0], F.normalize(torch.tensor([0.9, 0.1]), dim=0))
    assert torch.allclose(bank[1], torch.tensor([0.0, 1.0]))                 # untouched
    expected = F.normalize(0.9 * torch.tensor([1.0, 1.0]) / math.sqrt(2)
                           + 0.1 * torch.tensor([1.0, 0.0]), dim=0)
    assert torch.allclose(bank[2], expected)


def test_instance_nce_eq6_by_hand():
    bank = _unit([1, 0], [0, 1], [-1, 0])
    z = _unit([1, 1])
    # positive: its own entry (index 2), negatives: the other entries of the same domain
    sims = [float(z[0] @ bank[j]) / TAU for j in range(3)]
    expected = -math.log(math.exp(sims[2]) / sum(math.exp(s) for s in sims))
    assert L.instance_nce(z, torch.tensor([2]), bank, TAU).item() == pytest.approx(expected,
                                                                                    rel=1e-5)


def test_alpha_eq10():
    assert L.ipm_alpha(50, 100) == 0.5
    assert L.ipm_alpha(0, 100) == pytest.approx(1 / (1 + math.exp(50)))
    assert L.ipm_alpha(0, 10 ** 6) == pytest.approx(0.0, abs=1e-300)       # no overflow


# ---------------------------------------------------------------- Eq. 8-9
def test_translate_hungarian_merge_eq8_9_by_hand():
    pa = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pb = torch.tensor([[1.5, 1.0], [11.0, 1.0], [50.0, 50.0]])
    # translation by mean(M^A) - mean(M^B) = (-1, -1): B -> A = (0.5, 0), (10, 0), (49, 49)
    m = L.translate_merge(pa, pb, torch.tensor([2.0, 3.0]), torch.tensor([3.0, 4.0]))
    # threshold: min(min pairwise A = 10, min pairwise B = 10) = 10: pairs (0,0) d=0.5, (1,1)
    # d=0 merge; (2,2) d=62.6 does not
    assert m.pairs == ((0, 0), (1, 1))
    expected = torch.tensor([[0.0, 10.0],            # A's unmerged prototype 2
                             [49.0, 49.0],           # B's unmerged prototype 2, translated
                             [0.25, 0.0],            # (p^A_0 + p^{B->A}_0) / 2
                             [10.0, 0.0]])           # (p^A_1 + p^{B->A}_1) / 2
    assert torch.allclose(m.prototypes, expected)
    assert m.own.tolist() == [2, 3, 0] and m.other.tolist() == [2, 3, 1]
    assert m.is_merged().tolist() == [False, False, True, True]


def test_hungarian_is_one_to_one_where_nearest_neighbours_collide():
    pa = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    pb = torch.tensor([[2.0, 0.0], [5.0, 0.0]])      # both A prototypes' nearest: pb[0]
    zero = torch.zeros(2)
    m = L.translate_merge(pa, pb, zero, zero)
    assert m.pairs == ((0, 0), (1, 1))               # total 4 beats (0,1)+(1,0) = 6
    assert torch.allclose(m.prototypes, torch.tensor([[1.0, 0.0], [4.0, 0.0]]))
    m = L.translate_merge(pa, pb * 2, zero, zero)    # B spread wider; d >= limit: no merge
    assert m.pairs == () and len(m.prototypes) == 4


def test_without_merging_the_translated_prototypes_stay_apart():
    pa = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pb = torch.tensor([[1.5, 1.0], [11.0, 1.0]])
    m = L.translate_merge(pa, pb, torch.tensor([2.0, 3.0]), torch.tensor([3.0, 4.0]),
                          merge=False)
    assert m.pairs == ()                     # (0,0) and (1,1) would merge with merge=True
    assert torch.allclose(m.prototypes, torch.cat([pa, pb - 1.0]))
    assert m.own.tolist() == [0, 1, 2] and m.other.tolist() == [3, 4]


# ---------------------------------------------------------------- Eq. 11
def test_sel_eq11_against_a_direct_sum():
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    p = torch.randn(5, 3, generator=g)
    total = 0.0
    for i in range(4):
        logits = [float(z[i] @ p[c]) / TAU for c in range(5)]
        norm = sum(math.exp(v) for v in logits)
        total += sum(math.exp(logits[c]) / norm * float((z[i] - p[c]).norm()) for c in range(5))
    assert L.semantic_enhanced_loss(z, p, TAU).item() == pytest.approx(total / 4, rel=1e-5)


# ---------------------------------------------------------------- Eq. 13-14
def test_dal_eq13_labels_a_one_and_b_zero():
    la, lb = torch.tensor([[2.0], [0.0]]), torch.tensor([[-1.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -(math.log(sig(2)) + math.log(sig(0)) + math.log(1 - sig(-1))) / 3
    assert L.domain_adversarial_loss(la, lb).item() == pytest.approx(expected, rel=1e-6)
    x = torch.ones(3, requires_grad=True)
    (L.GradReverse.apply(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


# ---------------------------------------------------------------- Eq. 15-17
def test_sn2m_eq15_17_both_switch_branches_by_hand():
    pa = _unit([1, 0, 0], [0, 1, 0])                         # A's own prototypes
    merged_b = L.Merged(prototypes=_unit([1, 0.1, 0], [0, 0.2, 1], [0, 1, 0.1]),
                        own=torch.tensor([0, 1]),            # B's prototypes -> rows 0, 1
                        other=torch.tensor([0, 2]),          # A's prototypes -> rows 0, 2
                        pairs=((0, 0),))
    bank = _unit([1, 0.05, 0], [0, 0.9, 0.5], [0, 0, 1])     # B's memory
    assign = torch.tensor([0, 1, 1])                         # B's own prototype per entry
    z = _unit([1, 0, 0.02], [0.05, 1, 0])
    loss, agree = L.sn2m_loss(z, L.SN2MInputs(pa, merged_b, bank, assign), TAU)
    # query 0: c = 0 -> p~ = row 0; neighbour entry 0, in B's prototype 0 -> row 0: agrees
    # query 1: c = 1 -> p~ = row 2; neighbour entry 1, in B's prototype 1 -> row 1: switches
    assert agree.item() == 0.5
    total = 0.0
    for i, (nn_entry, target, agrees) in enumerate([(0, 0, True), (1, 2, False)]):
        e = lambda v: math.exp(float(z[i] @ v) / TAU)  # noqa: E731
        denom = sum(e(p) for p in merged_b.prototypes) + sum(e(m) for m in bank)
        delta = e(merged_b.prototypes[target]) + (e(bank[nn_entry]) if agrees else 0.0)
        total += -math.log(delta / denom)
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)


def test_search_distance_is_one_minus_cos_times_euclidean():
    u, v = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    assert L.search_distance(u, v).item() == pytest.approx(1.0 * 5.0)


# ---------------------------------------------------------------- App. B.1
def _ring(angles_deg, per, jitter, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor(angles_deg, dtype=torch.float32).repeat_interleave(per) * math.pi / 180
    a = a + jitter * torch.randn(len(a), generator=g)
    return torch.stack([a.cos(), a.sin()], 1)


def test_detector_rejects_exactly_the_private_cluster():
    fa = _ring([0, 120, 240], 10, 0.05, 0)                 # query domain: class 240 private
    fb = _ring([0, 120], 10, 0.05, 1)
    pa, assign_a, _ = kmeans(fa, 3, seed=0)
    pb, assign_b, _ = kmeans(fb, 2, seed=0)
    margin = detector_margin(fa, fb, pa, assign_a, pb, assign_b)
    private = torch.arange(30) >= 20
    assert (margin[private] == -10.0).all()                 # nearest prototype unmerged
    assert (margin[~private] >= 0).all()
    # Eq. 25-27 by hand for query 0: D_c+ over its cluster pair minus its min D to B
    own = assign_a == assign_a[0]
    pair_b = assign_b == assign_b[int(L.search_distance(fa[:1], fb).argmin())]
    d_c = float(L.search_distance(fa[own], fb[pair_b]).max())
    d_i = float(L.search_distance(fa[:1], fb).min())
    assert margin[0].item() == pytest.approx(d_c - d_i, rel=1e-5)


def test_detector_rule_gives_detection_accuracy_for_any_embeddings():
    from sdgdml.evaluation import OpenSetRule, cross_domain_metrics

    fa = _ring([0, 120, 240], 10, 0.05, 0)
    fb = _ring([0, 120], 10, 0.05, 1)
    out = cross_domain_metrics(fa, np.repeat([0, 1, 2], 10), fb, np.repeat([0, 1], 10),
                               open_set=OpenSetRule("detector", max_clusters=6))
    assert out["detect_acc"] == 1.0 and out["open_acc"] == 1.0 and out["shared_accept"] == 1.0
