"""Datasets and dataset locations from a small YAML file, without touching the package.

The file is ``--dataset_config FILE`` or, when that is not given, ``<data_dir>/sdgdml_datasets.yaml``
if it exists. Both sections are optional::

    datasets:                      # new image-folder datasets: <root>/<domain>/<class>/<image>
      Sketchy5:
        root: sketchy5             # folder under --data_dir, or an absolute path
        domains: [photo, sketch]   # or {photo: photo_dir, sketch: "Sketch dir"} (name: folder)
        classes: [airplane, bat, cat, dog, eagle, fish]   # class folders, in label order
        seen_classes: [airplane, bat, cat]   # default: the first half of classes
        images_subdir: ""          # <domain>/<images_subdir>/<class>/<image>
        default_source: photo      # default: the first domain
        protocol: within           # within | cross | both
        val_protocol: images       # images | classes
        val_fraction: 0.2
        epochs: 40
        expected_images: {photo: 600, sketch: 600}
    paths:                         # where registered datasets live, if not in the default place
      CUB200Ext: {root: /data/CUB_200_2011, oil_painting: /data/cub/oil, watercolor: wc}
      OfficeHome: {root: office_home}
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from .base import PROTOCOLS, VAL_CLASSES, VAL_IMAGES
from .samples import DatasetError
from .folders import ConfigFolderDataset

CONFIG_NAME = "sdgdml_datasets.yaml"
DATASET_KEYS = {"root", "domains", "classes", "seen_classes", "images_subdir", "default_source",
                "protocol", "val_protocol", "val_fraction", "epochs", "expected_images",
                "description"}
_NAME = re.compile(r"[A-Za-z0-9_.\- ]+")     # no ':', ',', '>' (split strings) or '/'


def find_config(data_dir: str | Path | None, config_file: str | Path | None) -> Path | None:
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise DatasetError(f"dataset config file not found: {path}")
        return path
    if data_dir is not None and (Path(data_dir) / CONFIG_NAME).is_file():
        return Path(data_dir) / CONFIG_NAME
    return None


def read_config(path: Path) -> tuple[list[type[ConfigFolderDataset]], dict[str, dict]]:
    """(dataset classes to register, {dataset name: paths}) from a config file."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"cannot read the dataset config {path}: {e}") from e
    if not isinstance(data, dict) or set(data) - {"datasets", "paths"}:
        raise DatasetError(f"{path}: the top level must be a mapping with 'datasets' and/or "
                           f"'paths'")
    datasets = [make_dataset_class(name, spec or {}, path)
                for name, spec in (data.get("datasets") or {}).items()]
    paths = data.get("paths") or {}
    if not isinstance(paths, dict) or not all(isinstance(v, dict) for v in paths.values()):
        raise DatasetError(f"{path}: 'paths' must map dataset names to {{root: ..., "
                           f"<domain>: ...}} mappings")
    return datasets, {str(k): {str(a): str(b) for a, b in v.items()} for k, v in paths.items()}


def _names(value, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (str, int)) for v in value):
        raise DatasetError(f"{where}: '{what}' must be a non-empty list of names")
    names = [str(v) for v in value]
    if len(set(names)) != len(names):
        raise DatasetError(f"{where}: '{what}' lists a name twice")
    return names


def _number(spec: dict, key: str, default: float, where: str, low: float, high: float) -> float:
    """A number strictly between ``low`` and ``high``."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        bounds = f"between {low} and {high}" if high != float("inf") else f"> {low}"
        raise DatasetError(f"{where}: '{key}' must be a number {bounds}, got {value!r}")
    return float(value)


def _expected_images(value, domains: dict, where: str) -> dict[str, int]:
    """{domain: image count}: counts are integers >= 0, domains are the dataset's."""
    value = value or {}
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: 'expected_images' must map domains to image counts")
    out = {}
    for domain, count in value.items():
        if str(domain) not in domains:
            raise DatasetError(f"{where}: 'expected_images' names {domain!r}, not a domain "
                               f"({', '.join(domains)})")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise DatasetError(f"{where}: 'expected_images' of {domain!r} must be an image "
                               f"count (an integer >= 0), got {count!r}")
        out[str(domain)] = count
    return out


