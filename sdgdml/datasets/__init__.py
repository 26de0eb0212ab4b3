"""Datasets: ``DATASETS``, ``get_dataset_class(name)``, ``create_dataset(...)`` and
source->target split strings such as ``PACS:photo->art_painting,cartoon,sketch``.

Each dataset registers itself in its own file (``@register_dataset``, :mod:`.registry`);
importing this package imports every module in it, so adding a dataset is one new file.
Registered: DigitsDG and GlyphsDG (embedded), DomainNet, PACS, OfficeHome, Office31, CUB200Ext,
Cars196Ext, plus the datasets of a user config file (:mod:`sdgdml.datasets.config`). Check what is on disk
with ``python -m sdgdml.datasets check --data_dir D``.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import SDGDataset
from .cars import Cars196Ext
from .config import find_config, read_config
from .cub import CUB200Ext
from . import ucdr
from .digits import DigitsDG
from .domainnet import DomainNet
from .files import FileDataset
from .folders import PACS, Office31, OfficeHome
from .glyphs import GlyphsDG
from .registry import DATASETS, get_dataset_class, register_dataset, unregister_dataset
from .samples import (CorruptImageError, DatasetError, DomainSamples, EvalSplit, ImageDataset,
                      Split, UnlabeledSamples)

_USER: set[str] = set()      # names registered from a config file (may be re-registered)

for _module in pkgutil.iter_modules(__path__):      # each dataset file registers itself
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def load_dataset_config(data_dir=None, config_file=None) -> dict[str, dict]:
    """Register the datasets of the config file (``config_file``, else
    ``<data_dir>/sdgdml_datasets.yaml`` if present); returns its ``paths`` overrides."""
    path = find_config(data_dir, config_file)
    if path is None:
        return {}
    classes, paths = read_config(path)
    for cls in classes:
        if cls.NAME in DATASETS and cls.NAME not in _USER:
            raise DatasetError(f"{path}: {cls.NAME!r} is a built-in dataset; use 'paths' to "
                               f"say where it lives, or pick another name")
        _USER.add(cls.NAME)
        register_dataset(cls)
    unknown = set(paths) - set(DATASETS)
    if unknown:
        raise DatasetError(f"{path}: 'paths' names unknown datasets {sorted(unknown)}; known: "
                           f"{', '.join(sorted(DATASETS))}")
    return paths


def create_dataset(name: str, data_dir=None, source=None, targets=None, *, config_file=None,
                   skip_corrupt: bool = False, workers: int | None = None,
                   **kwargs) -> SDGDataset:
    """The dataset ``name`` (after loading the config file) for a source and targets.
    ``skip_corrupt`` / ``workers`` apply to datasets of image files."""
    paths = load_dataset_config(data_dir, config_file)
    cls = get_dataset_class(name)
    if issubclass(cls, FileDataset):
        kwargs.update(skip_corrupt=skip_corrupt, workers=workers, paths=paths.get(name))
    return cls(data_dir, source, targets, **kwargs)


def parse_split(text: str) -> tuple[str, str | None, list[str] | None]:
    """``"DomainNet:real->sketch,clipart"`` -> ("DomainNet", "real", ["sketch", "clipart"]);
    ``"PACS:photo"`` -> ("PACS", "photo", None) (all other domains); ``"PACS"`` -> defaults.
    Names are validated against the registry."""
    name, _, rest = text.partition(":")
    source, arrow, targets = rest.partition("->")
    cls = get_dataset_class(name.strip())
    source = source.strip() or None
    target_list = [t.strip() for t in targets.split(",") if t.strip()] if arrow else None
    if arrow and not target_list:
        raise DatasetError(f"no target domain after '->' in {text!r}")
    for d in [source] * bool(source) + (target_list or []):
        if d not in cls.DOMAINS:
            raise DatasetError(f"unknown domain {d!r} in {text!r}; {cls.NAME} has: "
                               f"{', '.join(cls.DOMAINS)}")
    return cls.NAME, source, target_list


def format_split(name: str, source: str, targets) -> str:
    return f"{name}:{source}->{','.join(targets)}"


def single_source_splits(name: str) -> list[str]:
    """Every single-source split of a dataset (each domain as source, all others as targets),
    as split strings, for sweeps."""
    cls = get_dataset_class(name)
    return [format_split(cls.NAME, s, t) for s, t in cls.single_source_splits()]


__all__ = ["DATASETS", "Cars196Ext", "CUB200Ext", "CorruptImageError", "DatasetError",
           "DigitsDG", "DomainNet", "DomainSamples", "EvalSplit", "FileDataset", "GlyphsDG",
           "ImageDataset",
           "Office31", "OfficeHome", "PACS", "SDGDataset", "Split", "UnlabeledSamples",
           "create_dataset", "format_split", "get_dataset_class", "load_dataset_config",
           "parse_split", "register_dataset", "single_source_splits", "ucdr", "unregister_dataset"]
