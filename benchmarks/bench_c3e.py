"""Cost of CenterPolar's C3E (adversarial expansion of the images) next to a plain training step,
on the same machine, in one run.

    python benchmarks/bench_c3e.py --threads 1                 # CPU: ResNet-50, batch 8, 224 px
    python benchmarks/bench_c3e.py --device cuda --batch 32

Three training steps of ``ProxyAnchor+CenterPolar`` (timm ``resnet50``, random init, BN frozen as
in the official recipe) per number of ascent steps K, each timed against a plain ProxyAnchor
step on the same batch size:

- a *generation* step: K ascent forward+backward passes to the images (network frozen, gradients
  to the inputs only) + one no-grad pass, then the training step on the batch plus as many
  expanded images (``cp_c3e_ratio`` 1.0);
- a *joining* step: no generation, the batch plus the expanded images drawn from the pool;
- the *amortised* step with a generation every ``--every`` steps (the default 10):
  joining + (generation - joining) / every.

Times are medians over ``--repeats`` rounds (each round: one plain step and the three kinds).
"""
from __future__ import annotations

import argparse
import statistics

import torch
from tabulate import tabulate
from timing import seconds

from sdgdml.algorithms import Schedule, create_algorithm
from sdgdml.hparams_registry import default_hparams
from sdgdml.networks import create_model


def _algorithm(name: str, args, device, **over):
    hp = {**default_hparams(name, "benchmark"), "backbone": args.backbone, "pretrained": False,
          "embed_dim": 512, "freeze_bn": True, "warmup_epochs": 0, **over}
    torch.manual_seed(0)
    return create_algorithm(name, create_model(hp).to(device), args.classes, hp,
                            Schedule(1000, 100)).to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="resnet50", help="timm name (random init)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10], help="ascent steps K")
    p.add_argument("--every", type=int, default=10, help="generation period (cp_c3e_every)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    batch = {"x": x, "y": torch.arange(args.batch, device=device) % args.classes}
    print(f"device={device} threads={torch.get_num_threads()} backbone={args.backbone} "
          f"batch={args.batch} image={args.image_size}")
    plain = _algorithm("ProxyAnchor", args, device)
    plain.update(batch)                                             # warm-up
    rows = []
    for k in args.steps:
        cp = _algorithm("ProxyAnchor+CenterPolar", args, device, cp_c3e_steps=k,
                        cp_c3e_every=2, cp_c3e_ratio=1.0)
        cp.update(batch)                     # call 0: no centroids yet, nothing generated
        cp.update(batch)                     # call 1: the centroids exist; pool still empty
        t_plain, t_gen, t_join = [], [], []
        for _ in range(args.repeats):
            t_plain.append(seconds(lambda: plain.update(batch), device))
            t_gen.append(seconds(lambda: cp.update(batch), device))    # even call: generates
            t_join.append(seconds(lambda: cp.update(batch), device))   # odd call: joins only
        tp, tg, tj = (statistics.median(t) for t in (t_plain, t_gen, t_join))
        amortised = tj + (tg - tj) / args.every
        rows.append([k, tp, tg, tj, amortised, tg / tp, tj / tp, amortised / tp])
    print(tabulate(rows, headers=["K", "plain s", "generation s", "joining s",
                                  f"amortised (every {args.every}) s", "generation / plain",
                                  "joining / plain", "amortised / plain"], floatfmt=".2f"))


if __name__ == "__main__":
    main()
