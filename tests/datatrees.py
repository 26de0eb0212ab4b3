"""Write small but real image trees (JPEG/PNG files written with PIL) in each dataset's exact
on-disk layout, including the official list/annotation files. Every image is a uniform
colour that encodes a unique id (:func:`colour_of` / :func:`id_of`), so a test can tell from
a transformed tensor which file it came from."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

LEVELS = 16            # 16 levels per channel, 17 apart: survives JPEG and resampling
STEP = 17


@dataclass(frozen=True)
class Img:
    path: str
    domain: str
    label: int           # global class id
    test: bool = False   # in the official test list
    id: int = 0          # the colour id written into the image


def colour_of(i: int) -> tuple[int, int, int]:
    return (STEP * (i % LEVELS), STEP * (i // LEVELS % LEVELS), STEP * (i // LEVELS ** 2))


def id_of(rgb) -> int:
    r, g, b = (int(round(float(c) / STEP)) for c in rgb)
    return r + LEVELS * g + LEVELS ** 2 * b


_counter = itertools.count(1)


def write_image(path: Path, size=(12, 10)) -> int:
    """A uniform image with a fresh id (< 4096); returns the id."""
    i = next(_counter) % LEVELS ** 3
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour_of(i)).save(path, quality=95)
    return i


def folder_tree(root: Path, domains: dict[str, str], classes, per_class: int,
                images_subdir: str = "", ext: str = ".jpg") -> list[Img]:
    """``root/<domain folder>/[images_subdir/]<class>/<k><ext>``; domains: name -> folder."""
    out = []
    for domain, folder in domains.items():
        for label, c in enumerate(classes):
            for k in range(per_class):
                path = root / folder / images_subdir / c / f"{c}_{k:03d}{ext}"
                out.append(Img(str(path), domain, label, id=write_image(path)))
    return out


def domainnet(root: Path, domains, classes, n_train: int = 2, n_test: int = 1) -> list[Img]:
    """``root/<domain>/<class>/<domain>_<cls>_<k>.jpg`` + ``<domain>_train.txt``/``_test.txt``."""
    out = []
    for d in domains:
        lines = {"train": [], "test": []}
        for label, c in enumerate(classes):
            for k in range(n_train + n_test):
                part = "train" if k < n_train else "test"
                rel = f"{d}/{c}/{d}_{label:03d}_{k:06d}.jpg"
                i = write_image(root / rel)
                lines[part].append(f"{rel} {label}")
                out.append(Img(str(root / rel), d, label, part == "test", i))
        for part, ls in lines.items():
            (root / f"{d}_{part}.txt").write_text("\n".join(ls) + "\n")
    return out


def cub(root: Path, classes, per_class: int = 2) -> list[Img]:
    """CUB_200_2011: ``images/<NNN.Name>/<Name>_<k>.jpg``, images.txt, image_class_labels.txt,
    train_test_split.txt (every second image is a test image), classes.txt."""
    out, images, labels, split = [], [], [], []
    image_id = 0
    for label, c in enumerate(classes):
        for k in range(per_class):
            image_id += 1
            rel = f"{c}/{c.split('.', 1)[1]}_{k:04d}_{image_id}.jpg"
            i = write_image(root / "images" / rel)
            is_test = k % 2 == 1
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {label + 1}")
            split.append(f"{image_id} {0 if is_test else 1}")
            out.append(Img(str(root / "images" / rel), "real", label, is_test, i))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{i + 1} {c}" for i, c in enumerate(classes))
                                      + "\n")
    return out


def cars_annos(root: Path, n_classes: int = 196, per_class: int = 2) -> list[Img]:
    """``car_ims/NNNNNN.jpg`` + ``cars_annos.mat`` in the official structure: a 1xN struct
    array ``annotations`` (relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test)
    and a 1x196 cell array ``class_names``. Images are numbered in class order; odd ones are
    test images."""
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows, out = [], []
    for label in range(n_classes):
        for k in range(per_class):
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            i = write_image(root / rel)
            is_test = k % 2 == 1
            rows.append((rel, 1, 2, 11, 9, label + 1, int(is_test)))
            out.append(Img(str(root / rel), "real", label, is_test, i))
    annotations = np.empty((1, len(rows)), dtype=[(f, "O") for f in fields])
    for j, row in enumerate(rows):
        annotations[0, j] = tuple(np.array([[v]], dtype=np.uint8 if f == "test" else np.uint16)
                                  if not isinstance(v, str) else np.array([v])
                                  for f, v in zip(fields, row))
    names = np.empty((1, n_classes), dtype=object)
    for i in range(n_classes):
        names[0, i] = f"Make{i} Model {2000 + i % 13}"
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations,
                                               "class_names": names})
    return out


def cars_devkit(root: Path, n_classes: int = 196, per_class: int = 2) -> list[Img]:
    """The classification devkit: devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat (fields bbox_*, class, fname), cars_train/, cars_test/."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    parts = {"cars_train": [], "cars_test": []}
    out = []
    for label in range(n_classes):
        for k in range(per_class):
            folder = "cars_test" if k % 2 else "cars_train"
            fname = f"{len(parts[folder]) + 1:05d}.jpg"
            i = write_image(root / folder / fname)
            parts[folder].append((1, 2, 11, 9, label + 1, fname))
            out.append(Img(str(root / folder / fname), "real", label, folder == "cars_test", i))
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    for folder, file in (("cars_train", "devkit/cars_train_annos.mat"),
                         ("cars_test", "cars_test_annos_withlabels.mat")):
        ann = np.empty((1, len(parts[folder])), dtype=[(f, "O") for f in fields])
        for j, row in enumerate(parts[folder]):
            ann[0, j] = tuple(np.array([v]) if isinstance(v, str) else np.array([[v]])
                              for v in row)
        scipy.io.savemat(root / file, {"annotations": ann})
    names = np.empty((1, n_classes), dtype=object)
    names[0, :] = [f"Make{i}" for i in range(n_classes)]
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    return out


def ext_domains(root: Path, domains, folder_names, per_class: int = 1) -> list[Img]:
    """Painted domains in our default layout: ``root/<domain>/<class folder>/<k>.jpg``;
    ``folder_names[label]`` is the folder of that class (None: class absent)."""
    out = []
    for d in domains:
        for label, name in enumerate(folder_names):
            if name is None:
                continue
            for k in range(per_class):
                path = root / d / name / f"{d}_{k}.jpg"
                out.append(Img(str(path), d, label, id=write_image(path)))
    return out
