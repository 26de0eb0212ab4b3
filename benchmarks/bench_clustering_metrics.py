"""Time the metrics added to the evaluation: NMI/AMI (scikit-learn k-means, n_init=10) and
class_recall@1 (from the same neighbour list), next to recall@1 + MAP@R on the same
embeddings, for test sets of growing size.

    python benchmarks/bench_clustering_metrics.py                       # N = 2,000 .. 20,000
    python benchmarks/bench_clustering_metrics.py --n 69128 --classes 173   # DomainNet sketch

Embeddings: d-dim L2-normalised class centres plus noise (the metrics' cost depends on N, d and
k, not on the values). Prints seconds per metric group and the ratio clustering / retrieval.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sdgdml.evaluation import retrieval_metrics


def _embeddings(n: int, d: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(classes, d, generator=g)[y] + torch.randn(n, d, generator=g)
    return F.normalize(x, dim=1), y


def _seconds(x, y, metrics) -> float:
    t0 = time.perf_counter()
    retrieval_metrics(x, y, metrics=metrics, device="cpu")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[2000, 5000, 20000], help="test set sizes")
    p.add_argument("--d", type=int, default=512, help="embedding dimension")
    p.add_argument("--classes", type=int, default=100, help="classes (= k of k-means)")
    args = p.parse_args()
    print(f"{'N':>7} {'recall@1+map@r':>15} {'+class_recall@1':>16} {'nmi+ami':>9} "
          f"{'nmi+ami / recall@1+map@r':>25}")
    for n in args.n:
        x, y = _embeddings(n, args.d, args.classes)
        base = _seconds(x, y, ["recall@1", "map@r"])
        per_class = _seconds(x, y, ["recall@1", "map@r", "class_recall@1"])
        clustering = _seconds(x, y, ["nmi", "ami"])
        print(f"{n:>7} {base:>14.2f}s {per_class:>15.2f}s {clustering:>8.2f}s "
              f"{clustering / base:>24.1f}x")


if __name__ == "__main__":
    main()
