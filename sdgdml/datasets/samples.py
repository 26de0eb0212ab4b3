"""The data containers under every dataset: a domain's labelled images (in memory or as files),
a label-free view of them, splits of a domain, retrieval evaluations, the torch dataset over a
split, and the dataset errors."""
from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image


class DatasetError(ValueError):
    """A dataset cannot be used as asked (unknown domain, missing files, ...)."""


class CorruptImageError(DatasetError):
    """An image file exists but cannot be decoded."""


class DomainSamples(abc.ABC):
    """Every labelled image of one domain, in a fixed order; ``labels`` are global class ids.
    ``official_test`` marks the images of the dataset's official test list (None: no list)."""

    def __init__(self, domain: str, labels: Sequence[int],
                 official_test: Sequence[bool] | None = None):
        self.domain = domain
        self.labels = np.asarray(labels, dtype=np.int64)
        self.official_test = (None if official_test is None
                              else np.asarray(official_test, dtype=bool))
        if self.official_test is not None and len(self.official_test) != len(self.labels):
            raise ValueError("one official_test flag per image is needed")

    def __len__(self) -> int:
        return len(self.labels)

    @abc.abstractmethod
    def load(self, i: int) -> Image.Image:
        """The i-th image as an RGB PIL image."""

    def describe(self, i: int) -> str:
        return f"{self.domain}[{i}]"

    def arrays(self, indices: np.ndarray) -> np.ndarray | None:
        """The images at ``indices`` as one uint8 array (N, H, W, 3) when they are held in
        memory (batched evaluation), else None."""
        return None


class ArraySamples(DomainSamples):
    """Images held in memory as a uint8 array (N, H, W, 3)."""

    def __init__(self, domain: str, images: np.ndarray, labels: Sequence[int]):
        super().__init__(domain, labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError("images must be a uint8 array of shape (N, H, W, 3)")
        if len(images) != len(self.labels):
            raise ValueError("one label per image is needed")
        self.images = images

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])

    def arrays(self, indices: np.ndarray) -> np.ndarray:
        return self.images[indices]


class FileSamples(DomainSamples):
    """Images stored as files on disk. ``blank_corrupt`` (``--skip_corrupt``): a file that
    no longer decodes (damaged after the dataset check) loads as a grey image, with a
    warning naming it, instead of stopping the run; the check leaves it out next time."""

    def __init__(self, domain: str, paths: Sequence[str | Path], labels: Sequence[int],
                 official_test: Sequence[bool] | None = None, blank_corrupt: bool = False):
        super().__init__(domain, labels, official_test)
        self.paths = [str(p) for p in paths]
        self.blank_corrupt = blank_corrupt
        self.draft_size: int | None = None     # --jpeg_draft: see load
        if len(self.paths) != len(self.labels):
            raise ValueError("one label per image is needed")

    def load(self, i: int) -> Image.Image:
        """The i-th image; with ``draft_size`` a JPEG is decoded at the smallest DCT scale
        (1/2, 1/4, 1/8) whose short side stays >= ``draft_size`` (Pillow's draft mode)."""
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                if self.draft_size and im.format == "JPEG":
                    im.draft("RGB", (self.draft_size, self.draft_size))
                return im.convert("RGB")
        except FileNotFoundError as e:
            raise DatasetError(f"image file is missing: {path}") from e
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            if self.blank_corrupt:
                warnings.warn(f"cannot decode image file {path} ({e}): a grey image stands "
                              f"in for it (--skip_corrupt)", stacklevel=2)
                return Image.new("RGB", (32, 32), (128, 128, 128))
            raise CorruptImageError(f"cannot decode image file {path}: {e}") from e

    def describe(self, i: int) -> str:
        return self.paths[i]


class UnlabeledSamples(DomainSamples):
    """A label-free view of a domain (transductive / unsupervised training): it loads images
    but has no ``labels`` to give, so no label can reach training through it."""

    def __init__(self, samples: DomainSamples):  # noqa: super().__init__ would store labels
        self._samples = samples
        self.domain = samples.domain

    @property
    def labels(self):
        raise AttributeError(f"{self.domain}: an unlabeled view has no labels")

    @property
    def official_test(self):
        raise AttributeError(f"{self.domain}: an unlabeled view has no split flags")

    def __len__(self) -> int:
        return len(self._samples)

    def load(self, i: int) -> Image.Image:
        return self._samples.load(i)

    def arrays(self, indices: np.ndarray) -> np.ndarray | None:
        return self._samples.arrays(indices)

    def describe(self, i: int) -> str:
        return self._samples.describe(i)


@dataclass(frozen=True)
class Split:
    """A subset of one domain's images. ``labels`` is None for an unlabeled view."""

    name: str
    samples: DomainSamples
    indices: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class EvalSplit:
    """One retrieval evaluation: queries against a gallery (None: leave-one-out on queries)."""

    name: str
    query: Split
    gallery: Split | None = None


class ImageDataset(torch.utils.data.Dataset):
    """Torch view of a split. Keys are indices, or (index, seed) pairs that seed the transform's
    randomness per sample (deterministic augmentation, identical after a resume and whatever
    the number of workers). Labelled splits yield (image, label); unlabeled ones yield images."""

    def __init__(self, split: Split, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        img = self.split.samples.load(int(self.split.indices[i]))
        if seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only: torch.manual_seed would also queue a seed for every
                # accelerator, formatting a stack trace per image (~1.7 ms) where none is in use
                torch.default_generator.manual_seed(seed)
                x = self.transform(img)
        if self.split.labels is None:
            return x
        return x, int(self.split.labels[i])
