"""Cost of the SEE / PFML plug-ins: forward+backward time of each loss next to its bare base loss
and next to a ResNet-50 forward+backward step, on the same machine.

    python benchmarks/bench_plugins.py                       # CPU, batch 256, d 512, 100 classes
    python benchmarks/bench_plugins.py --threads 1           # steadier on a shared CPU
    python benchmarks/bench_plugins.py --device cuda

Each loss gets a batch of ``--batch`` L2-normalised embeddings (a leaf tensor standing in for
the network output) over ``--classes`` classes; multi-proxy losses use ``--m`` proxies per class
(PFML's M, SoftTriple's centres). SEE expands the whole batch (its most expensive curriculum
stage, ``see_topk_start = 1``). The ResNet-50 step is timm's ``resnet50`` (random init) on
``--resnet_batch`` images of 224x224. Times are medians over ``--repeats`` runs after warm-up.
Both papers claim a negligible cost; the goal here is that each plug-in adds under 2% of the
ResNet-50 step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from tabulate import tabulate

DEFAULT_LOSSES = ["ProxyAnchor", "ProxyAnchor+SEE", "ProxyAnchor+PFML",
                  "NormSoftmax", "NormSoftmax+SEE",
                  "ProxyNCA", "ProxyNCA+PFML",
                  "SoftTriple", "SoftTriple+SEE", "SoftTriple+PFML", "SoftTriple+SEE+PFML",
                  "PFML"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of step()."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def loss_step(name: str, args, device: torch.device):
    """A closure running one forward+backward of the loss ``name``."""
    from sdgdml.algorithms import create_loss
    from sdgdml.hparams_registry import default_hparams

    hp = {**default_hparams(name, "benchmark"), "embed_dim": args.dim}
    hp.update({k: v for k, v in {"pfml_m": args.m, "st_centers": args.m,
                                 "see_topk_start": 1.0}.items() if k in hp})
    torch.manual_seed(0)
    loss = create_loss(name, args.classes, args.dim, hp).to(device)
    loss.set_progress(0.0, 1.0)
    raw = torch.randn(args.batch, args.dim, device=device, requires_grad=True)
    y = torch.randint(0, args.classes, (args.batch,), device=device)

    def step():
        raw.grad = None
        loss.zero_grad(set_to_none=True)
        loss(F.normalize(raw, dim=1), y).backward()

    return step


def round_robin_times(steps: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median seconds per step, measured in interleaved rounds so that load changes on a
    shared machine affect every loss alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def resnet_step_time(args, device: torch.device) -> float:
    import timm

    model = timm.create_model("resnet50", pretrained=False).to(device).train()
    x = torch.randn(args.resnet_batch, 3, 224, 224, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return timed(step, device, args.resnet_repeats, 1)


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
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 gives steadier timings on a "
                        "shared machine, where small ops suffer most from oversubscription")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} torch threads={torch.get_num_threads()} batch={args.batch} "
          f"d={args.dim} classes={args.classes} M={args.m}")

    t_resnet = resnet_step_time(args, device)
    print(f"ResNet-50 forward+backward, batch {args.resnet_batch}: {t_resnet * 1e3:.1f} ms")
    steps = {name: loss_step(name, args, device) for name in args.losses}
    times = round_robin_times(steps, device, args.repeats, args.warmup)

    rows = []
    for name in args.losses:
        base = name.split("+")[0]
        t = times[name]
        extra = t - times[base] if "+" in name and base in times else None
        rows.append([name, t * 1e3,
                     None if extra is None else extra * 1e3,
                     None if extra is None else 100 * extra / t_resnet,
                     100 * t / t_resnet,
                     "" if extra is None else ("yes" if extra / t_resnet < 0.02 else "NO")])
    print(tabulate(rows, headers=["loss", "fwd+bwd ms", "added vs base ms",
                                  "added / ResNet-50 %", "loss / ResNet-50 %", "< 2%"],
                   floatfmt=".2f", missingval="-"))


if __name__ == "__main__":
    main()
