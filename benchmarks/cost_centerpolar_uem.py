"""Added cost per training step of CenterPolar and UEM, and UEM's clustering cost per epoch.

    python benchmarks/cost_centerpolar_uem.py --device cpu      # or cuda

Prints the fastest wall-clock time of --repeats runs after a warm-up (a base and its method are
timed in alternation, so that both see the same load on a shared machine):
1. a ResNet-50 forward+backward step on a batch of 32 224x224 images (the reference step);
2. CenterPolar: fwd+bwd of ProxyAnchor and of ProxyAnchor+CenterPolar on a (32, 512) embedding
   batch with --num_classes classes; the added time relative to the base loss and to (1);
3. UEM: one update of UEM with every component on versus the instance-discrimination-only
   variant (P.M., SEL, SPDA and SN2M off), both on a tiny stand-in network, so that the
   difference is UEM's own added cost (prototype losses, discriminator, nearest-neighbour
   search in a --queue sized memory, memory update); relative to (1) and to UEM's own backbone
   cost (2 domains x 2 views = 4 ResNet-50 passes of 32 images per step);
4. the k-means of one domain's memory (--cluster_images x embed dim) per epoch, torch and
   scikit-learn backends, relative to a ResNet-50 epoch over the same number of images.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tabulate import tabulate

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule, create_loss
from sdgdml.algorithms.uem import UEM
from sdgdml.clustering import spherical_kmeans
from sdgdml.networks import EmbeddingNet


def _once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def timed(fn, repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Fastest of ``repeats`` timed calls of ``fn()`` (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    return min(_once(fn, device) for _ in range(repeats))


def timed_pair(fn_a, fn_b, repeats: int, device: torch.device) -> tuple[float, float]:
    """Fastest times of two steps measured in alternation, so that both see the same load."""
    fn_a(), fn_b()
    times = [(_once(fn_a, device), _once(fn_b, device)) for _ in range(repeats)]
    return min(t[0] for t in times), min(t[1] for t in times)


def resnet50_step(device, repeats: int) -> float:
    import timm

    model = timm.create_model("resnet50", pretrained=False, num_classes=0).to(device).train()
    x = torch.randn(32, 3, 224, 224, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return timed(step, repeats, device)


def loss_step(name: str, hparams: dict, num_classes: int, device):
    """A function doing one fwd+bwd of the loss ``name`` on a (32, d) embedding batch."""
    torch.manual_seed(0)
    loss = create_loss(name, num_classes, hparams["embed_dim"], hparams).to(device)
    loss.set_progress(0.5, 1.0)                           # expansion at half strength
    z = F.normalize(torch.randn(32, hparams["embed_dim"], device=device), dim=1)
    z.requires_grad_(True)
    y = torch.randint(0, num_classes, (32,), device=device)

    def step():
        loss.zero_grad(set_to_none=True)
        z.grad = None
        loss(z, y).backward()

    return step


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
    p.add_argument("--num_classes", type=int, default=100, help="CenterPolar: training classes")
    p.add_argument("--embed_dim", type=int, default=512)
    p.add_argument("--prototypes", type=int, default=345, help="UEM: k (DomainNet: 345)")
    p.add_argument("--queue", type=int, default=50000, help="UEM: memory per domain")
    p.add_argument("--cluster_images", type=int, default=50000)
    p.add_argument("--kmeans_iters", type=int, default=20)
    p.add_argument("--skip_sklearn", action="store_true", help="skip the scikit-learn k-means")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}")

    ref = resnet50_step(device, args.resnet_repeats)
    print(f"ResNet-50, batch 32 x 224^2, forward+backward: {ref * 1e3:.1f} ms")

    hp = hparams_registry.get_hparams("ProxyAnchor+CenterPolar", "CUB200",
                                      overrides={"embed_dim": args.embed_dim})
    pa, cp = timed_pair(loss_step("ProxyAnchor", hp, args.num_classes, device),
                        loss_step("ProxyAnchor+CenterPolar", hp, args.num_classes, device),
                        args.repeats, device)
    off = {"uem_proto_mix": False, "uem_sel": False, "uem_spda": False, "uem_sn2m": False}
    ince, full = timed_pair(uem_step(off, args.prototypes, args.queue, args.embed_dim, device),
                            uem_step({}, args.prototypes, args.queue, args.embed_dim, device),
                            args.repeats, device)
    rows = [
        ["CenterPolar (ProxyAnchor+CenterPolar vs ProxyAnchor)", pa * 1e3, cp * 1e3,
         (cp - pa) * 1e3, 100 * (cp - pa) / pa, 100 * (cp - pa) / ref, None],
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
            t = timed(lambda: spherical_kmeans(x, k, args.kmeans_iters, seed=0, backend=backend),
                      1, device, warmup=0)
            rows.append([backend, k, t, 100 * t / epoch])
    print(f"k-means of {args.cluster_images} x {args.embed_dim} embeddings, "
          f"{args.kmeans_iters} iterations, once per epoch and domain "
          f"(ResNet-50 epoch over the same images: {epoch:.0f} s)")
    print(tabulate(rows, headers=["backend", "k", "seconds", "% of R50 epoch"],
                   floatfmt=".2f"))


if __name__ == "__main__":
    main()
