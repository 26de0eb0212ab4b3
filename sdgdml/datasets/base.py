"""The dataset interface: labelled domains, SDG-DML splits and torch datasets.

A registered dataset (a subclass of :class:`SDGDataset`) knows its domains, its class list in a
fixed order and which classes are *seen* (training) or *unseen* (evaluation only). Given a source
domain and target domains it produces:

- ``train_split()``: source-domain images of the seen classes, minus the validation images;
  labels remapped to ``0 .. n_seen-1`` (optionally with seeded label noise);
- ``val_split()``: source-domain images held out for model selection (seen classes);
- ``eval_splits()``: the retrieval evaluations, named ``<domain>_<split>`` (within-domain,
  leave-one-out) or ``<query>-><gallery>_<split>`` (cross-domain);
- ``unlabeled_split(domain)``: a view of a domain's images that carries no labels at all (for
  transductive methods); :class:`ImageDataset` over it yields images only.

Transforms are attached to splits only when a torch dataset is made, after splitting, so the
validation images never see training augmentation.
"""
from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import transforms as T

WITHIN, CROSS, BOTH = "within", "cross", "both"
PROTOCOLS = (WITHIN, CROSS, BOTH)


class DatasetError(ValueError):
    """A dataset cannot be used as asked (unknown domain, missing files, ...)."""


class CorruptImageError(DatasetError):
    """An image file exists but cannot be decoded."""


class DomainSamples(abc.ABC):
    """Every labelled image of one domain, in a fixed order; ``labels`` are global class ids."""

    def __init__(self, domain: str, labels: Sequence[int]):
        self.domain = domain
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @abc.abstractmethod
    def load(self, i: int) -> Image.Image:
        """The i-th image as an RGB PIL image."""

    def describe(self, i: int) -> str:
        return f"{self.domain}[{i}]"


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


class FileSamples(DomainSamples):
    """Images stored as files on disk."""

    def __init__(self, domain: str, paths: Sequence[str | Path], labels: Sequence[int]):
        super().__init__(domain, labels)
        self.paths = [str(p) for p in paths]
        if len(self.paths) != len(self.labels):
            raise ValueError("one label per image is needed")

    def load(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError as e:
            raise DatasetError(f"image file is missing: {path}") from e
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise CorruptImageError(f"cannot decode image file {path}: {e}") from e

    def describe(self, i: int) -> str:
        return self.paths[i]


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
                torch.manual_seed(seed)
                x = self.transform(img)
        if self.split.labels is None:
            return x
        return x, int(self.split.labels[i])


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Corrupt exactly round(fraction * n) labels, each to a uniformly drawn *different* class
    (the symmetric label-noise protocol of PFML Sec. 4.3)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 7919])
    noisy = labels.copy()
    flip = rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False)
    offsets = rng.integers(1, num_classes, size=len(flip))
    noisy[flip] = (labels[flip] + offsets) % num_classes
    return noisy


