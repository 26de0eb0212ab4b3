"""Backbones and the embedding network.

``create_backbone(name)`` is the one factory: the small CNNs registered here (``digits_cnn``)
or any timm model name (``resnet50.tv_in1k``, ``resnet18``, ``vit_small_patch16_224.dino``,
``deit_small_patch16_224.fb_in1k``, ...; short aliases in ``ALIASES``).
``EmbeddingNet`` puts a linear embedding head on a backbone and L2-normalises its output.

Pretrained weights come from the Hugging Face hub, or from a local file (``pretrained_file``:
.safetensors / .pth / .bin) for clusters without internet. Without a reachable hub and without
a cached copy the error is immediate and says what to do. A MoCo training checkpoint
(``module.encoder_q.`` keys; ``python -m sdgdml.pretrain`` writes one for any backbone) loads its
query encoder, and its MLP projection head becomes the embedding head when that head's output
size is ``embed_dim`` (the whole ``encoder_q``, as UCDIR loads MoCo v2 for UEM).
"""
from __future__ import annotations

import contextlib
import functools
import socket
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from .suggest import did_you_mean

ALIASES = {
    "resnet50_tv": "resnet50.tv_in1k",     # torchvision ImageNet weights, the DML convention
    "vit_s": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "deit_s": "deit_small_patch16_224.fb_in1k",
    "dino_vits16": "vit_small_patch16_224.dino",
}


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and cannot be loaded."""


class DigitsCNN(nn.Module):
    """A small conv net for 32x32 inputs (three conv-BN-ReLU stages, global average pool;
    ``global_pool=""``: the feature map, as timm's models)."""

    def __init__(self, in_chans: int = 3, width: int = 32, global_pool: str = "avg"):
        super().__init__()

        def stage(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *stage(in_chans, width), nn.MaxPool2d(2),
            *stage(width, 2 * width), nn.MaxPool2d(2),
            *stage(2 * width, 4 * width),
            *([nn.AdaptiveAvgPool2d(1), nn.Flatten()] if global_pool == "avg" else []))
        self.num_features = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


LOCAL_BACKBONES: dict[str, Callable[..., nn.Module]] = {"digits_cnn": DigitsCNN}


@functools.lru_cache(maxsize=1)
def backbone_names() -> tuple[str, ...]:
    """Every backbone name ``create_backbone`` accepts: ours (``LOCAL_BACKBONES``, ``ALIASES``),
    timm's architectures and timm's pretrained tags (``resnet50.tv_in1k``)."""
    import timm

    return tuple(dict.fromkeys([*LOCAL_BACKBONES, *ALIASES, *timm.list_models(),
                                *timm.list_models(pretrained=True)]))


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_if_unreachable():
    """Use only the local hub cache when the hub cannot be reached (fails in ms, not ~46 s of
    DNS retries)."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    if not previous and not _hub_reachable():
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


MOCO_PREFIX = "module.encoder_q."


def _checkpoint_keys(path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def is_moco_checkpoint(path) -> bool:
    """True for a MoCo (v1/v2) training checkpoint: a ``state_dict`` whose query-encoder keys
    start with ``module.encoder_q.`` (github.com/facebookresearch/moco's layout)."""
    path = Path(path)
    if not path.is_file() or path.suffix == ".safetensors":
        return False
    try:
        return any(k.startswith(MOCO_PREFIX) for k in _checkpoint_keys(path))
    except Exception:       # not a torch checkpoint: another loader's business
        return False


def moco_backbone_state(path) -> dict:
    """The ResNet weights of a MoCo checkpoint: the query encoder without its ``fc`` (MoCo's
    projection head), keys as torchvision/timm name them."""
    return {k[len(MOCO_PREFIX):]: v for k, v in _checkpoint_keys(path).items()
            if k.startswith(MOCO_PREFIX) and not k[len(MOCO_PREFIX):].startswith("fc.")}


def moco_head(path) -> nn.Sequential | None:
    """MoCo v2's MLP projection head of a MoCo checkpoint (``encoder_q.fc``: Linear, ReLU,
    Linear, as ``--mlp`` builds it), loaded; None when the checkpoint has no such head."""
    head = {k[len(MOCO_PREFIX) + 3:]: v for k, v in _checkpoint_keys(path).items()
            if k.startswith(MOCO_PREFIX + "fc.")}
    if set(head) != {"0.weight", "0.bias", "2.weight", "2.bias"}:
        return None
    (hidden, dim_in), dim_out = head["0.weight"].shape, head["2.weight"].shape[0]
    mlp = nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))
    mlp.load_state_dict(head)
    return mlp


