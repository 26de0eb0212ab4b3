"""CenterPolarRotation (the abstract-based reading of CenterPolarRotation: C3E as an embedding rotation):
its geometry (C3E rotates away from centroids) and the exact reduction to the base loss. The
centroid memory and C4, shared with CenterPolarRotation, are tested in test_centerpolar.py."""
import json
import math

import pytest
import torch

from sdgdml import hparams_registry
from sdgdml.algorithms import MetricLoss, UnknownAlgorithmError, create_loss, parse_algorithm
from sdgdml.algorithms.centerpolar import angle
from sdgdml.algorithms.centerpolar_rotation import (CenterPolarRotation, centrifugal_expand,
                                                    expansion_strength)
from sdgdml.records import read_records
from sdgdml.train import main
from helpers import clustered, random_unit


class RecordingLoss(MetricLoss):
    """A base loss that records the labels it is called with (sum of cosines to fixed axes)."""

    def __init__(self, num_classes, dim):
        super().__init__()
        self.axes = random_unit(num_classes, dim, seed=99)
        self.calls = []

    def forward(self, z, y):
        self.calls.append((z.detach().clone(), y.clone()))
        return (1 - (z * self.axes[y]).sum(1)).mean()


def _hparams(**overrides):
    hp = hparams_registry.get_hparams("ProxyAnchor+CenterPolarRotation", "DigitsDG")
    hp.update(overrides)
    return hp


def test_schedule_values():
    assert expansion_strength(0.3, 2.0, "constant") == 2.0
    assert expansion_strength(0.0, 2.0, "linear") == 0.0
    assert expansion_strength(0.25, 2.0, "linear") == pytest.approx(0.5)
    assert expansion_strength(0.5, 2.0, "cosine") == pytest.approx(1.0)
    assert expansion_strength(0.25, 2.0, "cosine") == pytest.approx(1 - math.cos(math.pi / 4))
    assert expansion_strength(7.0, 2.0, "linear") == 2.0          # clamped progress
    with pytest.raises(ValueError, match="known: constant, linear, cosine"):
        expansion_strength(0.5, 1.0, "exponential")


def test_centrifugal_expand_rotates_exactly_away_from_the_centroid():
    z, c = random_unit(64, 12, seed=1), random_unit(64, 12, seed=2)
    theta = angle(z, c)
    delta = torch.rand(64, generator=torch.Generator().manual_seed(3)) * 0.5
    cap = math.radians(150)
    z2 = centrifugal_expand(z, c, delta, cap)
    assert torch.allclose(z2.norm(dim=1), torch.ones(64), atol=1e-5)
    expected = torch.maximum(theta, torch.minimum(theta + delta, torch.tensor(cap)))
    assert torch.allclose(angle(z2, c), expected, atol=1e-4)
    moved = theta < cap - 1e-3
    assert (angle(z2, c)[moved] > theta[moved]).all()
    # the shift stays in the plane spanned by z and c (a pure centrifugal move)
    basis = torch.stack([z, c], dim=2)                            # (B, d, 2)
    coef = torch.linalg.lstsq(basis, z2.unsqueeze(2)).solution
    assert torch.allclose((basis @ coef).squeeze(2), z2, atol=1e-4)


def test_expansion_on_a_centroid_picks_a_tangent_direction():
    c = random_unit(4, 8, seed=5)
    z2 = centrifugal_expand(c.clone(), c, torch.full((4,), 0.3))
    assert torch.allclose(angle(z2, c), torch.full((4,), 0.3), atol=1e-4)


def test_expanded_samples_are_farther_from_their_centroid_and_keep_their_label():
    z, y = clustered(n_per_class=10, num_classes=4, dim=16)
    base = RecordingLoss(4, 16)
    loss = CenterPolarRotation(base, 4, 16, _hparams(cpr_c4_weight=0.0, cpr_expand_schedule="constant"))
    loss.set_progress(1.0, 10.0)
    loss(z, y)                        # first step: fills the centroid memory and class radii
    assert (loss.memory.radius > 0).all()
    base.calls.clear()
    loss(z, y)
    (z_seen, y_seen), (z_exp, y_exp) = base.calls        # base loss on originals, then synthetic
    assert torch.equal(y_exp, y) and torch.equal(y_seen, y)
    cents = loss.memory.centroids[y]
    assert (angle(z_exp, cents) > angle(z_seen, cents) + 1e-3).all()
    assert loss.terms["cpr_shift_deg"] > 0


