"""End-to-end training throughput (decode + augment + forward/backward + step) on JPEG files in
PACS's on-disk layout, through the real ``python -m sdgdml.train`` code path.

    python benchmarks/bench_train_throughput.py --device cuda --num_workers 8
    python benchmarks/bench_train_throughput.py --backbone resnet18 --image_size 64   # CPU

Writes a synthetic PACS tree (random-noise JPEGs of --file_size px; 7 classes, --per_class images
per class and domain) to a temporary folder, trains --algorithm for --steps steps on photo with
the standard 224-crop pipeline, and prints the mean step time and images/s of the timed steps
(the first checkpoint interval is a warm-up and is left out).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from sdgdml.records import read_records
from sdgdml.train import main as train_main

PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


def write_pacs_tree(root: Path, per_class: int, size: int) -> int:
    rng = np.random.default_rng(0)
    n = 0
    for d in PACS_DOMAINS:
        for c in PACS_CLASSES:
            folder = root / "PACS" / d / c
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k:04d}.jpg", quality=90)
                n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--algorithm", default="ProxyAnchor", help="algorithm name")
    p.add_argument("--backbone", default="resnet50.tv_in1k", help="timm name (random init)")
    p.add_argument("--image_size", type=int, default=224, help="training crop size")
    p.add_argument("--batch_size", type=int, default=64, help="batch size")
    p.add_argument("--steps", type=int, default=60, help="training steps (half are warm-up)")
    p.add_argument("--num_workers", type=int, default=8, help="data-loading workers")
    p.add_argument("--per_class", type=int, default=60, help="images per class and domain")
    p.add_argument("--file_size", type=int, default=256, help="side of the JPEG files, px")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        n = write_pacs_tree(Path(tmp), args.per_class, args.file_size)
        out = Path(tmp) / "run"
        hparams = {"pretrained": False, "backbone": args.backbone,
                   "image_size": args.image_size, "batch_size": args.batch_size}
        train_main(["--split", "PACS:photo->sketch", "--data_dir", tmp, "--output_dir", str(out),
                    "--algorithm", args.algorithm, "--hparams", json.dumps(hparams),
                    "--steps", str(args.steps), "--checkpoint_freq", str(args.steps // 2),
                    "--no_eval_at_start", "--device", args.device, "--quiet",
                    "--num_workers", str(args.num_workers)])
        timed = read_records(out / "results.jsonl")[-1]
    ips = args.batch_size / timed["step_time"]
    print(f"{n} JPEG files; {args.algorithm} on {args.backbone} at {args.image_size} px, batch "
          f"{args.batch_size}, {args.num_workers} workers, device {args.device}")
    print(f"mean step time {timed['step_time'] * 1e3:.1f} ms -> {ips:.0f} training images/s; "
          f"peak memory {timed['mem_gb']:.2f} GB")


if __name__ == "__main__":
    main()
