"""Deterministic batch samplers addressed by training step.

The batch of step ``t`` is a pure function of (seed, t): each epoch's order comes from an RNG
seeded by (seed, epoch), and every sample carries its own augmentation seed. A run resumed at
step t therefore sees exactly the batches and augmentations of an uninterrupted run, whatever
the number of data-loading workers.
"""
from __future__ import annotations

import numpy as np
import torch


MODES = ("random", "m_per_class")      # the hparam ``sampler``


def _aug_seed(seed: int, step: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1)[0])


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the batches of steps ``start_step .. total_steps-1`` as lists of
    (index, augmentation seed) pairs.

    ``mode="random"``: each epoch is a random permutation cut into full batches.
    ``mode="m_per_class"``: batches are made of ``batch_size // m`` chunks of ``m`` same-class
    images (the class-balanced sampling that pair-based losses such as MultiSimilarity need);
    ``m`` is raised when there are too few classes to fill a batch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, total_steps: int,
                 start_step: int = 0, mode: str = "random", labels=None, m: int = 4):
        if mode not in MODES:
            raise ValueError(f"unknown sampler {mode!r}; known: {', '.join(MODES)}")
        self.labels = None if labels is None else np.asarray(labels)
        self.n = num_samples
        self.batch_size, self.seed, self.mode = batch_size, seed, mode
        self.total_steps, self.start_step = total_steps, start_step
        if mode == "m_per_class":
            if self.labels is None:
                raise ValueError("m_per_class sampling needs labels")
            n_classes = len(np.unique(self.labels))
            self.m = max(m, -(-batch_size // n_classes))
        if self.steps_per_epoch < 1:
            raise ValueError(f"{self.n} training images cannot fill one batch of {batch_size}")
        self._epoch, self._order = None, None

    @property
    def steps_per_epoch(self) -> int:
        if self.mode == "random":
            return self.n // self.batch_size
        counts = np.bincount(np.unique(self.labels, return_inverse=True)[1])
        return int((counts // self.m).sum()) * self.m // self.batch_size

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.mode == "random":
            return rng.permutation(self.n)
        chunks = []
        for c in np.unique(self.labels):
            idx = rng.permutation(np.flatnonzero(self.labels == c))
            chunks += [idx[i:i + self.m] for i in range(0, len(idx) - self.m + 1, self.m)]
        # shuffled chunks of m same-class images: each class in a batch has >= m images
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return np.concatenate(chunks)

    def batch_indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self._epoch_order(epoch)
        return self._order[pos * self.batch_size:(pos + 1) * self.batch_size]

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield [(int(i), _aug_seed(self.seed, step, p))
                   for p, i in enumerate(self.batch_indices(step))]

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)
