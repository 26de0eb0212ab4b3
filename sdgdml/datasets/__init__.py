"""Dataset registry: ``get_dataset_class(name)`` and ``DATASETS``."""
from __future__ import annotations

from .base import (CorruptImageError, DatasetError, DomainSamples, EvalSplit, ImageDataset,
                   SDGDataset, Split)
from . import ucdr
from .digits import DigitsDG

DATASETS: dict[str, type[SDGDataset]] = {}


def register_dataset(cls: type[SDGDataset]) -> type[SDGDataset]:
    """Class decorator (or call) adding a dataset to the registry under ``cls.NAME``."""
    DATASETS[cls.NAME] = cls
    return cls


def get_dataset_class(name: str) -> type[SDGDataset]:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


register_dataset(DigitsDG)

__all__ = ["DATASETS", "CorruptImageError", "DatasetError", "DigitsDG", "DomainSamples",
           "EvalSplit", "ImageDataset", "SDGDataset", "Split", "get_dataset_class",
           "register_dataset", "ucdr"]
