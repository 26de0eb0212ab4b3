"""The dataset registry: every dataset registers itself in its own file with
``@register_dataset`` (under its ``NAME``), and importing ``sdgdml.datasets`` imports every
module of the package, so adding a dataset is one new file (a test module may register one
too). Datasets of a user config file are registered by ``load_dataset_config``."""
from __future__ import annotations

from .base import SDGDataset
from .samples import DatasetError

DATASETS: dict[str, type[SDGDataset]] = {}


def register_dataset(cls: type[SDGDataset]) -> type[SDGDataset]:
    """Class decorator (or call) adding a dataset to the registry under ``cls.NAME``."""
    DATASETS[cls.NAME] = cls
    return cls


def unregister_dataset(name: str) -> None:
    """Remove a dataset (for tests that register toy datasets)."""
    DATASETS.pop(name, None)


def get_dataset_class(name: str) -> type[SDGDataset]:
    try:
        return DATASETS[name]
    except KeyError:
        from ..suggest import did_you_mean

        raise DatasetError(
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: "
            f"{', '.join(sorted(DATASETS))} (more can be registered in a dataset config file, "
            f"see README)") from None