def _timm_model(name: str, pretrained: bool, pretrained_file: str | None, **kwargs) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: neither {sorted(LOCAL_BACKBONES)} nor a "
                         f"timm model{did_you_mean(name, backbone_names())}")
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained weights file not found: {path}")
        if is_moco_checkpoint(path):
            model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
            missing, unexpected = model.load_state_dict(moco_backbone_state(path), strict=False)
            if missing or unexpected:
                raise PretrainedWeightsError(f"{path} does not fit {name}: missing {missing[:5]}, "
                                             f"unexpected {unexpected[:5]}")
            return model
        return timm.create_model(name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    try:
        with _hub_offline_if_unreachable():
            return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    except Exception as e:  # hub, cache and network errors all end here
        raise PretrainedWeightsError(
            f"cannot load pretrained weights for {name!r} from the Hugging Face hub or its local "
            f"cache ({type(e).__name__}). Offline? Download the weights on a machine with "
            f"internet (e.g. timm.create_model({name!r}, pretrained=True) then copy "
            f"~/.cache/huggingface, or save the .safetensors file) and pass "
            f"--pretrained_file PATH, or set pretrained=false in --hparams.") from e


def check_pretrained(hparams: dict, pretrained_file: str | None) -> None:
    """Refuse, before anything exists, pretrained weights asked of a backbone that has none
    published (ours) and no ``--pretrained_file``."""
    name = ALIASES.get(hparams["backbone"], hparams["backbone"])
    if name in LOCAL_BACKBONES and hparams.get("pretrained") and not pretrained_file:
        raise PretrainedWeightsError(f"{name} has no published weights: set pretrained=false "
                                     f"in --hparams or give --pretrained_file")


def create_backbone(name: str, pretrained: bool = False, pretrained_file: str | None = None,
                    **kwargs) -> nn.Module:
    """A feature extractor with a ``num_features`` attribute and (B, num_features) output."""
    name = ALIASES.get(name, name)
    if name in LOCAL_BACKBONES:
        model = LOCAL_BACKBONES[name](**kwargs)
        if pretrained_file:
            from timm.models import load_state_dict     # .safetensors, .pth, .bin

            if not Path(pretrained_file).is_file():
                raise PretrainedWeightsError(f"pretrained weights file not found: "
                                             f"{pretrained_file}")
            model.load_state_dict(moco_backbone_state(pretrained_file)
                                  if is_moco_checkpoint(pretrained_file)
                                  else load_state_dict(pretrained_file))
        elif pretrained:
            raise PretrainedWeightsError(f"{name} has no published weights; use --pretrained_file")
        return model
    return _timm_model(name, pretrained, pretrained_file, **kwargs)


POOLINGS = ("avg", "avg+max")
HEADS = ("linear", "layernorm")
EMBED_INITS = ("kaiming", "orthogonal")


def _check_choice(kind: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(known)}")


class EmbeddingNet(nn.Module):
    """backbone -> [LayerNorm] -> linear embedding -> L2 normalisation.

    ``freeze_bn`` keeps the backbone's BatchNorm layers in eval mode during training (the usual
    DML recipe for ResNets with small per-class batches); ``freeze_bn_affine`` also keeps their
    weight and bias out of training (``fixed_parameters``; ProxyAnchor's bn_freeze).
    ``freeze_patch_embed`` keeps a ViT's patch embedding out of training (SEE's released code
    freezes it, trainer/models/model.py).
    ``pooling``: "avg" (the backbone's own pooling) or "avg+max", the sum of global average
    and global max pooling of the backbone's feature map (ProxyAnchor's official head; the
    backbone is then built without pooling).
    ``head``: "linear" (features -> Linear -> L2, ProxyAnchor's) or "layernorm" (features ->
    LayerNorm without affine weights -> Linear -> L2: SEE's released head, ``--use_lastnorm``).
    ``embed_init``: the Linear layer's initial weights, "kaiming" (normal, fan_out; ProxyAnchor's)
    or "orthogonal" (gain 1; SEE's); the bias starts at 0 in both.
    """

    def __init__(self, backbone: nn.Module, embed_dim: int, freeze_bn: bool = False,
                 pooling: str = "avg", freeze_bn_affine: bool = False, head: str = "linear",
                 embed_init: str = "kaiming", freeze_patch_embed: bool = False):
        super().__init__()
        _check_choice("pooling", pooling, POOLINGS)
        _check_choice("head", head, HEADS)
        _check_choice("embed_init", embed_init, EMBED_INITS)
        self.backbone = backbone
        self.head_norm = (nn.LayerNorm(backbone.num_features, elementwise_affine=False)
                          if head == "layernorm" else nn.Identity())
        self.embedding = nn.Linear(backbone.num_features, embed_dim)
        self.freeze_bn, self.pooling = freeze_bn, pooling
        if embed_init == "orthogonal":
            nn.init.orthogonal_(self.embedding.weight, gain=1.0)
        else:
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
        nn.init.zeros_(self.embedding.bias)
        self._fixed = [p for m in backbone.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       for p in (m.weight, m.bias) if p is not None] if freeze_bn_affine else []
        if freeze_patch_embed:
            if not isinstance(getattr(backbone, "patch_embed", None), nn.Module):
                raise ValueError("freeze_patch_embed needs a ViT backbone (one with a "
                                 "patch_embed module)")
            self._fixed += list(backbone.patch_embed.parameters())
        for p in self._fixed:
            p.requires_grad_(False)

    def fixed_parameters(self) -> list[nn.Parameter]:
        """Parameters that never train (BatchNorm affine with ``freeze_bn_affine``, the patch
        embedding with ``freeze_patch_embed``)."""
        return list(self._fixed)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if self.pooling == "avg+max":
            if f.ndim != 4:
                raise ValueError(f"pooling avg+max needs a feature map (B, C, H, W) from the "
                                 f"backbone, got shape {tuple(f.shape)}")
            f = F.adaptive_avg_pool2d(f, 1).flatten(1) + F.adaptive_max_pool2d(f, 1).flatten(1)
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 normalisation also under autocast (``speed`` module doc); a no-op in fp32
        z = self.embedding(self.head_norm(self.features(x)))
        return F.normalize(z.float(), dim=1)


def create_model(hparams: dict, pretrained_file: str | None = None) -> EmbeddingNet:
    """The embedding network an algorithm trains, from the hparams ``backbone``, ``pretrained``,
    ``embed_dim``, ``freeze_bn``, ``freeze_bn_affine``, ``freeze_patch_embed``, ``pooling``,
    ``head`` and ``embed_init``."""
    pooling = hparams.get("pooling", "avg")
    backbone = create_backbone(hparams["backbone"], hparams.get("pretrained", False),
                               pretrained_file, **({"global_pool": ""} if pooling == "avg+max"
                                                   else {}))
    net = EmbeddingNet(backbone, hparams["embed_dim"], hparams.get("freeze_bn", False),
                       pooling, hparams.get("freeze_bn_affine", False),
                       hparams.get("head", "linear"), hparams.get("embed_init", "kaiming"),
                       hparams.get("freeze_patch_embed", False))
    if pretrained_file and is_moco_checkpoint(pretrained_file):
        _keep_moco_head(net, pretrained_file, hparams["embed_dim"])
    return net


def _keep_moco_head(net: EmbeddingNet, path, embed_dim: int) -> None:
    """A MoCo v2 checkpoint is loaded whole, as UCDIR (UEM's base) loads it: the query encoder
    with its MLP projection head as the embedding layer, when the head's output size is the
    network's ``embed_dim`` (MoCo v2's 128); otherwise only the backbone (a fresh linear
    embedding of the requested size)."""
    head = moco_head(path)
    if head is not None and head[2].out_features == embed_dim:
        net.embedding = head
