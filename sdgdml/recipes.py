"""Official recipes: a named set of defaults reproducing a paper's training setting
(``python -m sdgdml.train --recipe proxyanchor_r50``, or ``recipe:`` in a sweep file's
``train_args``). A recipe's hparams replace the registry's defaults (or the random sample) of
the hparams the algorithm has; explicit ``--hparams`` still win; it may also give the run length
in epochs when neither ``--epochs`` nor ``--steps`` is given. The recipe's name is recorded
(``args.json`` and every record's ``args``; ``collect_results.py`` appends it to the algorithm's
name in the tables) and its values are in ``hparams.json`` and every record's ``hparams``.

A light module (no torch): the argument parser reads the names.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    """``hparams`` for every dataset, updated by ``per_dataset[dataset]``; ``epochs``: the run
    length (None: the dataset's default); ``source``: where the values come from; ``unknown``:
    what the source leaves open (our defaults stay)."""

    name: str
    source: str
    hparams: dict
    epochs: float | None = None
    per_dataset: dict = field(default_factory=dict)
    unknown: str = ""


_R50 = {"backbone": "resnet50.tv_in1k", "pretrained": True, "embed_dim": 512,
        "image_size": 224}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("proxyanchor_r50",
           "ProxyAnchor official code (tjddus9597/Proxy-Anchor-CVPR2020: code/train.py, "
           "code/net/resnet.py, README R50 commands)",
           {**_R50, "pooling": "avg+max", "freeze_bn": True, "freeze_bn_affine": True,
            "optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-4, "proxy_lr_mult": 100.0,
            "batch_size": 120, "warmup_epochs": 5, "lr_schedule": "step",
            "lr_step_epochs": 5.0, "lr_step_gamma": 0.5, "grad_clip_value": 10.0},
           epochs=60, per_dataset={"Cars196Ext": {"lr_step_epochs": 10.0}},
           unknown="BatchNorm affine: bn_freeze freezes it, but the official train.py sets "
                   "requires_grad back on for every backbone parameter when its warm-up ends, "
                   "so with --warm 5 their affine weights train from epoch 5; "
                   "freeze_bn_affine=false reproduces that. StepLR every 5 epochs on CUB, 10 "
                   "on Cars (5 elsewhere)."),
    Recipe("pfml_r50", "PFML paper Sec. 4.1",
           {**_R50, "optimizer": "adam", "lr": 5e-4, "proxy_lr_mult": 100.0, "pfml_m": 15},
           epochs=200,
           unknown="batch size, weight decay, warm-up, schedule, BN handling and pooling are "
                   "not stated (our defaults); M = 2 on SOP (not a dataset here)."),
    Recipe("see_deit_s",
           "SEE released scripts (Leminhbinh0209/PAKDD24-SEE: scripts/Deit/*.sh, "
           "trainer/train.py)",
           {"backbone": "deit_small_distilled_patch16_224.fb_in1k", "pretrained": True,
            "embed_dim": 128, "image_size": 224, "optimizer": "adamw", "lr": 1e-5,
            "weight_decay": 1e-2, "batch_size": 90, "sampler": "m_per_class",
            "samples_per_class": 2, "warmup_epochs": 1, "lr_schedule": "cosine",
            "grad_clip_value": 10.0, "pa_margin": 0.1, "see_n_aug": 8, "see_lambda": 0.2,
            "see_topk_start": 0.0, "see_topk_end": 0.4, "see_schedule": "cosine",
            "see_grad": "proxies", "see_aug_weighting": "once"},
           epochs=100,
           unknown="fp16 is not reproduced; the scripts pass --clip_grad 1.0 but the code then "
                   "clips by value 10; their warm-up is a linear lr ramp over 1 epoch (ours "
                   "freezes the backbone for it)."),
    Recipe("uem_r50", "UEM paper Sec. 4 (shared/notes/uem-paper.md)",
           {**_R50, "optimizer": "sgd", "lr": 2e-4, "lr_schedule": "cosine", "batch_size": 64,
            "uem_idse_fraction": 100 / 150},
           epochs=150,
           unknown="IDSE 100 + CDSM 50 epochs (Office-31, Office-Home; DomainNet: 200 + 50, "
                   "set --epochs 250 and uem_idse_fraction 0.8); the backbone's MoCo v2 weights "
                   "must be given with --pretrained_file."),
    Recipe("centerpolar_r50", "CenterPolar paper (arXiv 2601.09121) as reviewed in "
           "shared/notes/methods.md",
           {**_R50, "optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-4,
            "proxy_lr_mult": 100.0},
           unknown="the paper's optimiser, schedule, batch and run length could not be read: "
                   "the standard proxy recipe (ResNet-50, 512-d, AdamW 1e-4, proxies x100) is "
                   "ours, the dataset's default length; every C3E/C4 value is ours too."),
]}


def recipe_hparams(name: str | None, dataset: str) -> dict:
    """The hparams recipe ``name`` sets on ``dataset`` ({} for no recipe)."""
    if not name:
        return {}
    r = RECIPES[name]
    return {**r.hparams, **r.per_dataset.get(dataset, {})}


def recipe_epochs(name: str | None) -> float | None:
    return RECIPES[name].epochs if name else None
