"""Cost of the loss plug-ins (SEE, PFML, CenterPolar): forward+backward time of each loss next to its bare base loss
and next to a ResNet-50 forward+backward step, on the same machine.

    python benchmarks/bench_plugins.py                       # CPU, batch 256, d 512, 100 classes
    python benchmarks/bench_plugins.py --threads 1           # steadier on a shared CPU
    python benchmarks/bench_plugins.py --device cuda --full_step

Each loss gets a batch of ``--batch`` L2-normalised embeddings (a leaf tensor standing in for
the network output) over ``--classes`` classes; multi-proxy losses use ``--m`` proxies per class
(PFML's M, SoftTriple's centres). SEE expands the whole batch (its most expensive curriculum
stage, ``see_topk_start = 1``); CenterPolar is timed at mid-training. The ResNet-50 step is
timm's ``resnet50`` (random init) on ``--resnet_batch`` images of 224x224. Times are medians over ``--repeats`` runs after warm-up.
Both papers claim a negligible cost; the goal here is that each plug-in adds under 2% of the
ResNet-50 step. ``--full_step`` also times whole training steps (ResNet-50 + embedding head +
loss at batch --resnet_batch), where a plug-in's small kernels can overlap the network's work on
a GPU, and on CUDA the table counts the operations that make the host wait for the device.
"""
from __future__ import annotations

import argparse

import torch
from tabulate import tabulate
from timing import count_syncs, loss_step, resnet50_step_seconds, round_robin, train_step

from sdgdml.hparams_registry import default_hparams

DEFAULT_LOSSES = ["ProxyAnchor", "ProxyAnchor+SEE", "ProxyAnchor+PFML",
                  "NormSoftmax", "NormSoftmax+SEE",
                  "ProxyNCA", "ProxyNCA+PFML",
                  "SoftTriple", "SoftTriple+SEE", "SoftTriple+PFML", "SoftTriple+SEE+PFML",
                  "PFML", "ProxyAnchor+CenterPolar"]


def _hparams(name: str, args) -> dict:
    hp = {**default_hparams(name, "benchmark"), "embed_dim": args.dim}
    hp.update({k: v for k, v in {"pfml_m": args.m, "st_centers": args.m,
                                 "see_topk_start": 1.0, "see_topk_end": 1.0}.items()
              if k in hp})
    return hp


def _epoch(name: str) -> float:
    return 0.5 if "CenterPolar" in name else 0.0    # its expansion grows over training


def plugin_steps(args, device: torch.device) -> dict:
    """One loss fwd+bwd closure per loss name, with the benchmark's sizes."""
    return {name: loss_step(name, _hparams(name, args), args.batch, args.classes, device,
                            epoch=_epoch(name)) for name in args.losses}


def full_steps(args, device: torch.device) -> dict:
    """One ResNet-50 + loss training fwd+bwd closure per loss name (batch --resnet_batch)."""
    return {name: train_step(name, _hparams(name, args), args.resnet_batch, args.classes,
                             device, epoch=_epoch(name)) for name in args.losses}


def _added_rows(times: dict, names, reference: float) -> list:
    rows = []
    for name in names:
        base = name.split("+")[0]
        t = times[name]
        extra = t - times[base] if "+" in name and base in times else None
        rows.append([name, t * 1e3,
                     None if extra is None else extra * 1e3,
                     None if extra is None else 100 * extra / reference,
                     "" if extra is None else ("yes" if extra / reference < 0.02 else "NO")])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=256, help="embeddings per loss step")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension")
    p.add_argument("--classes", type=int, default=100, help="number of classes")
    p.add_argument("--m", type=int, default=15, help="proxies per class (PFML M, SoftTriple K)")
    p.add_argument("--losses", nargs="+", default=DEFAULT_LOSSES, help="algorithm names")
    p.add_argument("--repeats", type=int, default=20, help="timed loss steps (median kept)")
    p.add_argument("--warmup", type=int, default=3, help="untimed loss steps first")
    p.add_argument("--resnet_batch", type=int, default=32, help="ResNet-50 batch (224x224)")
    p.add_argument("--resnet_repeats", type=int, default=3, help="timed ResNet-50 steps")
    p.add_argument("--full_step", action="store_true",
                   help="also time whole training steps (ResNet-50 + loss) per loss")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 gives steadier timings on a "
                        "shared machine, where small ops suffer most from oversubscription")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} torch threads={torch.get_num_threads()} batch={args.batch} "
          f"d={args.dim} classes={args.classes} M={args.m}")

    t_resnet = resnet50_step_seconds(device, args.resnet_batch, args.resnet_repeats)
    print(f"ResNet-50 forward+backward, batch {args.resnet_batch}: {t_resnet * 1e3:.1f} ms")
    steps = plugin_steps(args, device)
    times = round_robin(steps, device, args.repeats, args.warmup)
    rows = _added_rows(times, args.losses, t_resnet)
    for row, name in zip(rows, args.losses):
        row.insert(4, 100 * times[name] / t_resnet)
        row.append(count_syncs(steps[name], device))
    print(f"\n1. the loss alone, batch {args.batch}: forward+backward")
    print(tabulate(rows, headers=["loss", "fwd+bwd ms", "added vs base ms",
                                  "added / ResNet-50 %", "loss / ResNet-50 %", "< 2%",
                                  "host syncs"], floatfmt=".2f", missingval="-"))
    if args.full_step:
        times = round_robin(full_steps(args, device), device, args.resnet_repeats, 1)
        print(f"\n2. a training step: ResNet-50 + embedding head + loss, batch "
              f"{args.resnet_batch}, forward+backward (what a plug-in adds to a real step)")
        print(tabulate(_added_rows(times, args.losses, t_resnet),
                       headers=["loss", "step ms", "added vs base ms", "added / ResNet-50 %",
                                "< 2%"], floatfmt=".2f", missingval="-"))


if __name__ == "__main__":
    main()
