"""The training data streams a method declares (``Algorithm.NEEDS``), and the batch dicts
assembled from them (``Algorithm`` module doc): the source view (images, labels, indices) and,
for transductive methods, one unlabeled stream per target. Every stream's batch of step t is a
pure function of (seed, t) (``StepBatchSampler``), so a resumed run sees the same batches."""
from __future__ import annotations

import torch

from .algorithms import DataNeeds, Schedule
from .datasets import ImageDataset, Split
from .datasets.samplers import StepBatchSampler

TARGET_SEED_STRIDE = 7919       # target stream i draws with seed + stride * i
PREFETCH_BATCHES = 4            # batches each worker prepares ahead (torch's default: 2)


def batch_sampler(n: int, hparams: dict, seed: int, total_steps: int, start: int,
                  labels=None) -> StepBatchSampler:
    """The training batches (class-balanced ones need labels: label-free streams get random)."""
    return StepBatchSampler(n, hparams["batch_size"], seed, total_steps, start,
                            mode=hparams["sampler"] if labels is not None else "random",
                            labels=labels, m=hparams["samples_per_class"])


def steps_per_epoch(source: Split, hparams: dict, seed: int) -> int:
    return batch_sampler(len(source), hparams, seed, 1, 0, source.labels).steps_per_epoch


class IndexedImages(ImageDataset):
    """An :class:`ImageDataset` whose items also carry the image's index in the split."""

    def __getitem__(self, key):
        item = super().__getitem__(key)
        i = key[0] if isinstance(key, tuple) else key
        return (*item, i) if isinstance(item, tuple) else (item, i)


class RankSlice(torch.utils.data.Sampler):
    """This process's share of every global batch (several processes: ``distributed``):
    positions ``rank * B .. (rank + 1) * B - 1`` of a batch of ``B * world`` (the global batch,
    its order and augmentation seeds are a one-process run's)."""

    def __init__(self, batches: StepBatchSampler, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self):
        for batch in self.batches:
            b = len(batch) // self.world
            yield batch[self.rank * b:(self.rank + 1) * b]

    def __len__(self) -> int:
        return len(self.batches)


class TrainStreams:
    """Iterates the batch dicts of steps ``start .. schedule.total_steps - 1``. ``hparams``'
    ``batch_size`` is the global batch; with ``world`` > 1 this process gets its slice
    (:class:`RankSlice`)."""

    def __init__(self, needs: DataNeeds, source: Split, targets: dict[str, Split], transform,
                 hparams: dict, seed: int, schedule: Schedule, start: int, num_workers: int,
                 device: torch.device, rank: int = 0, world: int = 1):
        self.needs, self.device = needs, device
        views = {"x": source}
        if needs.unlabeled_targets:
            views.update(targets)
        self.iterators = {}
        for i, (key, view) in enumerate(views.items()):
            labels = view.labels if key == "x" and needs.labels else None
            sampler = batch_sampler(len(view), hparams, seed + TARGET_SEED_STRIDE * i,
                                    schedule.total_steps, start, labels)
            if world > 1:
                sampler = RankSlice(sampler, rank, world)
            dataset = (IndexedImages if needs.indices else ImageDataset)(view, transform)
            self.iterators[key] = iter(torch.utils.data.DataLoader(
                dataset, batch_sampler=sampler, num_workers=num_workers,
                pin_memory=device.type == "cuda", generator=torch.Generator(),
                persistent_workers=num_workers > 0,
                prefetch_factor=PREFETCH_BATCHES if num_workers > 0 else None))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True)

    def next_batch(self) -> dict:
        batch: dict = {}
        for key, it in self.iterators.items():
            item = next(it)
            item = list(item) if isinstance(item, (list, tuple)) else [item]
            index = self._to_device(item.pop()) if self.needs.indices else None
            if key == "x":
                batch["x"] = self._to_device(item[0])
                if self.needs.labels:
                    batch["y"] = self._to_device(item[1])
                if index is not None:
                    batch["index"] = index
            else:
                batch.setdefault("unlabeled", {})[key] = self._to_device(item[0])
                if index is not None:
                    batch.setdefault("unlabeled_index", {})[key] = index
        return batch
