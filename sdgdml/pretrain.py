"""Self-supervised pre-training: MoCo v2 on the unlabeled images of some domains of a dataset.

UEM (Sec. 4) starts from a ResNet-50 trained with MoCo v2 on ImageNet; a backbone with no such
weights (DigitsDG's small CNN) gets the equivalent start here, from the images of the domains
a run will use (no label is read). The file written has MoCo's own layout (``state_dict`` with
``module.encoder_q.`` keys, the MLP projection head as ``encoder_q.fc``), so
``python -m sdgdml.train --pretrained_file FILE`` loads it as it loads facebookresearch/moco's
checkpoints (``networks.is_moco_checkpoint``; UEM with ``uem_init`` moco_v2).

    python -m sdgdml.pretrain --dataset DigitsDG --domains mnist uci --steps 1500 \\
        --output runs/moco_digits.pth.tar

MoCo v2 (He et al., CVPR 2020, arXiv 1911.05722; Chen et al., arXiv 2003.04297), as its
released code: query encoder = backbone + MLP head (Linear, ReLU, Linear), key encoder its
momentum copy, a queue of negative keys, InfoNCE at temperature 0.2, two ``--aug-plus`` views per
image (``transforms.moco_v2_train``; no flip for digits), SGD momentum 0.9, weight decay 1e-4,
cosine lr. Shuffling BN (MoCo's multi-GPU trick against batch-statistics leakage) is done as
UCDIR does on one GPU: the key encoder sees the shuffled batch in two halves, each with its own
batch statistics. Defaults sized for small datasets (queue 1024 < the images, momentum 0.99 for
a short run; MoCo's ImageNet values 65536 and 0.999)."""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hparams_registry
from .datasets import ImageDataset, create_dataset, get_dataset_class
from .datasets import transforms as T
from .networks import MOCO_PREFIX, create_model
from .runstate import atomic_save
from .suggest import did_you_mean

log = logging.getLogger("sdgdml.pretrain")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdgdml.pretrain", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="DigitsDG", help="registered dataset name")
    p.add_argument("--domains", nargs="+", required=True,
                   help="domains whose images (all of them, unlabeled) are trained on")
    p.add_argument("--data_dir", default=None, help="dataset root (as for sdgdml.train)")
    p.add_argument("--output", required=True, help="checkpoint to write (MoCo layout)")
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--batch_size", type=int, default=256, help="images per step")
    p.add_argument("--lr", type=float, default=0.06, help="SGD learning rate (cosine to 0)")
    p.add_argument("--queue", type=int, default=1024, help="negative keys in the queue")
    p.add_argument("--momentum", type=float, default=0.99, help="key encoder momentum")
    p.add_argument("--temperature", type=float, default=0.2, help="InfoNCE temperature")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batches and views")
    p.add_argument("--log_every", type=int, default=100, help="steps between progress lines")
    p.add_argument("--num_workers", type=int, default=1,
                   help="data-loading processes (the views are made there)")
    return p


class MoCo(nn.Module):
    """MoCo v2: the query encoder (``create_model``'s network with MoCo's MLP head), its momentum
    copy and the queue."""

    def __init__(self, hparams: dict, queue: int, momentum: float, temperature: float):
        super().__init__()
        self.encoder_q = create_model(hparams)
        width, dim = self.encoder_q.backbone.num_features, hparams["embed_dim"]
        self.encoder_q.embedding = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                                 nn.Linear(width, dim))
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.m, self.t = momentum, temperature

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            k.mul_(self.m).add_(q.detach(), alpha=1.0 - self.m)
        order = torch.randperm(len(x))
        keys = torch.cat([self.encoder_k(half) for half in x[order].chunk(2)])
        return keys[torch.argsort(order)]

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        q = self.encoder_q(x_q)                       # EmbeddingNet: L2-normalised
        k = self._keys(x_k)
        negatives = self.queue.clone()                 # the queue changes below
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], 1) / self.t
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        with torch.no_grad():                          # enqueue, oldest out
            n, size = len(k), len(self.queue)
            slots = (self.ptr + torch.arange(n)) % size
            self.queue[slots] = k
            self.ptr.copy_((self.ptr + n) % size)
        return loss

    def checkpoint(self, steps: int, backbone: str) -> dict:
        """MoCo's layout: ``module.encoder_q.<backbone key>`` and ``module.encoder_q.fc.*``."""
        net = self.encoder_q
        state = {f"{MOCO_PREFIX}{k}": v for k, v in net.backbone.state_dict().items()}
        state.update({f"{MOCO_PREFIX}fc.{k}": v for k, v in net.embedding.state_dict().items()})
        return {"epoch": steps, "arch": backbone, "state_dict": state}


