"""Backbone factory: timm models, the digits CNN, local weights and a fast offline error."""
import socket

import pytest
import torch
from safetensors.torch import save_file

from sdgdml.networks import (EmbeddingNet, PretrainedWeightsError, create_backbone,
                             create_model)


@pytest.mark.parametrize("name,size", [("digits_cnn", 32), ("resnet18", 32),
                                       ("deit_s", 32), ("dino_vits16", 32)])
def test_backbones_give_l2_normalised_embeddings(name, size):
    kwargs = {"img_size": size} if name in ("deit_s", "dino_vits16") else {}
    net = EmbeddingNet(create_backbone(name, **kwargs), embed_dim=24)
    z = net(torch.randn(2, 3, size, size))
    assert z.shape == (2, 24)
    assert torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)


def test_pretrained_from_a_local_weights_file(tmp_path):
    src = create_backbone("resnet18")
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = create_backbone("resnet18", pretrained=True, pretrained_file=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_local_backbone_loads_a_weights_file(tmp_path, suffix):
    src = create_backbone("digits_cnn")
    path = tmp_path / f"digits{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = create_backbone("digits_cnn", pretrained_file=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_backbone("digits_cnn", pretrained_file=str(tmp_path / "nope.pth"))


def test_offline_hub_failure_says_what_to_do():
    with pytest.raises(PretrainedWeightsError, match="--pretrained_file"):
        create_backbone("resnet18", pretrained=True)      # HF_HUB_OFFLINE=1 in tests


def test_unreachable_hub_is_probed_once_then_only_the_cache_is_used(monkeypatch):
    """Without HF_HUB_OFFLINE, a dead network costs one failed probe, not the hub client's
    ~46 s of DNS retries: after the probe fails, the hub is switched to offline mode."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    lookups = []

    def no_network(*args, **kwargs):
        lookups.append(args[0])
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(PretrainedWeightsError, match="--pretrained_file"):
        create_backbone("resnet18", pretrained=True)
    assert len(lookups) == 1
    assert constants.HF_HUB_OFFLINE is False          # restored afterwards


def test_missing_weights_file_and_unknown_backbone_are_clear():
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_backbone("resnet18", pretrained=True, pretrained_file="/nonexistent.pth")
    with pytest.raises(ValueError, match="unknown backbone 'resnet5O'"):
        create_backbone("resnet5O")


def test_freeze_bn_keeps_backbone_batchnorm_in_eval_mode():
    net = create_model({"backbone": "resnet18", "embed_dim": 8, "freeze_bn": True})
    net.train()
    bns = [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert net.embedding.training
