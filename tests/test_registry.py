"""The component registry: a loss and a plug-in declared in a test module (one class each, no
other file touched) train on DigitsDG by name; plug-ins may add images made with the frozen
network; stages are entered once and survive a resume; the flag-role table covers the parser."""
from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from sdgdml import hparams_registry
from sdgdml.algorithms import (DataNeeds, Plugin, MetricLearning, Schedule,
                               UnknownAlgorithmError, create_algorithm, create_loss, data_needs,
                               frozen,
                               parse_algorithm, register_loss, register_plugin)
from sdgdml.algorithms.pml_proxy import PMLProxyLoss
from sdgdml.algorithms.registry import unregister
from sdgdml.flags import FLAG_ROLES, MACHINE, SWEEP
from sdgdml.networks import create_model
from sdgdml.search_space import uniform
from sdgdml.train import main
from sdgdml.train_args import build_parser
from helpers import TINY_TRAIN, run_records


class ToyLargeMargin(PMLProxyLoss):
    """pml's LargeMarginSoftmaxLoss as a new base loss: the whole declaration."""

    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    @staticmethod
    def declare_hparams(hp, small):
        hp("toy_margin", 4, lambda r: int(r.choice([2, 3, 4])))
        hp("toy_scale", 1.0, uniform(0.5, 2.0))

    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.LargeMarginSoftmaxLoss(num_classes, embed_dim,
                                                 margin=hparams["toy_margin"],
                                                 scale=hparams["toy_scale"])


class ToyFlipPlugin(Plugin):
    """Adds the horizontally flipped batch, made under the frozen network (which records what
    it saw), and weights the base loss of the added samples."""

    calls: list[dict] = []

    @staticmethod
    def declare_hparams(hp, small):
        hp("toy_flip_weight", 0.5, uniform(0.0, 1.0))

    def __init__(self, base, num_classes, embed_dim, hparams):
        super().__init__(base)
        self.weight = hparams["toy_flip_weight"]
        self.n_real = None

    def expand_inputs(self, x, y, network):
        x_adv = x.clone().requires_grad_(True)
        z = network(x_adv)
        grad, = torch.autograd.grad(z.pow(2).sum(), x_adv)     # a forward/backward pass
        ToyFlipPlugin.calls.append({
            "training": network.training, "grad_enabled": torch.is_grad_enabled(),
            "param_grads": any(p.requires_grad for p in network.parameters()),
            "input_grad": bool(grad.abs().sum() > 0)})
        self.n_real = len(x)
        return x.flip(3), y

    def forward(self, z, y):
        n = self.n_real
        loss = self.base(z[:n], y[:n]) + self.weight * self.base(z[n:], y[n:])
        self.raw_terms = {"toy_added": float(len(z) - n)}
        return loss


@pytest.fixture
def toys():
    register_loss("ToyLargeMargin")(ToyLargeMargin)
    register_plugin("ToyFlip")(ToyFlipPlugin)
    ToyFlipPlugin.calls.clear()
    yield
    unregister("loss", "ToyLargeMargin")
    unregister("plugin", "ToyFlip")


