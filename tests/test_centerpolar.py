"""CenterPolar as the full paper describes it: C3E is an adversarial ascent on the images (network
and centroids frozen) that increases the geodesic distance to the class centroid; expanded images
keep their labels and join the batch; C4 pulls samples to their centroids and pushes centroids
apart; with both off the method is its base loss exactly."""
import copy
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule, create_algorithm, create_loss, frozen, parse_algorithm
from sdgdml.algorithms.centerpolar import (CenterPolar, CentroidMemory, c3e_ascent, c4_loss,
                                           distance)
from sdgdml.networks import create_model
from sdgdml.records import read_records
from sdgdml.train import main
from helpers import clustered, random_unit

NAME = "ProxyAnchor+CenterPolar"


def _hparams(**overrides):
    return {**hparams_registry.get_hparams(NAME, "DigitsDG"), **overrides}


def _images(n=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % classes


def _algorithm(name=NAME, classes=3, **over):
    hp = _hparams(**over) if "CenterPolar" in name else {
        **hparams_registry.get_hparams(name, "DigitsDG"), **over}
    torch.manual_seed(0)
    return create_algorithm(name, create_model(hp), classes, hp, Schedule(20, 10))


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ C3E
def test_distance_is_the_geodesic_arccos_or_one_minus_cosine():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[math.cos(1.0), math.sin(1.0)]])
    assert distance(a, b).item() == pytest.approx(1.0, abs=1e-6)
    assert distance(a, b, "cosine").item() == pytest.approx(1 - math.cos(1.0), abs=1e-6)
    assert torch.isfinite(distance(a, a)).all()                   # clamped: finite at the centroid
    with pytest.raises(ValueError, match="known: geodesic, cosine"):
        distance(a, b, "euclid")


@pytest.mark.parametrize("kind,step", [("geodesic", 0.5), ("cosine", 20.0)])
def test_ascent_increases_the_distance_at_every_step_and_leaves_network_and_centroids(kind, step):
    """(1 - cos is flat near the centroid, where an untrained network puts every image: its
    ascent needs far larger steps than the geodesic distance's, whose slope is 1.)"""
    algo = _algorithm()
    x, y = _images()
    with torch.no_grad():
        z = algo.embed(x)
    cp = algo.loss
    cents = cp.memory.current(z, y)[0]
    cp.memory.update(cents, z, y)                     # centroids of the three classes
    net_before, mem_before = _state(algo.network), _state(cp.memory)
    with frozen(algo.network) as net:
        x_adv, dists = c3e_ascent(net, x, cp.memory.centroids[y], 6, step, 0.0, kind)
    assert dists.shape == (7, len(x))
    assert (dists[1:] > dists[:-1]).all()             # every image, every step
    assert not torch.equal(x_adv, x) and not x_adv.requires_grad
    after = _state(algo.network)
    assert all(torch.equal(net_before[k], after[k]) for k in after)   # BN running stats too
    assert all(p.grad is None for p in algo.network.parameters())
    assert all(p.requires_grad for p in algo.network.parameters())    # flags restored
    assert algo.network.training
    assert all(torch.equal(mem_before[k], v) for k, v in cp.memory.state_dict().items())


def test_the_semantic_constraint_keeps_expanded_images_closer_to_their_source():
    algo = _algorithm()
    x, y = _images()
    cp = algo.loss
    with torch.no_grad():
        z = algo.embed(x)
    cp.memory.update(cp.memory.current(z, y)[0], z, y)
    moved = {}
    for gamma in (0.0, 10.0):
        with frozen(algo.network) as net:
            x_adv, _ = c3e_ascent(net, x, cp.memory.centroids[y], 5, 0.5, gamma)
        moved[gamma] = (algo.embed(x_adv) - z).norm(dim=1).mean()
    assert moved[10.0] < moved[0.0]


def test_expanded_images_keep_their_labels_and_join_the_batch(monkeypatch):
    algo = _algorithm(cp_c3e_steps=2, cp_c3e_every=2, cp_c3e_pool=2, cp_c3e_ratio=0.5)
    cp = algo.loss
    seen = []
    real_forward = cp.base.forward
    monkeypatch.setattr(cp.base, "forward", lambda z, y: (seen.append(y.clone()),
                                                          real_forward(z, y))[1])
    for s in range(5):
        x, y = _images(seed=s)
        algo.update({"x": x, "y": y})
    # step 0 has no centroids (nothing expanded); generations at steps 2 and 4 (every 2)
    assert [len(t) for t in seen] == [12, 12, 18, 18, 18]
    assert len(cp.pool) == 2
    for s, (x_adv, y_adv) in zip((2, 4), cp.pool):
        x, y = _images(seed=s)
        assert torch.equal(y_adv, y) and x_adv.shape == x.shape and not torch.equal(x_adv, x)
    pool_y = torch.cat([p[1] for p in cp.pool])
    for t in seen[2:]:                                 # real labels first, then pool labels
        assert torch.equal(t[:12], torch.arange(12) % 3)
        assert all(v in pool_y.tolist() for v in t[12:].tolist())
    terms = algo.update({"x": _images(seed=9)[0], "y": _images(seed=9)[1]})
    assert terms["cp_expanded"] == 6 and terms["cp_pool"] == 24 and terms["cp_c3e_gain_deg"] > 0


