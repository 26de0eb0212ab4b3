"""Added cost per training step of UEM, and its clustering cost per epoch (CenterPolar, a loss
plug-in, is timed with the others in bench_plugins.py).

    python benchmarks/bench_uem.py --device cpu      # or cuda

Prints median wall-clock times of --repeats runs after a warm-up (a base and its method are
timed in alternation, so that both see the same load on a shared machine):
1. a ResNet-50 forward+backward step on a batch of 32 224x224 images (the reference step);
2. UEM: one update of UEM with every component on versus the instance-discrimination-only
   variant (P.M., SEL, SPDA and SN2M off), both on a tiny stand-in network, so that the
   difference is UEM's own added cost (prototype losses, discriminator, nearest-neighbour
   search in a --queue sized memory, memory update); relative to (1) and to UEM's own backbone
   cost (2 domains x 2 views = 4 ResNet-50 passes of 32 images per step);
3. the k-means of one domain's memory (--cluster_images x embed dim) per epoch, torch and
   scikit-learn backends, relative to a ResNet-50 epoch over the same number of images.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from tabulate import tabulate
from timing import resnet50_step_seconds, round_robin, seconds

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule
from sdgdml.algorithms.uem import UEM
from sdgdml.clustering import spherical_kmeans
from sdgdml.networks import EmbeddingNet


class TinyBackbone(nn.Module):
    num_features = 64

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 64)

    def forward(self, x):
        return self.fc(x.flatten(1))


def uem_step(switches: dict, k: int, queue: int, dim: int, device):
    """A function doing one UEM update (2 domains, batch 32) on a tiny stand-in network."""
    hp = hparams_registry.get_hparams("UEM", "DomainNet", overrides={
        "embed_dim": dim, "batch_size": 32, "uem_queue_size": queue, "uem_stage2_start": 0.0,
        **switches})
    torch.manual_seed(0)
    alg = UEM(EmbeddingNet(TinyBackbone(), dim), k, hp,
              Schedule(total_steps=10 ** 6, steps_per_epoch=10 ** 5)).to(device)
    for name in ("source", "target"):
        alg._memory(name).push(F.normalize(torch.randn(queue, dim, device=device), dim=1))
    alg.recluster()
    alg.step = 1
    x = torch.randn(32, 3, 8, 8, device=device)
    return lambda: alg.update({"x": x, "unlabeled": {"target": x}})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of the cheap steps")
    p.add_argument("--resnet_repeats", type=int, default=3, help="timed ResNet-50 steps")
    p.add_argument("--embed_dim", type=int, default=512, help="embedding dimension")
    p.add_argument("--prototypes", type=int, default=345, help="UEM: k (DomainNet: 345)")
    p.add_argument("--queue", type=int, default=50000, help="UEM: memory per domain")
    p.add_argument("--cluster_images", type=int, default=50000, help="k-means: embeddings")
    p.add_argument("--kmeans_iters", type=int, default=20, help="k-means: iterations")
    p.add_argument("--skip_sklearn", action="store_true", help="skip the scikit-learn k-means")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}")

    ref = resnet50_step_seconds(device, 32, args.resnet_repeats)
    print(f"ResNet-50, batch 32 x 224^2, forward+backward: {ref * 1e3:.1f} ms")

    off = {"uem_proto_mix": False, "uem_sel": False, "uem_spda": False, "uem_sn2m": False}
    times = round_robin(
        {"ince": uem_step(off, args.prototypes, args.queue, args.embed_dim, device),
         "full": uem_step({}, args.prototypes, args.queue, args.embed_dim, device)},
        device, args.repeats)
    ince, full = times["ince"], times["full"]
    rows = [
        [f"UEM (full vs INCE only; k={args.prototypes}, memory {args.queue})", ince * 1e3,
         full * 1e3, (full - ince) * 1e3, 100 * (full - ince) / ince, 100 * (full - ince) / ref,
         100 * (full - ince) / (4 * ref)],
    ]
    print(tabulate(rows, headers=["method", "base ms", "method ms", "added ms", "% of base",
                                  "% of R50 step", "% of 4 R50 passes"], floatfmt=".2f",
                   missingval="-"))

    x = F.normalize(torch.randn(args.cluster_images, args.embed_dim, device=device), dim=1)
    epoch = args.cluster_images / 32 * ref
    rows = []
    for k in sorted({65, args.prototypes}):
        backends = ["torch"] + ([] if args.skip_sklearn else ["sklearn"])
        for backend in backends:
            t = seconds(lambda: spherical_kmeans(x, k, args.kmeans_iters, seed=0,
                                                 backend=backend), device)
            rows.append([backend, k, t, 100 * t / epoch])
    print(f"k-means of {args.cluster_images} x {args.embed_dim} embeddings, "
          f"{args.kmeans_iters} iterations, once per epoch and domain "
          f"(ResNet-50 epoch over the same images: {epoch:.0f} s)")
    print(tabulate(rows, headers=["backend", "k", "seconds", "% of R50 epoch"],
                   floatfmt=".2f"))


if __name__ == "__main__":
    main()
