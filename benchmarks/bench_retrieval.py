"""Time sdgdml's exact chunked k-NN retrieval against faiss's exact IndexFlatIP on the same data.

    python benchmarks/bench_retrieval.py                    # N = 100,000, d = 512, k = 8, CPU
    python benchmarks/bench_retrieval.py --n 20000 --device cuda

Within-domain protocol (every item is a query, self excluded): faiss searches k+1 neighbours
and drops self, sdgdml masks self. Prints both times, their ratio, and the peak memory each adds
(CPU: growth of the process's peak RSS; GPU: peak allocated), next to the N x N matrix size
that a non-chunked implementation would need.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _vm_hwm_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, device: torch.device):
    """(seconds, peak memory added in GB) of fn()."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak()
        base = _vm_hwm_gb()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
    else:
        peak = _vm_hwm_gb() - base
    return time.perf_counter() - t0, peak, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="number of items (queries = gallery)")
    p.add_argument("--d", type=int, default=512, help="embedding dimension")
    p.add_argument("--k", type=int, default=8, help="neighbours per query (R@1..R@k)")
    p.add_argument("--classes", type=int, default=1000, help="classes in the synthetic data")
    p.add_argument("--chunk", type=int, default=1024, help="sdgdml query chunk size")
    p.add_argument("--device", default="cpu", help="cpu or cuda (sdgdml side)")
    p.add_argument("--repeats", type=int, default=1, help="timed repetitions (best is kept)")
    args = p.parse_args()

    import faiss

    from sdgdml.evaluation import knn

    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes, args.d), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.n)
    x = centres[labels] + 2.0 * rng.standard_normal((args.n, args.d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xt = torch.from_numpy(x)
    print(f"N={args.n} d={args.d} k={args.k} chunk={args.chunk} device={device} "
          f"torch threads={torch.get_num_threads()} faiss threads={faiss.omp_get_max_threads()}")

    def ours():
        return knn(xt, xt, args.k, exclude_self=True, chunk_size=args.chunk, device=device)

    def theirs():
        index = faiss.IndexFlatIP(args.d)
        index.add(x)
        return index.search(x, args.k + 1)

    t_ours = t_faiss = float("inf")
    for _ in range(args.repeats):
        t, m_ours, (_, idx) = measure(ours, device)
        t_ours = min(t_ours, t)
        t, m_faiss, (_, fidx) = measure(theirs, torch.device("cpu"))
        t_faiss = min(t_faiss, t)

    # same neighbours (up to exact ties): compare the self-excluded faiss lists
    fidx = np.array([[j for j in row if j != i][:args.k] for i, row in enumerate(fidx)])
    agree = (idx.numpy() == fidx).mean()
    print(f"sdgdml knn : {t_ours:8.2f} s   peak memory added {m_ours:6.2f} GB")
    print(f"faiss flat : {t_faiss:8.2f} s   peak memory added {m_faiss:6.2f} GB")
    print(f"ratio sdgdml/faiss time: {t_ours / t_faiss:.2f}x   (goal <= 1.5x)")
    print(f"neighbour lists identical for {agree * 100:.3f}% of entries")
    print(f"an N x N float32 similarity matrix would take {args.n ** 2 * 4 / 2 ** 30:.1f} GB; "
          f"one chunk takes {args.chunk * args.n * 4 / 2 ** 30:.2f} GB")


if __name__ == "__main__":
    main()
