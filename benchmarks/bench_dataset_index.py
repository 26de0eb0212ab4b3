"""How long indexing a DomainNet-sized domain takes: first build (read the official lists, list
345 class folders) versus a cached load (stat the fingerprint, read the JSON index).

    python benchmarks/bench_dataset_index.py [--images 172947] [--keep DIR]

Writes a synthetic ``domain_net/real`` tree of empty ``.jpg`` files (the index never decodes
images) with ``real_train.txt`` / ``real_test.txt``, then prints the timings and their ratio.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sdgdml.datasets import DomainNet, create_dataset


def write_tree(root: Path, n_images: int) -> None:
    classes = DomainNet.CLASSES
    lines = {"train": [], "test": []}
    for k in range(n_images):
        label = k % len(classes)
        rel = f"real/{classes[label]}/real_{label:03d}_{k:06d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
        lines["test" if k % 10 < 3 else "train"].append(f"{rel} {label}")
    for part, ls in lines.items():
        (root / f"real_{part}.txt").write_text("\n".join(ls) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=172947, help="images in the domain (real)")
    p.add_argument("--keep", default=None, help="write the tree here and keep it")
    args = p.parse_args()
    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_index_"))
    os.environ["SDGDML_CACHE_DIR"] = str(data / "cache")
    if not (data / "domain_net" / "real_train.txt").exists():
        t = time.perf_counter()
        write_tree(data / "domain_net", args.images)
        print(f"wrote {args.images} empty image files in {time.perf_counter() - t:.1f} s")

    def load(refresh: bool) -> float:
        ds = create_dataset("DomainNet", data, "real", ["sketch"])
        t = time.perf_counter()
        index = ds.index("real", refresh=refresh)
        elapsed = time.perf_counter() - t
        assert not index.problems and len(index.paths) == args.images, index.problems
        return elapsed

    build = load(refresh=True)
    cached = min(load(refresh=False) for _ in range(3))
    print(f"index of {args.images} images: build {build:.2f} s, cached load {cached:.2f} s, "
          f"ratio {build / cached:.1f}x")


if __name__ == "__main__":
    main()