def make_dataset_class(name: str, spec: dict, path: Path) -> type[ConfigFolderDataset]:
    """An :class:`ImageFolderDataset` subclass from one ``datasets:`` entry (validated)."""
    where = f"{path}: dataset {name!r}"
    if not isinstance(spec, dict):
        raise DatasetError(f"{where} must be a mapping")
    if not _NAME.fullmatch(str(name)):
        raise DatasetError(f"{where}: a dataset name may use letters, digits, '_', '-', '.'")
    unknown = set(spec) - DATASET_KEYS
    if unknown:
        raise DatasetError(f"{where}: unknown keys {sorted(unknown)}; known: "
                           f"{', '.join(sorted(DATASET_KEYS))}")
    for key in ("domains", "classes"):
        if key not in spec:
            raise DatasetError(f"{where} needs '{key}'")
    domains = spec["domains"]
    domain_dirs = ({str(k): str(v) for k, v in domains.items()} if isinstance(domains, dict)
                   else {d: d for d in _names(domains, "domains", where)})
    bad = [d for d in domain_dirs if not _NAME.fullmatch(d)]
    if bad or not domain_dirs:
        raise DatasetError(f"{where}: domain names may use letters, digits, '_', '-', '.', "
                           f"space: {bad}")
    classes = _names(spec["classes"], "classes", where)
    seen = _names(spec["seen_classes"], "seen_classes", where) if "seen_classes" in spec else []
    if set(seen) - set(classes) or len(seen) >= len(classes):
        raise DatasetError(f"{where}: seen_classes must be a proper subset of classes")
    source = str(spec.get("default_source", next(iter(domain_dirs))))
    protocol = spec.get("protocol", "within")
    val_protocol = spec.get("val_protocol", VAL_IMAGES)
    if source not in domain_dirs or protocol not in PROTOCOLS or val_protocol not in (
            VAL_IMAGES, VAL_CLASSES):
        raise DatasetError(f"{where}: default_source must be a domain, protocol one of "
                           f"{PROTOCOLS}, val_protocol 'images' or 'classes'")
    attrs = dict(
        NAME=str(name), DOMAINS=tuple(domain_dirs), CLASSES=tuple(classes),
        SEEN_CLASS_IDS=tuple(classes.index(c) for c in seen), DEFAULT_SOURCE=source,
        DEFAULT_PROTOCOL=protocol, VAL_PROTOCOL=val_protocol,
        VAL_FRACTION=_number(spec, "val_fraction", 0.2, where, 0, 1),
        DEFAULT_EPOCHS=_number(spec, "epochs", 40, where, 0, float("inf")),
        DOMAIN_DIRS={d: (f,) for d, f in domain_dirs.items()},
        IMAGES_SUBDIR=str(spec.get("images_subdir", "") or ""),
        ROOTS=(str(spec.get("root", name)),),
        EXPECTED_IMAGES=_expected_images(spec.get("expected_images"), domain_dirs, where),
        __doc__=str(spec.get("description", f"User dataset {name} registered in {path}.")),
    )
    # what defines the experiment (not where the files are): part of a run's identity
    defining = ("DOMAINS", "CLASSES", "SEEN_CLASS_IDS", "DEFAULT_SOURCE", "DEFAULT_PROTOCOL",
                "VAL_PROTOCOL", "VAL_FRACTION", "DEFAULT_EPOCHS", "DOMAIN_DIRS", "IMAGES_SUBDIR")
    attrs["DEFINITION"] = hashlib.md5(json.dumps({k: attrs[k] for k in defining},
                                                 sort_keys=True).encode()).hexdigest()[:12]
    attrs["LAYOUT"] = ("{root}/<domain>/" + (attrs["IMAGES_SUBDIR"] + "/" if
                                             attrs["IMAGES_SUBDIR"] else "")
                       + "<class>/<image> (registered in " + str(path) + ")")
    return type(str(name), (ConfigFolderDataset,), attrs)


def scaffold(root: Path, name: str) -> str:
    """A ``datasets:`` entry for an existing ``<root>/<domain>/<class>/<image>`` tree (domains
    and classes as found; review the class order and the seen classes before use)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    domains = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = sorted({c.name for d in domains for c in (root / d).iterdir()
                      if c.is_dir() and not c.name.startswith(".")})
    if not domains or not classes:
        raise DatasetError(f"{root} does not look like <domain>/<class>/<image>")
    return yaml.safe_dump({"datasets": {name: {"root": str(root.resolve()), "domains": domains,
                                               "classes": classes}}},
                          sort_keys=False, width=96)
