"""Algorithm registry and the MetricLearning training step."""
import copy

import pytest
import torch

from sdgdml.algorithms import (Schedule, UnknownAlgorithmError, create_algorithm,
                               parse_algorithm)
from sdgdml.hparams_registry import default_hparams
from sdgdml.networks import create_model


def _algo(name="ProxyAnchor", **over):
    hp = {**default_hparams(name, "DigitsDG"), **over}
    torch.manual_seed(0)
    return create_algorithm(name, create_model(hp), 5, hp, Schedule(20, 4)), hp


def _batch(seed=0, side=32):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(16, 3, side, side, generator=g), "y": torch.arange(16) % 5}


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownAlgorithmError) as err:
        parse_algorithm("ProxyAnkor")
    for name in ["ProxyAnchor", "ProxyNCA", "NormSoftmax", "SEE", "PFML", "UEM",
                 "CenterPolar = ProxyAnchor+CenterPolar"]:
        assert name in str(err.value)
    with pytest.raises(UnknownAlgorithmError, match="unknown plug-in 'XYZ'"):
        parse_algorithm("ProxyAnchor+XYZ")
    assert parse_algorithm("SoftTriple") == ["SoftTriple"]


def test_proxies_train_at_the_multiplied_learning_rate():
    algo, hp = _algo()
    groups = {g["name"]: g["lr"] for g in algo.optimizers["main"].param_groups}
    assert groups["backbone"] == groups["embedding"] == hp["lr"]
    assert groups["proxies"] == pytest.approx(hp["lr"] * hp["proxy_lr_mult"])


def test_update_returns_device_scalars_and_moves_everything():
    algo, _ = _algo()
    before = copy.deepcopy(algo.state_dict()["modules"])
    out = algo.update(_batch())         # read by the trainer later, not inside the step
    assert torch.is_tensor(out["loss"]) and out["loss"].ndim == 0 and algo.step == 1
    after = algo.state_dict()["modules"]
    for k in ("network.backbone.features.0.weight", "network.embedding.weight",
              "loss.pml.proxies"):
        assert not torch.equal(before[k], after[k]), k


def test_warm_up_freezes_the_backbone_only():
    algo, _ = _algo(warmup_epochs=1)          # 4 steps per epoch -> 4 warm-up steps
    w0 = algo.network.backbone.features[0].weight.clone()
    e0 = algo.network.embedding.weight.clone()
    for s in range(4):
        algo.update(_batch(s))
    assert torch.equal(algo.network.backbone.features[0].weight, w0)
    assert not torch.equal(algo.network.embedding.weight, e0)
    algo.update(_batch(9))
    assert not torch.equal(algo.network.backbone.features[0].weight, w0)


def test_state_dict_round_trip_continues_identically():
    a, _ = _algo()
    for s in range(3):
        a.update(_batch(s))
    state = copy.deepcopy(a.state_dict())
    assert set(state) == {"modules", "optimizers", "schedulers", "step", "stage",
                          "precision"}
    b, _ = _algo()
    b.load_state_dict(state)
    assert b.step == 3
    assert b.schedulers["main"].last_epoch == a.schedulers["main"].last_epoch
    a.update(_batch(5))
    b.update(_batch(5))
    for k, v in a.state_dict()["modules"].items():
        assert torch.equal(v, b.state_dict()["modules"][k]), k


def test_cosine_schedule_reaches_zero_at_the_end():
    algo, hp = _algo()
    for s in range(20):                 # the schedule, not the images: 8-pixel ones
        algo.update(_batch(s, side=8))
    assert algo.optimizers["main"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_embed_is_normalised_and_leaves_training_mode_alone():
    algo, _ = _algo()
    algo.network.train()
    z = algo.embed(torch.randn(4, 3, 32, 32))
    assert torch.allclose(z.norm(dim=1), torch.ones(4)) and algo.network.training