def test_the_pool_is_bounded_and_a_resumed_run_continues_identically():
    algo = _algorithm(cp_c3e_steps=1, cp_c3e_every=1, cp_c3e_pool=3)
    for s in range(5):
        x, y = _images(seed=s)
        algo.update({"x": x, "y": y})
    assert len(algo.loss.pool) == 3
    buf = io.BytesIO()
    torch.save(algo.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)          # what train.py's safe loader reads
    b = _algorithm(cp_c3e_steps=1, cp_c3e_every=1, cp_c3e_pool=3)
    b.load_state_dict(state)
    assert b.loss.calls == algo.loss.calls and len(b.loss.pool) == 3
    a = copy.deepcopy(algo)
    for m in (a, b):
        torch.manual_seed(42)
        m.update({"x": _images(seed=7)[0], "y": _images(seed=7)[1]})
    for k, v in a.state_dict()["modules"].items():
        if torch.is_tensor(v):
            assert torch.equal(v, b.state_dict()["modules"][k]), k


def test_expansion_and_constraint_off_is_exactly_the_base_loss_and_step():
    off = dict(cp_c3e_steps=0, cp_c4_weight=0.0)
    torch.manual_seed(0)
    wrapped = create_loss(NAME, 5, 16, _hparams(**off))
    torch.manual_seed(0)
    plain = create_loss("ProxyAnchor", 5, 16, _hparams())
    z = random_unit(20, 16, seed=3).requires_grad_(True)
    y = torch.arange(20) % 5
    a, b = wrapped(z, y), plain(z, y)
    assert torch.equal(a, b)
    assert torch.equal(torch.autograd.grad(a, z)[0], torch.autograd.grad(b, z)[0])
    # a whole training step of the algorithm too, random numbers included
    cp, pa = _algorithm(**off), _algorithm("ProxyAnchor")
    for s in range(2):
        batch = dict(zip(("x", "y"), _images(seed=s)))
        torch.manual_seed(s)
        t_cp = cp.update(batch)
        torch.manual_seed(s)
        t_pa = pa.update(batch)
        assert t_cp["loss"] == t_pa["loss"]
    assert all(torch.equal(p, q) for p, q in zip(cp.network.parameters(),
                                                 pa.network.parameters()))
    # with C3E on, the step is not the base step
    on = _algorithm(cp_c3e_steps=1, cp_c3e_every=1, cp_c4_weight=0.0)
    for s in range(2):
        t_on = on.update(dict(zip(("x", "y"), _images(seed=s))))
    assert t_on["loss"] != t_pa["loss"] and t_on["cp_expanded"] == 12


# ------------------------------------------------------------------ centroids and C4
def test_centroid_memory_is_an_ema_of_batch_means():
    mem = CentroidMemory(3, 8, momentum=0.75)
    z, y = clustered(n_per_class=5, num_classes=3, dim=8)
    cents, valid = mem.current(z, y)
    assert valid.all()
    mean0 = F.normalize(z[y == 0].mean(0), dim=0)
    assert torch.allclose(cents[0], mean0, atol=1e-6)             # first sight: the batch mean
    mem.update(cents, z, y)
    z2 = random_unit(5, 8, seed=7)
    y2 = torch.zeros(5, dtype=torch.long)
    cents2, valid2 = mem.current(z2, y2)
    expected = F.normalize(0.75 * mean0 + 0.25 * z2.mean(0), dim=0)
    assert torch.allclose(cents2[0], expected, atol=1e-6)
    assert torch.equal(cents2[1:], mem.centroids[1:])            # absent classes: the memory
    assert valid2.all()


def test_centroids_come_from_the_seen_samples_only():
    """The expanded images join the batch, but a step's centroids are those of its real part."""
    loss = create_loss(NAME, 3, 16, _hparams(cp_c3e_steps=1))
    z, y = clustered(n_per_class=4, num_classes=3, dim=16)
    far = -z                                                      # "expanded": opposite side
    loss.n_extra = len(far)
    loss(torch.cat([z, far]), torch.cat([y, y]))
    for c in range(3):
        expected = F.normalize(z[y == c].mean(0), dim=0)
        assert torch.allclose(loss.memory.centroids[c], expected, atol=1e-6)


