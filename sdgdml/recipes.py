"""Official recipes: a named set of defaults reproducing a paper's training setting
(``python -m sdgdml.train --recipe proxyanchor_r50``, or ``recipe:`` in a sweep file's
``train_args``). A recipe's hparams replace the registry's defaults (or the random sample) of
the hparams the algorithm has; explicit ``--hparams`` still win; it may also give the run length
in epochs when neither ``--epochs`` nor ``--steps`` is given, and a global batch (the batch the
loss sees), shared equally by the processes of a multi-GPU run. A recipe named after released
code holds that code's settings; a deliberate variant has a name that says so. The recipe's
name is recorded (``args.json`` and every record's ``args``; ``collect_results.py`` appends it to
the algorithm's name in the tables) and its values are in ``hparams.json`` and every record's
``hparams``.

A light module (no torch): the argument parser reads the names.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class RecipeError(ValueError):
    """A recipe cannot run as asked (its global batch does not split over the processes)."""


@dataclass(frozen=True)
class Recipe:
    """``hparams`` for every dataset, updated by ``per_dataset[dataset]``; ``epochs``: the run
    length (None: the dataset's default); ``global_batch_size``: the batch the loss sees in one
    step, over every process (the per-process hparam ``batch_size`` is this divided by the
    number of processes, so the recipe's loss batch holds on 1, 2 or N GPUs; None: the
    recipe sets no batch); ``source``: the files the values come from; ``reproduces``: what of
    the source the values reproduce; ``unknown``: what the source leaves open or what we do
    not reproduce (our defaults stay)."""

    name: str
    source: str
    hparams: dict
    epochs: float | None = None
    per_dataset: dict = field(default_factory=dict)
    unknown: str = ""
    global_batch_size: int | None = None
    reproduces: str = ""


_R50 = {"backbone": "resnet50.tv_in1k", "pretrained": True, "embed_dim": 512,
        "image_size": 224}
_PROXYANCHOR_R50 = {
    **_R50, "pooling": "avg+max", "head": "linear", "embed_init": "kaiming",
    "freeze_bn": True, "freeze_bn_affine": False, "sampler": "random", "optimizer": "adamw",
    "lr": 1e-4, "weight_decay": 1e-4, "proxy_lr_mult": 100.0, "warmup_epochs": 5,
    "lr_schedule": "step", "lr_step_epochs": 5.0, "lr_step_gamma": 0.5, "grad_clip_value": 10.0}
_PROXYANCHOR_SOURCE = ("ProxyAnchor official code (tjddus9597/Proxy-Anchor-CVPR2020: "
                       "code/train.py, code/net/resnet.py, README's ResNet-50 commands: "
                       "--batch-size 120 --lr 1e-4 --warm 5 --bn-freeze 1 --lr-decay-step 5 "
                       "(CUB) / 10 (Cars))")

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("proxyanchor_r50", _PROXYANCHOR_SOURCE, _PROXYANCHOR_R50,
           epochs=60, per_dataset={"Cars196Ext": {"lr_step_epochs": 10.0}},
           global_batch_size=120,
           reproduces="ResNet-50 (torchvision weights), GAP+GMP head, Linear with Kaiming "
                      "(fan_out) init, L2; BatchNorm in eval mode throughout (bn_freeze); a "
                      "5-epoch warm-up training only the embedding and the proxies, after "
                      "which every parameter trains, BatchNorm weights included (train.py "
                      "sets requires_grad back on for all non-embedding parameters at "
                      "epoch == warm); AdamW lr 1e-4, weight decay 1e-4, proxies x100; StepLR "
                      "x0.5 every 5 epochs (CUB) or 10 (Cars); gradients clipped by value 10 "
                      "on network and proxies; random batches (no --IPC) of 120 on one GPU; "
                      "60 epochs (train.py's default).",
           unknown="the step of datasets other than CUB and Cars (5 epochs here)."),
    Recipe("proxyanchor_r50_frozen_bn_affine", _PROXYANCHOR_SOURCE,
           {**_PROXYANCHOR_R50, "freeze_bn_affine": True},
           epochs=60, per_dataset={"Cars196Ext": {"lr_step_epochs": 10.0}},
           global_batch_size=120,
           reproduces="proxyanchor_r50, except (a deliberate variant, not the official "
                      "setting) BatchNorm weights and biases never train, also after the "
                      "warm-up (as resnet.py's bn_freeze alone would leave them).",
           unknown="as proxyanchor_r50."),
    Recipe("pfml_r50", "PFML paper Sec. 4.1",
           {**_R50, "optimizer": "adam", "lr": 5e-4, "proxy_lr_mult": 100.0, "pfml_m": 15},
           epochs=200,
           reproduces="ResNet-50, 512-d, Adam 5e-4, proxies x100, M = 15, 200 epochs.",
           unknown="batch size, weight decay, warm-up, schedule, BN handling and pooling are "
                   "not stated (our defaults); M = 2 on SOP (not a dataset here)."),
    Recipe("see_deit_s",
           "SEE released code (Leminhbinh0209/PAKDD24-SEE: scripts/Deit/CUB.sh and Cars.sh, "
           "trainer/train.py, trainer/utils.py get_params_groups, trainer/models/model.py)",
           {"backbone": "deit_small_distilled_patch16_224.fb_in1k", "pretrained": True,
            "embed_dim": 128, "image_size": 224, "head": "layernorm",
            "embed_init": "orthogonal", "freeze_patch_embed": True, "optimizer": "adamw",
            "lr": 1e-5, "weight_decay": 1e-2, "proxy_lr_mult": 1e4,
            "sampler": "m_per_class", "samples_per_class": 2, "warmup_epochs": 1,
            "lr_schedule": "constant", "grad_clip_value": 10.0, "pa_margin": 0.1,
            "see_n_aug": 8, "see_lambda": 0.2, "see_topk_start": 0.0, "see_topk_end": 0.4,
            "see_schedule": "cosine", "see_grad": "proxies", "see_aug_weighting": "once"},
           epochs=100, global_batch_size=180,
           reproduces="DeiT-S distilled, 128-d; head LayerNorm without affine -> Linear "
                      "(orthogonal init) -> L2 (--use_lastnorm); patch embedding frozen "
                      "(model.py); AdamW lr 1e-5, weight decay 1e-2 on every group; proxies at "
                      "lr x1e4 = 0.1 (get_params_groups), the head at x1 (the CUB/Cars scripts "
                      "pass no --fc_lr_scale); a constant lr (no --lr_decay: a step schedule "
                      "with gamma 1); the backbone's lr 0 during the first epoch "
                      "(--warmup_epochs 1); gradients clipped by value 10 (--clip_grad 1.0 "
                      "only switches clipping on); 2 images per class; 90 images per GPU x 2 "
                      "GPUs = 180 embeddings in the loss (all_gather); 100 epochs; SEE's "
                      "--n-expan 8 --lambd 0.2 --min-thresh 0 --max-thresh 0.4 --mrg 0.1.",
           unknown="not reproduced: fp16 and with it AdamW eps 1e-4 (ours: fp32, eps 1e-8); "
                   "the ViT training crop scale (0.2, 1) with bicubic resizing (ours: "
                   "(0.08, 1), bilinear); during the warm-up the backbone is frozen rather "
                   "than at lr 0, so its Adam moments start after the warm-up instead of "
                   "accumulating during it; on their 2 processes each back-propagates only its "
                   "own 90 rows and DDP averages, which gives the network half the gradient of "
                   "the 180-embedding loss (ours: the exact gradient; under AdamW the scale "
                   "matters only through eps and the clip by value)."),
    Recipe("uem_r50", "UEM paper (NeurIPS 2024) Sec. 4",
           {**_R50, "optimizer": "sgd", "lr": 2e-4, "lr_schedule": "cosine",
            "uem_idse_fraction": 100 / 150},
           epochs=150, global_batch_size=64,
           reproduces="ResNet-50, SGD lr 2e-4 cosine to 0, batch 64, IDSE 100 + CDSM 50 "
                      "epochs (Office-31, Office-Home).",
           unknown="DomainNet: 200 + 50 epochs, set --epochs 250 and uem_idse_fraction 0.8; "
                   "the backbone's MoCo v2 weights must be given with --pretrained_file."),
    Recipe("centerpolar_r50", "CenterPolar paper (arXiv 2601.09121)",
           {**_R50, "optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-4,
            "proxy_lr_mult": 100.0},
           reproduces="nothing stated by the paper could be read; the standard proxy recipe.",
           unknown="the paper's optimiser, schedule, batch and run length could not be read: "
                   "the standard proxy recipe (ResNet-50, 512-d, AdamW 1e-4, proxies x100) is "
                   "ours, the dataset's default length; every C3E/C4 value is ours too."),
]}


def recipe_hparams(name: str | None, dataset: str, world_size: int | None = 1) -> dict:
    """The hparams recipe ``name`` sets on ``dataset`` ({} for no recipe): with a global batch,
    ``batch_size`` is its per-process share on ``world_size`` processes (None: no
    ``batch_size``, the caller gives its own)."""
    if not name:
        return {}
    r = RECIPES[name]
    out = {**r.hparams, **r.per_dataset.get(dataset, {})}
    if r.global_batch_size is not None and world_size is not None:
        if world_size < 1 or r.global_batch_size % world_size:
            raise RecipeError(f"recipe {name} trains with a global batch of "
                              f"{r.global_batch_size}, which {world_size} processes cannot "
                              f"share equally; use a number of processes dividing "
                              f"{r.global_batch_size}, or set batch_size (per process) in "
                              f"--hparams")
        out["batch_size"] = r.global_batch_size // world_size
    return out


def recipe_epochs(name: str | None) -> float | None:
    return RECIPES[name].epochs if name else None
