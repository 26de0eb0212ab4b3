"""Cars196 Ext.: Stanford Cars (Krause et al., 2013; 196 car models, 16,185 photos) as the
``real`` domain plus the painted domains ``oil_painting`` and ``watercolor`` (layout: see
:mod:`sdgdml.datasets.ext`).

The real domain is read from one of the two official distributions:

- the DML one: ``cars_annos.mat`` (struct array ``annotations`` with ``relative_im_path``,
  ``bbox_*``, ``class`` (1-based) and ``test``; cell array ``class_names``) and ``car_ims/``;
- the classification devkit: ``devkit/cars_meta.mat`` (``class_names``),
  ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (``annotations``
  with ``fname`` and ``class``), images in ``cars_train/`` and ``cars_test/``.

Class order: the official class ids 1-196 (``CLASSES`` are the ids, ``001`` .. ``196``; the
model names are in ``class_names``); seen = 1-98 (8,054 photos), unseen = 99-196 (8,131
photos), the DML convention. The ``test`` flag is read (``val_protocol official``) but, as in
DML, every image of a class is used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .ext import ExtDataset
from .files import DomainIndex, list_images, some
from .registry import register_dataset

ANNOS = "cars_annos.mat"
DEVKIT_META = "devkit/cars_meta.mat"
DEVKIT_TRAIN = "devkit/cars_train_annos.mat"
DEVKIT_TEST = ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")
N_CLASSES = 196


def _load_mat(path: Path, keys: tuple[str, ...], index: DomainIndex) -> dict | None:
    try:
        import scipy.io  # import on use

        mat = scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as e:  # noqa: BLE001 - any parse failure: unusable annotation file
        index.problems.append(f"cannot read {path}: {type(e).__name__}: {e}")
        return None
    missing = [k for k in keys if k not in mat]
    if missing:
        index.problems.append(f"{path} has no {', '.join(missing)}")
        return None
    return mat


def _field(annotations, name: str, path: Path, index: DomainIndex) -> np.ndarray | None:
    if annotations.dtype.names is None or name not in annotations.dtype.names:
        index.problems.append(f"the annotations in {path} have no field {name!r}")
        return None
    return np.atleast_1d(annotations[name])


@register_dataset
class Cars196Ext(ExtDataset):
    NAME = "Cars196Ext"
    CLASSES = tuple(f"{i:03d}" for i in range(1, N_CLASSES + 1))
    ROOTS = ("cars196", "Cars196", "CARS196", "stanford_cars", "cars")
    EXT_ROOT = "Cars196Ext"
    LAYOUT = ("real: {root}/cars_annos.mat + {root}/car_ims/<file>.jpg, or the devkit "
              "({root}/devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
              "cars_test_annos_withlabels.mat, cars_train/, cars_test/)\n"
              "painted domains (our default, see README): "
              "<data_dir>/Cars196Ext/<oil_painting|watercolor>/<NNN[.name]>/<image>, NNN = "
              "1-based class id")
    EXPECTED_IMAGES = {"real": 16185}
    DOWNLOAD = ("https://ai.stanford.edu/~jkrause/cars/car_dataset.html (car_ims.tgz + "
                "cars_annos.mat, or the devkit); painted domains: not public as far as we know "
                "(see README)")

    def real_fingerprint_paths(self) -> list[Path]:
        return [self.root / p for p in (ANNOS, "car_ims", DEVKIT_META, DEVKIT_TRAIN,
                                        *DEVKIT_TEST, "cars_train", "cars_test")]

    def _entries(self, index: DomainIndex) -> list[tuple[str, int, bool]] | None:
        """(path relative to the root, class id (1-based), is_test) from either distribution."""
        if (self.root / ANNOS).is_file():
            path = self.root / ANNOS
            mat = _load_mat(path, ("annotations", "class_names"), index)
            if mat is None:
                return None
            fields = [_field(mat["annotations"], f, path, index)
                      for f in ("relative_im_path", "class", "test")]
            if any(f is None for f in fields):
                return None
            names = np.atleast_1d(mat["class_names"])
            if len(names) != N_CLASSES:
                index.problems.append(f"{path} names {len(names)} classes, not {N_CLASSES}")
            return [(str(p), int(c), bool(t)) for p, c, t in zip(*fields)]
        test_file = next((self.root / f for f in DEVKIT_TEST if (self.root / f).is_file()), None)
        if not (self.root / DEVKIT_TRAIN).is_file() or test_file is None:
            index.problems.append(f"no annotations in {self.root}: neither {ANNOS} nor the "
                                  f"devkit ({DEVKIT_TRAIN} and {DEVKIT_TEST[0]})")
            return None
        entries = []
        for path, folder, is_test in ((self.root / DEVKIT_TRAIN, "cars_train", False),
                                      (test_file, "cars_test", True)):
            mat = _load_mat(path, ("annotations",), index)
            fields = None if mat is None else [_field(mat["annotations"], f, path, index)
                                               for f in ("fname", "class")]
            if fields is None or any(f is None for f in fields):
                return None
            entries += [(f"{folder}/{f}", int(c), is_test) for f, c in zip(*fields)]
        return entries

    def build_real_index(self) -> DomainIndex:
        index = DomainIndex("real", str(self.root))
        entries = self._entries(index)
        if entries is None:
            return index
        on_disk: dict[str, set[str]] = {}
        missing, bad, flags = [], [], []
        for rel, class_id, is_test in entries:
            folder, _, name = rel.rpartition("/")
            if folder not in on_disk:
                on_disk[folder] = (set(list_images(self.root / folder))
                                   if (self.root / folder).is_dir() else set())
            if not 1 <= class_id <= N_CLASSES:
                bad.append(f"{rel}: class {class_id}")
            elif name not in on_disk[folder]:
                missing.append(rel)
            else:
                index.paths.append(str(self.root / rel))
                index.labels.append(class_id - 1)
                flags.append(is_test)
        index.official_test = flags
        if bad:
            index.problems.append(f"{len(bad)} annotations with a class outside 1-{N_CLASSES}: "
                                  f"{some(bad, 5)}")
        if missing:
            index.problems.append(f"{len(missing)} of the {len(entries)} annotated images are "
                                  f"missing under {self.root}: {some(missing)}")
        return index
