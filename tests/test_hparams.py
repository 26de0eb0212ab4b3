"""Hyperparameter registry: defaults, seeded samples, independence, overrides."""
import pytest

from sdgdml import hparams_registry as H
from sdgdml.algorithms.proxy_anchor import ProxyAnchor


def test_seed_zero_is_defaults_and_samples_are_deterministic():
    assert H.get_hparams("ProxyAnchor", "DigitsDG", 0) == H.default_hparams("ProxyAnchor", "DigitsDG")
    a = H.random_hparams("ProxyAnchor", "DigitsDG", 5)
    assert a == H.random_hparams("ProxyAnchor", "DigitsDG", 5)
    assert a != H.random_hparams("ProxyAnchor", "DigitsDG", 6)
    assert 10 ** -3.5 <= a["lr"] <= 10 ** -2.5 and 0.0 <= a["pa_margin"] <= 0.3


def test_each_hparam_has_its_own_rng(monkeypatch):
    """Adding an hparam to an algorithm never changes the values of the others."""
    before = H.random_hparams("ProxyAnchor", "DigitsDG", 3)
    original = ProxyAnchor.declare_hparams

    def with_extra(hp, small):
        hp("aaa_new", 1.0, lambda r: r.uniform())
        original(hp, small)

    monkeypatch.setattr(ProxyAnchor, "declare_hparams", staticmethod(with_extra))
    after = H.random_hparams("ProxyAnchor", "DigitsDG", 3)
    assert {k: v for k, v in after.items() if k != "aaa_new"} == before


def test_algorithm_and_dataset_are_in_the_hash():
    """Two algorithms' same-named hparams are not tied (DomainBed's omission)."""
    pa = H.random_hparams("ProxyAnchor", "DigitsDG", 1)
    nsm = H.random_hparams("NormSoftmax", "DigitsDG", 1)
    assert pa["lr"] != nsm["lr"] and pa["weight_decay"] != nsm["weight_decay"]
    assert H.random_hparams("ProxyAnchor", "PACS", 1)["weight_decay"] != pa["weight_decay"]


def test_dataset_defaults_and_loss_specific_sampler():
    assert H.default_hparams("ProxyAnchor", "DigitsDG")["backbone"] == "digits_cnn"
    real = H.default_hparams("ProxyAnchor", "PACS")
    assert real["backbone"] == "resnet50.tv_in1k" and real["image_size"] == 224
    ms = H.default_hparams("MultiSimilarity", "DigitsDG")
    assert ms["sampler"] == "m_per_class" and "proxy_lr_mult" not in ms


def test_overrides_apply_last_and_unknown_names_list_the_known():
    hp = H.get_hparams("ProxyAnchor", "DigitsDG", 4, {"lr": 0.5})
    assert hp["lr"] == 0.5
    with pytest.raises(H.UnknownHparamError, match="pa_margin"):
        H.get_hparams("ProxyAnchor", "DigitsDG", 0, {"nope": 1})
