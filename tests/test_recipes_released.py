"""The recipes named after released code hold the authors' settings: SEE's (constant lr,
proxies at lr 0.1, LayerNorm head, a global batch of 180 on any number of processes) and
ProxyAnchor's (every parameter, BatchNorm weights included, trains once the warm-up ends)."""
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sdgdml import distributed, recipes
from sdgdml.algorithms import Schedule, create_algorithm
from sdgdml.hparams_registry import default_hparams
from sdgdml.networks import EmbeddingNet, create_backbone, create_model
from sdgdml.train import _prepare, main
from sdgdml.train_args import build_parser

TINY_NET = {"backbone": "digits_cnn", "pretrained": False, "embed_dim": 16, "image_size": 32,
            "freeze_patch_embed": False}


def _with_recipe(algorithm: str, recipe: str, **over) -> dict:
    hp = default_hparams(algorithm, "DigitsDG")
    return {**hp, **{k: v for k, v in recipes.recipe_hparams(recipe, "DigitsDG").items()
                     if k in hp}, **TINY_NET, **over}


def test_see_recipe_has_the_released_constant_lr_and_proxy_lr():
    r = recipes.recipe_hparams("see_deit_s", "CUB200Ext")
    assert r["lr"] * r["proxy_lr_mult"] == pytest.approx(0.1)      # 1e-5 x 1e4
    assert (r["lr_schedule"], r["head"], r["embed_init"], r["weight_decay"]) == (
        "constant", "layernorm", "orthogonal", 1e-2)
    hp = _with_recipe("ProxyAnchor+SEE", "see_deit_s")
    torch.manual_seed(0)
    algo = create_algorithm("ProxyAnchor+SEE", create_model(hp), 5, hp, Schedule(100, 10))
    opt, sched = algo.optimizers["main"], algo.schedulers["main"]
    for _ in range(60):                          # well into the run: no decay
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["proxies"] == pytest.approx(0.1) and lrs["backbone"] == pytest.approx(1e-5)
    assert lrs["embedding"] == pytest.approx(1e-5)


@pytest.mark.parametrize("world,per_process", [(1, 180), (2, 90), (3, 60), (4, 45)])
def test_see_recipe_keeps_a_global_batch_of_180_on_any_number_of_processes(
        world, per_process, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    args = build_parser().parse_args(["--algorithm", "ProxyAnchor+SEE", "--recipe",
                                      "see_deit_s", "--targets", "uci", "--output_dir", "x"])
    hparams = _prepare(args)[0].values
    assert hparams["batch_size"] == per_process
    if world > 1:               # what the loss gathers (distributed.gather_batch)
        assert args.global_batch_size == 180 and args.lr_scale == 1


def test_a_global_batch_the_processes_cannot_share_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 7)
    base = ["--algorithm", "ProxyAnchor+SEE", "--recipe", "see_deit_s", "--targets", "uci",
            "--output_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="error: recipe see_deit_s trains with a global batch "
                                         "of 180, which 7 processes cannot share"):
        main(base)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(SystemExit, match="error: recipe see_deit_s keeps its global batch"):
        main(base + ["--lr_scaling", "linear"])
    assert not (tmp_path / "run").exists()
    args = build_parser().parse_args(base + ["--hparams", json.dumps({"batch_size": 32})])
    monkeypatch.setattr(distributed, "world_size", lambda: 7)
    assert _prepare(args)[0].values["batch_size"] == 32      # an explicit batch is per process


def _bn_weights(net):
    return [p for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d)
            for p in (m.weight, m.bias)]


@pytest.mark.parametrize("recipe,trains", [("proxyanchor_r50", True),
                                           ("proxyanchor_r50_frozen_bn_affine", False)])
def test_proxyanchor_recipe_trains_batchnorm_weights_after_the_warm_up(recipe, trains):
    hp = _with_recipe("ProxyAnchor", recipe, warmup_epochs=1, batch_size=16)
    assert hp["freeze_bn"] and hp["pooling"] == "avg+max"
    torch.manual_seed(0)
    algo = create_algorithm("ProxyAnchor", create_model(hp), 5, hp, Schedule(4, 2))
    g = torch.Generator().manual_seed(0)
    batches = [{"x": torch.randn(16, 3, 32, 32, generator=g), "y": torch.arange(16) % 5}
               for _ in range(4)]
    start = [p.detach().clone() for p in _bn_weights(algo.network)]
    for b in batches[:2]:                       # the warm-up: only embedding and proxies
        algo.train_step(b)
    assert all(torch.equal(p, s) for p, s in zip(_bn_weights(algo.network), start))
    for b in batches[2:]:
        algo.train_step(b)
    moved = [not torch.equal(p, s) for p, s in zip(_bn_weights(algo.network), start)]
    assert all(moved) if trains else not any(moved)
    assert all(p.requires_grad == trains for p in _bn_weights(algo.network))


class _Features(nn.Module):
    """A backbone that returns its input (B, num_features)."""

    num_features = 6

    def forward(self, x):
        return x


def test_layernorm_head_is_layernorm_without_affine_then_linear_then_l2():
    torch.manual_seed(0)
    net = EmbeddingNet(_Features(), 4, head="layernorm", embed_init="orthogonal").eval()
    assert not list(net.head_norm.parameters())                    # no affine weights
    w, b = net.embedding.weight.detach(), net.embedding.bias.detach()
    assert torch.allclose(w @ w.T, torch.eye(4), atol=1e-6)       # orthogonal rows, gain 1
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.5, -1.0, 0.0, 2.0, -3.0, 1.5]])
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)                  # biased, as LayerNorm
    z = ((x - mean) / torch.sqrt(var + 1e-5)) @ w.T + b
    want = z / z.norm(dim=1, keepdim=True)
    assert torch.allclose(net(x), want, atol=1e-6)
    # LayerNorm without affine: an image's features shifted and scaled give the same embedding
    assert torch.allclose(net(3.0 * x + 7.0), net(x), atol=1e-4)
    plain = EmbeddingNet(_Features(), 4).eval()
    plain.embedding.load_state_dict(net.embedding.state_dict())
    assert not torch.allclose(plain(x), net(x), atol=1e-3)         # the norm is really there
    with pytest.raises(ValueError, match="unknown head 'batchnorm'; known: linear, layernorm"):
        EmbeddingNet(_Features(), 4, head="batchnorm")


def test_frozen_patch_embedding_never_trains():
    vit = create_backbone("vit_tiny_patch16_224", img_size=32, depth=1)
    net = EmbeddingNet(vit, 8, freeze_patch_embed=True)
    frozen = list(vit.patch_embed.parameters())
    assert frozen and {id(p) for p in net.fixed_parameters()} == {id(p) for p in frozen}
    assert not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for n, p in vit.named_parameters()
               if not n.startswith("patch_embed"))
    with pytest.raises(ValueError, match="freeze_patch_embed needs a ViT"):
        EmbeddingNet(create_backbone("digits_cnn"), 8, freeze_patch_embed=True)
