"""UEM's cost (``sdgdml/algorithms/uem.py``) against a ResNet-50 step; nothing is asserted.

    python benchmarks/bench_uem.py --device cpu      # or cuda

Prints, measured in one run (medians of --repeats after a warm-up; steps timed in alternation so
that a shared machine's load hits them alike):
1. cost per step of each stage: a UEM update in stage 1 (IDSE: L_INCE over a --images memory
   bank per domain, L_PNCE and L_SEL over the merged prototypes) and in stage 2 (CDSM: domain
   classifier, L_SPR with the frozen copy, SN2M's search of B's bank) on a tiny stand-in
   network, minus the same network's plain forward+backward on the 2B images: UEM's own added
   cost; relative to a timm ResNet-50 forward+backward on the 2B images of a UEM step (batch
   --batch per domain; stage 2 also runs the frozen ResNet-50 forward, about a third of a step,
   which the stand-in's copy stands for);
2. memory of the per-sample state (banks, seen flags, assignments: exact buffer sizes, not a
   measurement) at DomainNet's domain sizes (full 345-class domains, an upper bound: UEM's
   protocol uses the 7-class subset) and embed dim --embed_dim;
3. Elbow + K-Means per epoch (one ``recluster`` of two --images banks: the Elbow estimate over
   k <= --elbow_max_k on a --elbow_sample subsample, then K-Means of every entry) relative to a
   ResNet-50 epoch over the same images (images / batch ResNet-50 steps).
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
from sdgdml.algorithms.uem import CDSM, IDSE, UEM
from sdgdml.networks import EmbeddingNet

# images per DomainNet domain (Peng et al. 2019, all 345 classes)
DOMAINNET = {"clipart": 48837, "infograph": 53201, "painting": 75759, "quickdraw": 172500,
             "real": 175327, "sketch": 70386}


class TinyBackbone(nn.Module):
    num_features = 64

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 64)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _uem(images: int, dim: int, batch: int, hp_over: dict, device) -> UEM:
    hp = hparams_registry.get_hparams("UEM", "DomainNet", overrides={
        "embed_dim": dim, "batch_size": batch, "uem_init": "scratch", **hp_over})
    return UEM(EmbeddingNet(TinyBackbone(), dim), None, hp,
               Schedule(total_steps=10 ** 6, steps_per_epoch=max(1, images // batch)),
               {"a": images, "b": images}).to(device)


def _filled(alg: UEM, device) -> UEM:
    """Every bank entry seen (random unit features); no clustering yet."""
    for role in ("a", "b"):
        getattr(alg, f"bank_{role}").copy_(F.normalize(
            torch.randn_like(getattr(alg, f"bank_{role}")), dim=1))
        getattr(alg, f"seen_{role}").fill_(True)
    return alg


def stage_steps(args, device) -> dict:
    """Functions doing one UEM update per stage, and the stand-in network's plain step."""
    algs = {}
    for stage in (IDSE, CDSM):
        alg = _filled(_uem(args.images, args.embed_dim, args.batch, {
            "uem_elbow_max_k": args.elbow_max_k, "uem_elbow_sample": args.elbow_sample}, device),
            device)
        alg.k_a.fill_(args.prototypes)          # skip the Elbow here: K-Means at k prototypes
        alg.k_b.fill_(args.prototypes)
        alg.recluster(elbow=False)
        alg.stage = stage
        alg.enter_stage(stage)
        alg.cluster_steps = alg.elbow_steps = 10 ** 9      # no re-clustering inside the timing
        alg.step = 1
        algs[stage] = alg
    x = torch.randn(args.batch, 3, 8, 8, device=device)

    def batch():
        idx = torch.randint(args.images, (args.batch,), device=device)
        return {"x": x, "index": idx, "unlabeled": {"b": x.flip(0)}, "unlabeled_index": {"b": idx}}

    plain = EmbeddingNet(TinyBackbone(), args.embed_dim).to(device)
    opt = torch.optim.SGD(plain.parameters(), lr=1e-4, momentum=0.9)

    def plain_step():
        opt.zero_grad(set_to_none=True)
        plain(torch.cat([x, x])).sum().backward()
        opt.step()

    return {"plain": plain_step, IDSE: lambda: algs[IDSE].update(batch()),
            CDSM: lambda: algs[CDSM].update(batch())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64, help="images per domain per step (paper: 64)")
    p.add_argument("--images", type=int, default=50000, help="training images per domain")
    p.add_argument("--embed_dim", type=int, default=128)
    p.add_argument("--prototypes", type=int, default=65, help="K-Means k of the step timing")
    p.add_argument("--elbow_max_k", type=int, default=80)
    p.add_argument("--elbow_sample", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    r50 = resnet50_step_seconds(device, batch=2 * args.batch, repeats=args.repeats)
    t = round_robin(stage_steps(args, device), device, args.repeats)
    rows = [[f"UEM stage {i + 1} ({s.upper()}) added cost", (t[s] - t["plain"]) * 1e3,
             (t[s] - t["plain"]) / r50] for i, s in enumerate((IDSE, CDSM))]
    print(f"device {device}; ResNet-50 fwd+bwd on 2x{args.batch} 224px images: {r50 * 1e3:.0f} ms"
          f" (the reference step); banks of {args.images} entries x {args.embed_dim}, "
          f"{args.prototypes} prototypes per domain")
    print(tabulate(rows, headers=["per step", "ms", "x ResNet-50 step"], floatfmt=".4f"))

    mem = []
    for a, b in (("quickdraw", "clipart"), ("sketch", "real"), ("real", "quickdraw")):
        alg = _uem(8, args.embed_dim, 8, {}, "cpu")
        per = sum(getattr(alg, f"{n}_a").element_size() * getattr(alg, f"{n}_a")[0].numel()
                  for n in ("bank", "seen", "assign"))       # bytes per training image
        n = DOMAINNET[a] + DOMAINNET[b]
        mem.append([f"{a} -> {b}", n, per, n * per / 2 ** 20])
    print(tabulate(mem, headers=["DomainNet pair (345 classes)", "images", "bytes / image",
                                 "per-sample state MiB"], floatfmt=".1f"))

    alg = _filled(_uem(args.images, args.embed_dim, args.batch, {
        "uem_elbow_max_k": args.elbow_max_k, "uem_elbow_sample": args.elbow_sample}, device),
        device)
    cluster = seconds(lambda: alg.recluster(elbow=True), device)
    kmeans_only = seconds(lambda: alg.recluster(elbow=False), device)
    epoch = r50 * args.images / args.batch
    print(tabulate([["Elbow + K-Means (2 domains)", cluster, cluster / epoch],
                    ["K-Means only, k fixed", kmeans_only, kmeans_only / epoch]],
                   headers=[f"per epoch, {args.images} images per domain", "s",
                            "x ResNet-50 epoch"], floatfmt=".4f"))
    print(f"Elbow estimates: k_a={int(alg.k_a)}, k_b={int(alg.k_b)} (random features: no "
          f"structure, a cost figure only)")


if __name__ == "__main__":
    main()