def test_a_loss_and_a_plugin_from_a_test_module_train_by_name(toys, tmp_path):
    assert parse_algorithm("ToyLargeMargin+SEE+ToyFlip") == ["ToyLargeMargin", "SEE", "ToyFlip"]
    hp = hparams_registry.default_hparams("ToyLargeMargin+ToyFlip", "DigitsDG")
    assert hp["toy_margin"] == 4 and hp["toy_flip_weight"] == 0.5 and "proxy_lr_mult" in hp
    main([*TINY_TRAIN, "--algorithm", "ToyLargeMargin+ToyFlip", "--steps", "4",
          "--checkpoint_freq", "2", "--output_dir", str(tmp_path / "run")])
    records = run_records(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[-1]["toy_added"] == 64.0                    # one flipped copy per image
    assert records[-1]["sketch_test_recall@1"] > 0.2           # it trained and evaluated
    assert len(ToyFlipPlugin.calls) == 4
    assert all(c == {"training": False, "grad_enabled": True, "param_grads": False,
                     "input_grad": True} for c in ToyFlipPlugin.calls)


def test_unknown_components_are_listed_from_the_registry(toys):
    with pytest.raises(UnknownAlgorithmError, match="ToyLargeMargin") as err:
        parse_algorithm("ToyLargeMargn")
    assert "ToyFlip" in str(err.value)
    with pytest.raises(UnknownAlgorithmError, match="put SEE after a proxy-based loss .*"
                                                    "ToyLargeMargin"):
        hp = hparams_registry.default_hparams("MultiSimilarity+SEE", "DigitsDG")
        create_algorithm("MultiSimilarity+SEE", create_model(hp), 5, hp, Schedule(4, 2))


def test_frozen_restores_modes_and_flags_and_freezes_parameters():
    hp = hparams_registry.default_hparams("ProxyAnchor", "DigitsDG")
    net = create_model(hp)
    net.train()
    net.embedding.weight.requires_grad_(False)
    with torch.no_grad(), frozen(net) as f:
        assert not f.training and torch.is_grad_enabled()
        assert not any(p.requires_grad for p in f.parameters())
    assert net.training and not net.embedding.weight.requires_grad
    assert net.backbone.parameters().__next__().requires_grad


class TwoStage(MetricLearning):
    """A toy multi-stage method: stage "b" from step 3 snapshots the network."""

    NEEDS = DataNeeds(indices=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered: list[str] = []
        self.snapshot = create_model(self.hparams)
        self.snapshot.requires_grad_(False)
        self.seen_indices: list[torch.Tensor] = []

    def stage_at(self, step):
        return "a" if step < 3 else "b"

    def enter_stage(self, stage):
        self.entered.append(stage)
        if stage == "b":
            self.snapshot.load_state_dict(self.network.state_dict())

    def update(self, batch):
        self.seen_indices.append(batch["index"])
        return super().update(batch)


def test_stages_are_entered_once_and_resume_in_the_saved_stage():
    hp = hparams_registry.default_hparams("ProxyAnchor", "DigitsDG")

    def make():
        torch.manual_seed(0)
        loss = create_loss("ProxyAnchor", 5, hp["embed_dim"], hp)
        return TwoStage(create_model(hp), 5, hp, Schedule(6, 2), loss, {"mnist": 800})

    g = torch.Generator().manual_seed(0)
    batches = [{"x": torch.randn(8, 3, 32, 32, generator=g), "y": torch.arange(8) % 5,
                "index": torch.arange(8) + i} for i in range(6)]
    a = make()
    for b in batches[:4]:
        a.train_step(b)
    assert a.entered == ["a", "b"] and a.stage == "b" and a.domain_sizes == {"mnist": 800}
    resumed = make()
    resumed.load_state_dict(a.state_dict())
    assert resumed.stage == "b"
    for b in batches[4:]:
        a.train_step(b)
        resumed.train_step(b)
    assert resumed.entered == []                       # not re-entered after the resume
    for p, q in zip(a.snapshot.parameters(), resumed.snapshot.parameters()):
        assert torch.equal(p, q)                       # the snapshot travelled in the state
    assert torch.equal(a.seen_indices[-1], batches[-1]["index"])


def test_data_needs_compose():
    assert data_needs("ProxyAnchor+SEE") == DataNeeds()
    assert data_needs("UEM") == DataNeeds(labels=False, indices=True, unlabeled_targets=True)
    assert data_needs("ProtoAlign") == DataNeeds(labels=False, unlabeled_targets=True)
    assert DataNeeds(labels=False) | DataNeeds(indices=True) == DataNeeds(labels=False,
                                                                          indices=True)


def test_every_train_flag_has_exactly_one_identity_role():
    parser_flags = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert parser_flags == set(FLAG_ROLES)
    for name, roles in FLAG_ROLES.items():
        assert len(roles - SWEEP) == 1, name          # experiment, cell or machine
    assert MACHINE <= FLAG_ROLES["output_dir"] and SWEEP <= FLAG_ROLES["output_dir"]