def _step(z, grad, lr):
    return F.normalize(z - lr * grad, dim=1)


def _batch_centroids(z, y, num_classes):
    return CentroidMemory(num_classes, z.shape[1], momentum=0.0).current(z, y)


@pytest.mark.parametrize("separation", ["margin", "softmax"])
def test_c4_gradient_pulls_samples_to_their_centroid_and_pushes_centroids_apart(separation):
    # three classes whose centroids are close together (inside the margin)
    centre = random_unit(1, 16, seed=11)
    z, y = clustered(n_per_class=8, num_classes=3, dim=16, spread=0.3, seed=12)
    z = F.normalize(z + 2.5 * centre, dim=1).requires_grad_(True)
    cents, valid = _batch_centroids(z, y, 3)
    pull, sep = c4_loss(z, y, cents, valid, separation, margin=1.2, scale=16.0)
    grad_pull, = torch.autograd.grad(pull, z, retain_graph=True)
    grad_sep, = torch.autograd.grad(sep, z)

    def geometry(zz):
        c, _ = _batch_centroids(zz, y, 3)
        cos_own = (zz * c[y]).sum(1)
        iu = torch.triu_indices(3, 3, 1)
        dist = (c.unsqueeze(0) - c.unsqueeze(1)).norm(dim=2)[iu[0], iu[1]]
        return cos_own, dist

    cos0, dist0 = geometry(z.detach())
    assert (dist0 < 1.2).all()
    cos1, _ = geometry(_step(z.detach(), grad_pull, 0.05))
    assert (cos1 > cos0).all()                       # the pull: every sample toward its centroid
    _, dist2 = geometry(_step(z.detach(), grad_sep, 0.05))
    if separation == "margin":
        assert (dist2 > dist0).all()                 # the separation: centroids apart
    else:
        assert dist2.mean() > dist0.mean()
    cos3, dist3 = geometry(_step(z.detach(), grad_pull + grad_sep, 0.05))
    assert cos3.mean() > cos0.mean() and dist3.mean() > dist0.mean()


def test_c4_pulls_expanded_samples_too():
    loss = create_loss(NAME, 3, 16, _hparams(cp_c3e_steps=1, cp_separation="margin",
                                             cp_sep_weight=0.0))
    z, y = clustered(n_per_class=4, num_classes=3, dim=16)
    far = random_unit(12, 16, seed=4).requires_grad_(True)
    loss.n_extra = 12
    loss(torch.cat([z, far]), torch.cat([y, y]))     # fills the centroid memory
    loss.n_extra = 12
    out = loss(torch.cat([z, far]), torch.cat([y, y])) - loss.base(torch.cat([z, far]),
                                                                     torch.cat([y, y]))
    grad, = torch.autograd.grad(out, far)
    cents = loss.memory.centroids[y]
    before = (far.detach() * cents).sum(1)
    after = (_step(far.detach(), grad, 0.05) * cents).sum(1)
    assert (after > before).all()


# ------------------------------------------------------------------ names and training
def test_shorthand_and_bad_values():
    assert parse_algorithm("CenterPolar") == ["ProxyAnchor", "CenterPolar"]
    assert (hparams_registry.default_hparams("CenterPolar", "DigitsDG")
            == hparams_registry.default_hparams(NAME, "DigitsDG"))
    assert isinstance(create_loss("SoftTriple+CenterPolar", 5, 8, {
        **hparams_registry.default_hparams("SoftTriple+CenterPolar", "DigitsDG")}), CenterPolar)
    with pytest.raises(ValueError, match="known: margin, softmax"):
        create_loss("CenterPolar", 5, 8, _hparams(cp_separation="hinge"))
    with pytest.raises(ValueError, match="known: geodesic, cosine"):
        create_loss("CenterPolar", 5, 8, _hparams(cp_c3e_distance="chord"))
    with pytest.raises(ValueError, match="cp_c3e_every >= 1"):
        create_loss("CenterPolar", 5, 8, _hparams(cp_c3e_every=0))


def test_trains_end_to_end_and_records_the_expansion(tmp_path):
    out = tmp_path / "cp"
    main(["--algorithm", "CenterPolar", "--output_dir", str(out), "--targets", "sketch",
          "--steps", "3", "--checkpoint_freq", "3", "--no_eval_at_start", "--quiet",
          "--hparams", json.dumps({"cp_c3e_steps": 2, "cp_c3e_every": 1, "batch_size": 32})])
    last = read_records(out / "results.jsonl")[-1]
    assert {"cp_base", "cp_pull", "cp_sep", "cp_expanded", "cp_pool", "cp_c3e_gain_deg"} <= set(last)
    assert last["cp_expanded"] > 0 and last["cp_c3e_gain_deg"] > 0
    assert "sketch_test_recall@1" in last