def test_expansion_and_constraint_off_is_exactly_the_base_loss():
    hp = _hparams(cpr_expand_weight=0.0, cpr_c4_weight=0.0)
    torch.manual_seed(0)
    wrapped = create_loss("ProxyAnchor+CenterPolarRotation", 5, 16, hp)
    torch.manual_seed(0)
    plain = create_loss("ProxyAnchor", 5, 16, hp)
    z = random_unit(20, 16, seed=3).requires_grad_(True)
    y = torch.arange(20) % 5
    rng = torch.get_rng_state()
    a = wrapped(z, y)
    ga, = torch.autograd.grad(a, z)
    assert torch.equal(torch.get_rng_state(), rng)      # no random numbers drawn
    b = plain(z, y)
    gb, = torch.autograd.grad(b, z)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    # and with them on, it is not
    on = create_loss("ProxyAnchor+CenterPolarRotation", 5, 16, _hparams(cpr_expand_schedule="constant"))
    on.base.load_state_dict(plain.state_dict())
    on(z, y)
    assert not torch.equal(on(z, y), b)


def test_shorthand_is_proxy_anchor_plus_centerpolar():
    assert parse_algorithm("CenterPolarRotation") == ["ProxyAnchor", "CenterPolarRotation"]
    assert (hparams_registry.default_hparams("CenterPolarRotation", "DigitsDG")
            == hparams_registry.default_hparams("ProxyAnchor+CenterPolarRotation", "DigitsDG"))
    assert isinstance(create_loss("CenterPolarRotation", 5, 8, _hparams()), CenterPolarRotation)
    assert isinstance(create_loss("SoftTriple+CenterPolarRotation", 5, 8, {
        **hparams_registry.default_hparams("SoftTriple+CenterPolarRotation", "DigitsDG")}), CenterPolarRotation)
    with pytest.raises(UnknownAlgorithmError, match="twice"):
        parse_algorithm("CenterPolarRotation+CenterPolarRotation")
    with pytest.raises(ValueError, match="known: margin, softmax"):
        create_loss("CenterPolarRotation", 5, 8, _hparams(cpr_separation="hinge"))


def _train(tmp_path, name, algorithm, hparams=None):
    out = tmp_path / name
    argv = ["--algorithm", algorithm, "--output_dir", str(out), "--targets", "sketch", "--steps", "2",
            "--checkpoint_freq", "2", "--no_eval_at_start", "--quiet", "--save_model"]
    if hparams:
        argv += ["--hparams", json.dumps(hparams)]
    main(argv)
    return read_records(out / "results.jsonl"), torch.load(out / "model.pt")


def test_trains_end_to_end_and_reduces_to_proxy_anchor_when_off(tmp_path):
    off = {"cpr_expand_weight": 0.0, "cpr_c4_weight": 0.0}
    rec_off, model_off = _train(tmp_path, "off", "ProxyAnchor+CenterPolarRotation", off)
    rec_pa, model_pa = _train(tmp_path, "pa", "ProxyAnchor")
    metric_keys = [k for k in rec_pa[-1] if k.endswith(("recall@1", "map@r"))]
    assert metric_keys and all(rec_off[-1][k] == rec_pa[-1][k] for k in metric_keys)
    assert rec_off[-1]["loss"] == rec_pa[-1]["loss"]
    assert all(torch.equal(model_off[k], model_pa[k]) for k in model_pa)
    rec_on, model_on = _train(tmp_path, "on", "CenterPolarRotation")
    last = rec_on[-1]
    assert {"cpr_base", "cpr_expand", "cpr_shift_deg", "cpr_pull", "cpr_sep"} <= set(last)
    assert last["cpr_shift_deg"] > 0 and "sketch_test_recall@1" in last
    assert not all(torch.equal(model_on[k], model_pa[k]) for k in model_pa)


@pytest.mark.parametrize("name", ["ProxyAnchor+CenterPolarRotation+SEE", "ProxyAnchor+SEE+CenterPolarRotation"])
def test_stacked_plugins_score_synthetic_samples_with_the_bare_base_loss(name, monkeypatch):
    """SEE's and C3E's synthetic embeddings go to the bare base loss: the centroid memory is
    updated once per step from the real batch only, and SEE expands only real samples."""
    hp = {**hparams_registry.default_hparams(name, "DigitsDG"), "see_topk_start": 1.0, "see_topk_end": 1.0,
          "cpr_expand_schedule": "constant"}
    loss = create_loss(name, 5, 16, hp)
    cp = loss if isinstance(loss, CenterPolarRotation) else loss.base
    see = loss.base if cp is loss else loss
    updates, expanded = [], []
    real_update, real_synth = cp.memory.update, see.synthesize
    monkeypatch.setattr(cp.memory, "update",
                        lambda c, z, y: (updates.append(len(z)), real_update(c, z, y)))
    monkeypatch.setattr(see, "synthesize",
                        lambda z, y, k: (expanded.append(len(z)), real_synth(z, y, k))[1])
    z, y = random_unit(20, 16, seed=5), torch.arange(20) % 5
    loss(z, y)
    assert updates == [20] and expanded == [20]
    assert loss.bare() is cp.base.bare() is see.base.bare() and not isinstance(
        loss.bare(), (CenterPolarRotation, type(see)))