class TwoViews:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img), self.transform(img)


def _images(args, hparams: dict):
    """Every image of the requested domains, two MoCo v2 views each."""
    dataset = create_dataset(args.dataset, args.data_dir, args.domains[0], args.domains[1:])
    small = args.dataset in hparams_registry.SMALL_IMAGE_DATASETS
    norm = {"mean": (0.5,) * 3, "std": (0.5,) * 3} if small else {
        k: v for k, v in (T.data_config(hparams) or {}).items() if k in ("mean", "std")}
    views = TwoViews(T.moco_v2_train(hparams["image_size"], flip=not small, **norm))
    parts = [ImageDataset(dataset.unlabeled_split(d), views) for d in args.domains]
    return torch.utils.data.ConcatDataset(parts)


def check(args) -> dict:
    """Every value checked before anything is loaded or written; the network's hparams."""
    try:
        cls = get_dataset_class(args.dataset)
    except Exception as e:
        raise SystemExit(f"error: {e}") from None
    for d in args.domains:
        if d not in cls.DOMAINS:
            raise SystemExit(f"error: {args.dataset} has no domain {d!r}; known: "
                             f"{', '.join(cls.DOMAINS)}{did_you_mean(d, cls.DOMAINS)}")
    if args.num_workers < 0:
        raise SystemExit(f"error: --num_workers must be >= 0 (got {args.num_workers})")
    for name in ("steps", "batch_size", "queue", "log_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name} must be >= 1 (got {getattr(args, name)})")
    if args.batch_size < 2:
        raise SystemExit("error: --batch_size must be >= 2 (two BatchNorm halves)")
    for name in ("lr", "temperature"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"error: --{name} must be > 0 (got {getattr(args, name)})")
    if not 0 <= args.momentum < 1:
        raise SystemExit(f"error: --momentum must be in [0, 1) (got {args.momentum})")
    out = Path(args.output)
    if out.is_dir() or not out.parent.exists():
        raise SystemExit(f"error: --output {out}: not a file path in an existing folder")
    # the embedding network UEM trains on this dataset (backbone, embed_dim, image size)
    return hparams_registry.default_hparams("UEM", args.dataset)


def pretrain(args) -> Path:
    hparams = check(args)
    torch.manual_seed(args.seed)
    data = _images(args, hparams)
    if len(data) < args.batch_size:
        raise SystemExit(f"error: --batch_size {args.batch_size} > the {len(data)} images")
    model = MoCo(hparams, args.queue, args.momentum, args.temperature)
    opt = torch.optim.SGD(model.encoder_q.parameters(), args.lr, momentum=0.9,
                          weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / args.steps)).item()))
    sampler = torch.utils.data.RandomSampler(data, replacement=False,
                                             num_samples=args.steps * args.batch_size,
                                             generator=torch.Generator().manual_seed(args.seed))
    loader = torch.utils.data.DataLoader(data, args.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=args.num_workers)
    log.info("MoCo v2 on %d unlabeled images of %s %s: %d steps of batch %d", len(data),
             args.dataset, "+".join(args.domains), args.steps, args.batch_size)
    model.train()
    t0, losses = time.time(), []
    for step, (x_q, x_k) in enumerate(loader, 1):
        loss = model(x_q, x_k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        if step % args.log_every == 0 or step == args.steps:     # mean since the last line
            log.info("pretrain %d/%d steps loss=%.4f lr=%.4g | %.0f s", step, args.steps,
                     float(torch.stack(losses).mean()), sched.get_last_lr()[0], time.time() - t0)
            losses = []
    out = Path(args.output)
    atomic_save(model.checkpoint(args.steps, hparams["backbone"]), out)
    log.info("wrote %s (use: --pretrained_file %s)", out, out)
    return out


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    pretrain(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
