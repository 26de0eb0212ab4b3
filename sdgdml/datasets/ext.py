"""The "Ext." fine-grained benchmarks of CenterPolar: a real-photo dataset (CUB-200-2011,
Cars196) extended with painted domains (``oil_painting``, ``watercolor``) of the same classes.

How the painted domains were produced and distributed is not known (see README). Our
documented default layout, configurable per domain (``paths`` in the dataset config):

    <data_dir>/<EXT_ROOT>/<domain>/<class folder>/<image>

where a class folder is the 1-based official class id, zero-padded to three digits and
optionally followed by ``.<anything>`` (``001``, ``001.Black_footed_Albatross``,
``001.AM General Hummer SUV 2000``); CUB's own class folder names work as they are. A folder
that names no class is an error (never a guessed label). Painted domains may lack some
classes (a note, not an error), but must hold unseen-class images to be evaluated.
"""
from __future__ import annotations

import abc
import re
from pathlib import Path

from .files import DomainIndex, FileDataset, list_folders, scan_class_folders, some

REAL = "real"
EXT_DOMAINS = ("oil_painting", "watercolor")
_CLASS_FOLDER = re.compile(r"(\d{1,3})(?:\.(.*))?")


class ExtDataset(FileDataset):
    DOMAINS = (REAL, *EXT_DOMAINS)
    DEFAULT_SOURCE = REAL
    EXT_ROOT: str = ""
    CLASS_FOLDERS: tuple[str, ...] = ()    # official class folder names, where they exist

    # ------------------------------------------------------------------ the real domain
    @abc.abstractmethod
    def build_real_index(self) -> DomainIndex:
        """Read the official annotation files of the real-photo dataset."""

    @abc.abstractmethod
    def real_fingerprint_paths(self) -> list[Path]:
        """Annotation files and image folders of the real-photo dataset."""

    # ------------------------------------------------------------------ painted domains
    def ext_dir(self, domain: str) -> Path:
        if domain in self.paths:
            return self.resolve(self.paths[domain])
        return self.data_dir / self.EXT_ROOT / domain

    def label_of_folder(self, name: str) -> int | None:
        """Class id (0-based) of an Ext class folder name, None if it names no class."""
        m = _CLASS_FOLDER.fullmatch(name)
        if m and 1 <= int(m.group(1)) <= len(self.CLASSES):
            return int(m.group(1)) - 1
        return None

    def fingerprint_paths(self, domain: str) -> list[Path]:
        if domain == REAL:
            return self.real_fingerprint_paths()
        folder = self.ext_dir(domain)
        subfolders = list_folders(folder) if folder.is_dir() else []
        return [folder, *(folder / s for s in subfolders)]

    def build_index(self, domain: str) -> DomainIndex:
        if domain == REAL:
            index = DomainIndex(domain, str(self.root))
            problem = self.root_problem()
            if problem:
                index.problems.append(problem)
                return index
            return self.build_real_index()
        folder = self.ext_dir(domain)
        index = DomainIndex(domain, str(folder))
        scan_class_folders(index, folder, self.label_of_folder, self.CLASSES, strict=False)
        if not folder.is_dir():
            index.problems[-1] += (f" (the painted domains are not distributed with "
                                   f"{self.NAME.replace('Ext', '')}: see the README; other "
                                   f"locations: 'paths' in the dataset config)")
            return index
        if self.CLASS_FOLDERS:
            renamed = [n for n in list_folders(folder) if self.label_of_folder(n) is not None
                       and "." in n and n != self.CLASS_FOLDERS[self.label_of_folder(n)]]
            if renamed:
                index.warnings.append(f"{len(renamed)} class folders are labelled by their "
                                      f"number, their names differ from the official ones: "
                                      f"{some(renamed, 5)}")
        unseen = set(self.unseen_classes.tolist())
        if index.paths and not unseen & set(index.labels):
            index.problems.append(f"no image of an unseen class in {folder}: nothing to "
                                  f"evaluate")
        elif not index.paths and not index.problems:
            index.problems.append(f"no images in {folder}")
        return index
