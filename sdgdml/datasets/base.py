"""The dataset interface: labelled domains, SDG-DML splits and torch datasets.

A registered dataset (a subclass of :class:`SDGDataset`) knows its domains, its class list in a
fixed order and which classes are *seen* (training) or *unseen* (evaluation only). Given a source
domain and target domains it produces:

- ``train_split()``: source-domain images of the seen classes, minus the validation images;
  labels remapped to ``0 .. n_seen-1`` (optionally with seeded label noise);
- ``val_split()``: source-domain images held out for model selection, by ``val_protocol``:
  ``images`` (a stratified, ``trial_seed``-seeded fraction of each seen class's images),
  ``classes`` (the last seen classes held out whole: class-disjoint, like the test) or
  ``official`` (the seen-class images of the dataset's official test list);
- ``eval_splits()``: the retrieval evaluations, named ``<domain>_<split>`` (within-domain,
  leave-one-out) or ``<query>-><gallery>_<split>`` (cross-domain);
- ``unlabeled_split(domain)``: a view of a domain's images that carries no labels at all (for
  transductive methods); :class:`ImageDataset` over it yields images only and its samples
  refuse to give labels (:class:`UnlabeledSamples`).

Datasets with official train/test lists (``OFFICIAL_LISTS = True``, e.g. DomainNet) train and
validate only on images of the official train list and evaluate only on the test list.

Transforms are attached to splits only when a torch dataset is made, after splitting, so the
validation images never see training augmentation. The containers (samples, splits, the torch
dataset) and the dataset errors are in :mod:`sdgdml.datasets.samples`.
"""
from __future__ import annotations

import abc
import functools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import transforms as T
from .samples import DatasetError, DomainSamples, EvalSplit, Split, UnlabeledSamples

