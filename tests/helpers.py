"""Shared helpers for the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdgdml.datasets import DigitsDG
from sdgdml.datasets.samples import ArraySamples
from sdgdml.records import read_records
from sdgdml.flags import MACHINE_ARGS

REPO = Path(__file__).resolve().parents[1]
# keys that measure the machine, not the experiment
VOLATILE_KEYS = ("step_time", "eval_time", "mem_gb")

# a tiny DigitsDG run: a few steps, one target, cheap metrics
TINY_TRAIN = ["--dataset", "DigitsDG", "--source", "mnist", "--targets", "sketch",
              "--metrics", "recall@1", "recall@2", "map@r", "--quiet"]
# a style domain as the source, another as the target: 825 evaluation images (val 75, test 375,
# target 375) instead of mnist's 1,575, for the tests whose property does not depend on the data
# (resume, faults, processes): evaluation is most of a tiny run's time
STYLE_SPLIT = ["--source", "sketch", "--targets", "negative"]
# a tiny run with a checkpoint in the middle (resume and fault tests; conftest.tiny_reference)
TINY_RESUME = TINY_TRAIN + STYLE_SPLIT + ["--steps", "4", "--checkpoint_freq", "2"]
# bf16 runs on 16-pixel images: a CPU without AVX-512 has no fast bf16 convolution (torch takes
# slow_conv2d, ~14x fp32's time at 32 pixels on an AMD EPYC); what they test is the autocast
SMALL_IMAGES = ["--hparams", '{"image_size": 16}']


def comparable(records: list[dict]) -> list[dict]:
    """Records without timing/memory keys and without machine args (every metric, loss,
    step, hparam and experiment arg kept)."""
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in VOLATILE_KEYS}
        r["args"] = {k: v for k, v in r["args"].items() if k not in MACHINE_ARGS}
        out.append(r)
    return out


def run_records(run_dir) -> list[dict]:
    return comparable(read_records(Path(run_dir) / "results.jsonl"))


def subprocess_env() -> dict:
    """The environment for child processes: this checkout first on the path, offline hub."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "")
                                                        .split(os.pathsep) if p])
    env["HF_HUB_OFFLINE"] = "1"
    return env


PYTHON = sys.executable


# ----------------------------------------------------------------------------- test data
def random_unit(*shape, seed=0):
    """Seeded random unit vectors (normalised along the last dimension)."""
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def clustered(n_per_class=8, num_classes=3, dim=16, spread=0.3, seed=0):
    """Samples around distinct class directions, labels 0..C-1."""
    centres = random_unit(num_classes, dim, seed=seed)
    noise = torch.randn(num_classes, n_per_class, dim,
                        generator=torch.Generator().manual_seed(seed + 1)) * spread
    z = F.normalize((centres.unsqueeze(1) + noise).reshape(-1, dim), dim=1)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return z, y


class PoisonedDigits(DigitsDG):
    """DigitsDG with every label replaced by a random one (same images, same order): a
    method that reads a label in training learns noise."""

    NAME = "PoisonedDigits"

    def load_domain(self, domain):
        clean = super().load_domain(domain)
        rng = np.random.default_rng(sum(map(ord, domain)))
        return ArraySamples(domain, clean.images, rng.permutation(clean.labels[::-1]))


def train_main_message(argv: list[str]) -> str | None:
    """``python -m sdgdml.train`` in this process; the SystemExit's message, or None."""
    from sdgdml import train

    try:
        train.main(argv)
    except SystemExit as e:
        return str(e.code)
    return None
