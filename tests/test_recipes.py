"""Official recipes (``--recipe``) and the pieces of ProxyAnchor's official setting: the GAP+GMP
head, BatchNorm frozen with its affine weights, gradient clipping by value, StepLR."""
import json

import pytest
import torch
import torch.nn.functional as F

from sdgdml import recipes
from sdgdml.algorithms import Schedule, create_algorithm
from sdgdml.algorithms.base import lr_lambda
from sdgdml.collect import collect
from sdgdml.hparams_registry import default_hparams
from sdgdml.networks import DigitsCNN, EmbeddingNet, create_model
from sdgdml.records import read_json, read_records
from sdgdml.train import main
from sdgdml.train_args import build_parser

SMALL = {"backbone": "digits_cnn", "pretrained": False, "embed_dim": 64, "image_size": 32,
         "batch_size": 32}


def _bn_layers(net):
    return [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_gap_plus_gmp_head_sums_average_and_max_pooling_of_the_feature_map():
    torch.manual_seed(0)
    net = EmbeddingNet(DigitsCNN(global_pool=""), 16, pooling="avg+max").eval()
    x = torch.randn(4, 3, 32, 32)
    fmap = net.backbone(x)
    assert fmap.ndim == 4
    pooled = fmap.mean((2, 3)) + fmap.amax((2, 3))
    want = F.normalize(pooled @ net.embedding.weight.T + net.embedding.bias, dim=1)
    assert torch.allclose(net(x), want, atol=1e-6)
    avg_only = F.normalize(net.embedding(fmap.mean((2, 3))), dim=1)
    assert not torch.allclose(net(x), avg_only, atol=1e-3)
    with pytest.raises(ValueError, match="known: avg, avg\\+max"):
        EmbeddingNet(DigitsCNN(), 16, pooling="max")


def test_gap_plus_gmp_on_a_timm_resnet_as_the_official_resnet50_head():
    hp = {**default_hparams("ProxyAnchor", "CUB200Ext"), "backbone": "resnet18",
          "pretrained": False, "embed_dim": 8, "pooling": "avg+max"}
    torch.manual_seed(0)
    net = create_model(hp).eval()
    x = torch.randn(2, 3, 64, 64)
    fmap = net.backbone(x)
    assert fmap.shape[1] == net.backbone.num_features == 512 and fmap.ndim == 4
    want = F.normalize(net.embedding(fmap.mean((2, 3)) + fmap.amax((2, 3))), dim=1)
    assert torch.allclose(net(x), want, atol=1e-5)


def _algorithm(**over):
    hp = {**default_hparams("ProxyAnchor", "DigitsDG"), **over}
    torch.manual_seed(0)
    return create_algorithm("ProxyAnchor", create_model(hp), 5, hp, Schedule(4, 2))


def _batch(s):
    g = torch.Generator().manual_seed(s)
    return {"x": torch.randn(16, 3, 32, 32, generator=g), "y": torch.arange(16) % 5}


@pytest.mark.parametrize("affine", [True, False])
def test_frozen_batchnorm_keeps_statistics_and_with_freeze_bn_affine_its_weights(affine):
    algo = _algorithm(freeze_bn=True, freeze_bn_affine=affine, warmup_epochs=1)
    bns = _bn_layers(algo.network)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
    conv = algo.network.backbone.features[0].weight.clone()
    for s in range(4):                          # 2 warm-up steps (backbone frozen), 2 after
        algo.train_step(_batch(s))
    for m, b in zip(bns, before):
        assert torch.equal(m.running_mean, b["running_mean"])
        assert torch.equal(m.running_var, b["running_var"])
        same = torch.equal(m.weight, b["weight"]) and torch.equal(m.bias, b["bias"])
        assert same == affine               # frozen, or trained once the warm-up is over
    assert not torch.equal(algo.network.backbone.features[0].weight, conv)
    assert all(not p.requires_grad for m in bns for p in m.parameters()) == affine


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_gradient_clipping_by_value_bounds_every_gradient(monkeypatch):
    seen = {}
    for clip in (0.0, 1e-3):
        algo = _algorithm(grad_clip_value=clip)
        opt = algo.optimizers["main"]
        real_step = opt.step

        def step(*a, _clip=clip, _opt=opt, _real=real_step, **k):
            seen[_clip] = max(p.grad.abs().max().item() for g in _opt.param_groups
                              for p in g["params"] if p.grad is not None)
            return _real(*a, **k)
        monkeypatch.setattr(opt, "step", step)
        algo.update(_batch(0))
    assert seen[0.0] > 1e-3                     # the unclipped gradients exceed the bound
    assert seen[1e-3] == pytest.approx(1e-3)    # clipped: the largest sits on the bound


def test_step_lr_halves_every_lr_step_epochs():
    f = lr_lambda(Schedule(100, 10), "step", step_epochs=2.5, gamma=0.5)
    assert [f(s) for s in (0, 24, 25, 49, 50, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="lr_step_epochs > 0"):
        lr_lambda(Schedule(100, 10), "step")


def test_recipe_values():
    r = recipes.recipe_hparams("proxyanchor_r50", "CUB200Ext")
    assert (r["pooling"], r["freeze_bn"], r["freeze_bn_affine"], r["optimizer"], r["lr"],
            r["weight_decay"], r["proxy_lr_mult"], r["batch_size"], r["warmup_epochs"],
            r["lr_schedule"], r["lr_step_epochs"], r["lr_step_gamma"], r["grad_clip_value"]) == (
        "avg+max", True, False, "adamw", 1e-4, 1e-4, 100.0, 120, 5, "step", 5.0, 0.5, 10.0)
    assert recipes.recipe_hparams("proxyanchor_r50", "Cars196Ext")["lr_step_epochs"] == 10.0
    assert recipes.recipe_epochs("proxyanchor_r50") == 60
    p = recipes.recipe_hparams("pfml_r50", "CUB200Ext")
    assert (p["optimizer"], p["lr"], p["pfml_m"], recipes.recipe_epochs("pfml_r50")) == (
        "adam", 5e-4, 15, 200)
    s = recipes.recipe_hparams("see_deit_s", "CUB200Ext")
    assert (s["see_lambda"], s["see_n_aug"], s["see_topk_end"], s["embed_dim"]) == (
        0.2, 8, 0.4, 128)
    assert recipes.recipe_hparams(None, "CUB200Ext") == {}
    for name in recipes.RECIPES:               # every value is an hparam of its method
        algo = {"pfml": "PFML", "see": "ProxyAnchor+SEE", "uem": "UEM",
                "centerpolar": "CenterPolar"}.get(name.split("_")[0], "ProxyAnchor")
        assert set(recipes.recipe_hparams(name, "CUB200Ext")) <= set(
            default_hparams(algo, "CUB200Ext")), name


def test_a_recipe_sets_hparams_json_and_the_record_and_explicit_hparams_win(tmp_path):
    out = tmp_path / "run"
    main(["--recipe", "proxyanchor_r50", "--targets", "uci", "--steps", "2",
          "--checkpoint_freq", "2", "--no_eval_at_start", "--quiet", "--output_dir", str(out),
          "--hparams", json.dumps({**SMALL, "warmup_epochs": 0})])
    hp = read_json(out / "hparams.json")
    recipe = recipes.recipe_hparams("proxyanchor_r50", "DigitsDG")
    for k, v in recipe.items():
        assert hp[k] == ({**SMALL, "warmup_epochs": 0}.get(k, v)), k
    assert hp["pooling"] == "avg+max" and hp["grad_clip_value"] == 10.0
    record = read_records(out / "results.jsonl")[-1]
    assert record["args"]["recipe"] == "proxyanchor_r50" and record["hparams"] == hp
    table = collect([tmp_path], selections=("last",))
    assert "ProxyAnchor [proxyanchor_r50]" in table and "--selection oracle" in table


def test_an_unknown_recipe_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--output_dir", "x", "--recipe", "proxyanchor_r18"])
    assert "invalid choice: 'proxyanchor_r18'" in capsys.readouterr().err