WITHIN, CROSS, BOTH = "within", "cross", "both"
PROTOCOLS = (WITHIN, CROSS, BOTH)
VAL_IMAGES, VAL_CLASSES, VAL_OFFICIAL = "images", "classes", "official"
VAL_PROTOCOLS = (VAL_IMAGES, VAL_CLASSES, VAL_OFFICIAL)


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
    """A single-source domain-generalisation retrieval benchmark (see the module docstring).

    Class attributes document the registry entry: ``DOMAINS``, ``CLASSES`` (fixed order: the
    official class ids), ``DEFAULT_SOURCE``, ``DEFAULT_PROTOCOL`` (``within``/``cross``/``both``),
    ``VAL_PROTOCOL`` and ``OFFICIAL_LISTS``. The seen classes are the first half of ``CLASSES``
    unless ``SEEN_CLASS_IDS`` names them (datasets registered from a config file).
    """

    NAME: str = ""
    DOMAINS: tuple[str, ...] = ()
    CLASSES: tuple[str, ...] = ()
    DEFAULT_SOURCE: str = ""
    DEFAULT_PROTOCOL: str = WITHIN
    VAL_PROTOCOL: str = VAL_IMAGES
    OFFICIAL_LISTS: bool = False     # official train list -> train pool, test list -> test sets
    SEEN_CLASS_IDS: tuple[int, ...] = ()     # empty: the first half of CLASSES
    DEFINITION: str = ""     # user datasets: a hash of their config (part of a run's identity)
    VAL_FRACTION: float = 0.2
    DEFAULT_EPOCHS: float = 40
    NEEDS_DATA_DIR: bool = True

    @classmethod
    def default_split(cls, source=None, targets=None) -> tuple[str, list[str]]:
        """(source, targets) with the defaults made explicit: the dataset's default source,
        every other domain a target (one spelling per split, so one run identity)."""
        source = source or cls.DEFAULT_SOURCE
        return source, list(targets) if targets else [d for d in cls.DOMAINS if d != source]

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
        val_protocol: str | None = None,
    ):
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.NEEDS_DATA_DIR and self.data_dir is None:
            raise DatasetError(f"{self.NAME} needs --data_dir")
        self.source, self.targets = self.default_split(source, targets)
        self._check_domain(self.source)
        for d in self.targets:
            self._check_domain(d)
            if d == self.source:
                raise DatasetError(f"target domain {d!r} is the source domain")
        self.protocol = protocol or self.DEFAULT_PROTOCOL
        if self.protocol not in PROTOCOLS:
            raise DatasetError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        self.val_protocol = val_protocol or self.VAL_PROTOCOL
        if self.val_protocol not in VAL_PROTOCOLS:
            raise DatasetError(f"unknown validation protocol {self.val_protocol!r}; "
                               f"known: {', '.join(VAL_PROTOCOLS)}")
        self.trial_seed = trial_seed
        self.label_noise = label_noise
        self.val_fraction = self.VAL_FRACTION if val_fraction is None else val_fraction

    @classmethod
    def single_source_splits(cls) -> list[tuple[str, list[str]]]:
        """Every (source, all other domains) split of this dataset, for sweeps."""
        return [(s, [d for d in cls.DOMAINS if d != s]) for s in cls.DOMAINS]

    # ------------------------------------------------------------------ class split
    @classmethod
    def seen_class_ids(cls) -> np.ndarray:
        """Global ids of the training classes: ``SEEN_CLASS_IDS``, else the first half (the DML
        zero-shot convention)."""
        if cls.SEEN_CLASS_IDS:
            return np.array(sorted(cls.SEEN_CLASS_IDS), dtype=np.int64)
        return np.arange(len(cls.CLASSES) // 2)

    @property
    def seen_classes(self) -> np.ndarray:
        return self.seen_class_ids()

    @property
    def unseen_classes(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.CLASSES)), self.seen_classes)

    @property
    def val_classes(self) -> np.ndarray:
        """Seen classes held out whole for validation (``val_protocol == "classes"``): the last
        ``round(val_fraction * n_seen)`` (at least one) of them; empty for other protocols."""
        if self.val_protocol != VAL_CLASSES:
            return np.array([], dtype=np.int64)
        seen = self.seen_classes
        n_val = max(1, int(round(self.val_fraction * len(seen))))
        if len(seen) - n_val < 2:
            raise DatasetError(f"{self.NAME} has {len(seen)} seen classes: too few to hold "
                               f"{n_val} out for validation (use --val_protocol images)")
        return seen[-n_val:]

    @property
    def train_classes(self) -> np.ndarray:
        """The classes the model trains on (seen classes minus ``val_classes``)."""
        return np.setdiff1d(self.seen_classes, self.val_classes)

    @property
    def num_train_classes(self) -> int:
        return len(self.train_classes)

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

    def validate(self) -> None:
        """Raise :class:`DatasetError` (saying what is missing) unless every domain this
        experiment uses can be loaded. Cheap; call it before building a model."""
        for d in [self.source, *self.targets]:
            self.domain(d)

    # ------------------------------------------------------------------ splits
    def _pools(self, samples: DomainSamples) -> tuple[np.ndarray, np.ndarray]:
        """(train pool, test pool) masks: everything, or with ``OFFICIAL_LISTS`` the official
        train and test lists."""
        everything = np.ones(len(samples), dtype=bool)
        if self.OFFICIAL_LISTS and samples.official_test is not None:
            return ~samples.official_test, samples.official_test.copy()
        return everything, everything

    def training_pool(self, domain: str) -> np.ndarray:
        """Indices of ``domain``'s training images: its official train list with
        ``OFFICIAL_LISTS``, else every image."""
        return np.flatnonzero(self._pools(self.domain(domain))[0])

    def training_class_counts(self, domain: str) -> np.ndarray:
        """Training images per class id in ``domain`` (``training_pool``)."""
        labels = self.domain(domain).labels[self.training_pool(domain)]
        return np.bincount(labels, minlength=len(self.CLASSES))

    @functools.cached_property
    def _source_seen_split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, val indices) of the source's seen-class images (see ``val_protocol``
        in the module docstring)."""
        samples = self.domain(self.source)
        pool = self._pools(samples)[0]
        if self.val_protocol == VAL_OFFICIAL:
            if samples.official_test is None:
                raise DatasetError(f"{self.NAME} has no official train/test lists: use "
                                   f"--val_protocol images or classes")
            seen = np.isin(samples.labels, self.seen_classes)
            return (np.flatnonzero(seen & ~samples.official_test),
                    np.flatnonzero(seen & samples.official_test))
        if self.val_protocol == VAL_CLASSES:
            return (np.flatnonzero(pool & np.isin(samples.labels, self.train_classes)),
                    np.flatnonzero(pool & np.isin(samples.labels, self.val_classes)))
        rng = np.random.default_rng([self.trial_seed, 1013])
        train, val = [], []
        for c in self.seen_classes:
            idx = np.flatnonzero(pool & (samples.labels == c))
            idx = idx[rng.permutation(len(idx))]
            n_val = int(round(self.val_fraction * len(idx)))
            val.append(idx[:n_val])
            train.append(idx[n_val:])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))

    def _class_split(self, domain: str, classes: np.ndarray, name: str) -> Split:
        samples = self.domain(domain)
        idx = np.flatnonzero(self._pools(samples)[1] & np.isin(samples.labels, classes))
        return Split(name, samples, idx, samples.labels[idx])

    def train_split(self) -> Split:
        """Source images of the training classes, labels remapped to 0 .. n_train-1."""
        samples = self.domain(self.source)
        idx = self._source_seen_split[0]
        remap = {int(c): i for i, c in enumerate(self.train_classes)}
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

    @staticmethod
    def unlabeled(split: Split) -> Split:
        """The same images as ``split`` without any label (see :class:`UnlabeledSamples`)."""
        return Split(f"{split.name}_unlabeled", UnlabeledSamples(split.samples), split.indices,
                     None)

    def unlabeled_split(self, domain: str) -> Split:
        """Every image of a domain, without labels (the transductive view of a target domain:
        UEM-style methods train on it; the labels stay behind)."""
        samples = self.domain(domain)
        return Split(f"{domain}_unlabeled", UnlabeledSamples(samples), np.arange(len(samples)),
                     None)

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
    def train_transform(self, image_size: int, data_config: dict | None = None) -> Callable:
        """``data_config``: normalisation / crop settings of the backbone (see
        :func:`transforms.backbone_data_config`); None: ImageNet statistics."""
        return T.standard_train(image_size, **(data_config or {}))

    def eval_transform(self, image_size: int, data_config: dict | None = None) -> Callable:
        return T.standard_eval(image_size, **(data_config or {}))