class SDGDataset(abc.ABC):
    """A single-source domain-generalisation retrieval benchmark (see the module docstring)."""

    NAME: str = ""
    DOMAINS: tuple[str, ...] = ()
    CLASSES: tuple[str, ...] = ()
    DEFAULT_SOURCE: str = ""
    DEFAULT_PROTOCOL: str = WITHIN
    IMAGE_SIZE: int = 224
    VAL_FRACTION: float = 0.2
    DEFAULT_EPOCHS: float = 40
    NEEDS_DATA_DIR: bool = True

    def __init__(
        self,
        data_dir: str | Path | None = None,
        source: str | None = None,
        targets: Sequence[str] | None = None,
        *,
        trial_seed: int = 0,
        protocol: str | None = None,
        label_noise: float = 0.0,
        val_fraction: float | None = None,
    ):
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.NEEDS_DATA_DIR and self.data_dir is None:
            raise DatasetError(f"{self.NAME} needs --data_dir")
        self.source = source or self.DEFAULT_SOURCE
        self._check_domain(self.source)
        self.targets = list(targets) if targets else [d for d in self.DOMAINS if d != self.source]
        for d in self.targets:
            self._check_domain(d)
            if d == self.source:
                raise DatasetError(f"target domain {d!r} is the source domain")
        self.protocol = protocol or self.DEFAULT_PROTOCOL
        if self.protocol not in PROTOCOLS:
            raise DatasetError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        self.trial_seed = trial_seed
        self.label_noise = label_noise
        self.val_fraction = self.VAL_FRACTION if val_fraction is None else val_fraction

    # ------------------------------------------------------------------ class split
    @property
    def seen_classes(self) -> np.ndarray:
        """Global ids of the training classes: the first half (the DML zero-shot convention)."""
        return np.arange(len(self.CLASSES) // 2)

    @property
    def unseen_classes(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.CLASSES)), self.seen_classes)

    @property
    def num_train_classes(self) -> int:
        return len(self.seen_classes)

    # ------------------------------------------------------------------ domains
    def _check_domain(self, domain: str) -> None:
        if domain not in self.DOMAINS:
            raise DatasetError(
                f"unknown domain {domain!r} for {self.NAME}; known: {', '.join(self.DOMAINS)}")

    @abc.abstractmethod
    def load_domain(self, domain: str) -> DomainSamples:
        """All labelled images of a domain (implementations cache the result)."""

    def domain(self, domain: str) -> DomainSamples:
        self._check_domain(domain)
        return self.load_domain(domain)

    # ------------------------------------------------------------------ splits
    @functools.cached_property
    def _source_seen_split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, val indices) of the source's seen-class images: a stratified,
        ``trial_seed``-seeded hold-out of ``val_fraction`` of each class's images."""
        samples = self.domain(self.source)
        rng = np.random.default_rng([self.trial_seed, 1013])
        train, val = [], []
        for c in self.seen_classes:
            idx = np.flatnonzero(samples.labels == c)
            idx = idx[rng.permutation(len(idx))]
            n_val = int(round(self.val_fraction * len(idx)))
            val.append(idx[:n_val])
            train.append(idx[n_val:])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))

    def _class_split(self, domain: str, classes: np.ndarray, name: str) -> Split:
        samples = self.domain(domain)
        idx = np.flatnonzero(np.isin(samples.labels, classes))
        return Split(name, samples, idx, samples.labels[idx])

    def train_split(self) -> Split:
        samples = self.domain(self.source)
        idx = self._source_seen_split[0]
        remap = {int(c): i for i, c in enumerate(self.seen_classes)}
        labels = np.array([remap[int(c)] for c in samples.labels[idx]], dtype=np.int64)
        if self.label_noise > 0:
            labels = noisy_labels(labels, self.label_noise, self.num_train_classes, self.trial_seed)
        return Split(f"{self.source}_train", samples, idx, labels)

    def val_split(self) -> Split:
        samples = self.domain(self.source)
        idx = self._source_seen_split[1]
        return Split(f"{self.source}_val", samples, idx, samples.labels[idx])

    def test_split(self, domain: str) -> Split:
        """A domain's unseen-class images (the retrieval test set)."""
        return self._class_split(domain, self.unseen_classes, f"{domain}_test")

    def unlabeled_split(self, domain: str) -> Split:
        """Every image of a domain, without labels (transductive methods)."""
        samples = self.domain(domain)
        return Split(f"{domain}_unlabeled", samples, np.arange(len(samples)), None)

    def eval_splits(self) -> list[EvalSplit]:
        """Source validation (model selection), source unseen classes, then the targets under
        the chosen protocol. Cross-domain queries come from the target, the gallery from the
        source's unseen-class images."""
        val = self.val_split()
        source_test = self.test_split(self.source)
        splits = [EvalSplit(val.name, val), EvalSplit(source_test.name, source_test)]
        for t in self.targets:
            test = self.test_split(t)
            if self.protocol in (WITHIN, BOTH):
                splits.append(EvalSplit(test.name, test))
            if self.protocol in (CROSS, BOTH):
                splits.append(EvalSplit(f"{t}->{self.source}_test", test, source_test))
        return splits

    # ------------------------------------------------------------------ transforms
    def train_transform(self, image_size: int) -> Callable:
        return T.standard_train(image_size)

    def eval_transform(self, image_size: int) -> Callable:
        return T.standard_eval(image_size)
