"""Datasets stored as image files: the index of each domain, its cache, checks and reports.

A :class:`FileDataset` family implements ``build_index(domain)`` (walk the dataset's real
on-disk layout and official list files once, returning a :class:`DomainIndex` with every
image path, label and official-split flag, plus the *problems* that make the domain unusable)
and ``fingerprint_paths(domain)`` (the list files and folders whose modification times change
when images are added, removed or relabelled).

Indexes are cached as JSON under ``$SDGDML_CACHE_DIR`` (default ``~/.cache/sdgdml``), keyed by
dataset, domain and location, and rebuilt only when the fingerprint changes: no directory walk
per run, let alone per epoch. Image *contents* are decoded only by ``check`` (and by training
with ``skip_corrupt``); the corrupt files found are remembered in the cache with their mtimes.
"""
from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tabulate import tabulate

from ..progress import Progress
from .base import SDGDataset
from .samples import DatasetError, FileSamples

log = logging.getLogger("sdgdml")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INDEX_VERSION = 1
SHOW = 10          # problem lines list at most this many file names (the count is exact)


def cache_dir() -> Path:
    """Where indexes are cached: ``$SDGDML_CACHE_DIR``, else ``$XDG_CACHE_HOME/sdgdml``, else
    ``~/.cache/sdgdml``."""
    if os.environ.get("SDGDML_CACHE_DIR"):
        return Path(os.environ["SDGDML_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sdgdml"


def list_images(folder: Path) -> list[str]:
    """Sorted names of the image files directly inside ``folder`` (hidden files skipped)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and not e.name.startswith(".")
                      and e.name.lower().endswith(IMAGE_EXTENSIONS))


def list_folders(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def some(items, n: int = SHOW) -> str:
    """'a, b, c' or 'a, b, ... (+N more)'."""
    items = [str(i) for i in items]
    more = f", ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def verify_image(path: str) -> str | None:
    """None if the file decodes as an image, else the error. JPEGs decode at reduced scale
    (every byte is still read, so truncation is caught)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))
            im.load()
        return None
    except Exception as e:  # noqa: BLE001 - any decoder failure means unusable
        return f"{type(e).__name__}: {e}"


def verify_images(paths: list[str], workers: int, desc: str) -> dict[str, list]:
    """{path: [mtime_ns, error]} for every file that does not decode (threads: PIL's decoders
    release the GIL)."""
    errors = []
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            Progress(len(paths), desc=desc, unit="image", disable=len(paths) < 2000) as bar:
        for error in pool.map(verify_image, paths):
            errors.append(error)
            bar.update()
    return {p: [_mtime(p), e] for p, e in zip(paths, errors) if e is not None}


def _mtime(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


@dataclass
class DomainIndex:
    """Every image of one domain as the official layout defines it, and what is wrong."""

    domain: str
    location: str                      # the folder (or list files) the domain was read from
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    official_test: list[bool] | None = None
    problems: list[str] = field(default_factory=list)    # the domain cannot be used
    warnings: list[str] = field(default_factory=list)    # worth knowing, not fatal
    corrupt: dict[str, list] | None = None               # None: contents never verified
    fingerprint: list = field(default_factory=list)

    def corrupt_problems(self) -> list[str]:
        return [f"corrupt image file {p} ({err})" for p, (_, err) in (self.corrupt or {}).items()]


class FileDataset(SDGDataset):
    """A dataset of image files (see the module docstring). Families set ``ROOTS`` (candidate
    folders under ``data_dir``), ``LAYOUT`` (the expected layout, shown when something is
    missing), ``EXPECTED_IMAGES`` (per domain, from the dataset's documentation) and
    ``DOWNLOAD``."""

    ROOTS: tuple[str, ...] = ()
    LAYOUT: str = ""
    EXPECTED_IMAGES: dict[str, int] = {}
    DOWNLOAD: str = ""

    def __init__(self, data_dir=None, source=None, targets=None, *, skip_corrupt: bool = False,
                 paths: dict | None = None, workers: int | None = None, **kwargs):
        super().__init__(data_dir, source, targets, **kwargs)
        self.skip_corrupt = skip_corrupt
        self.paths = dict(paths or {})
        unknown = set(self.paths) - {"root", *self.DOMAINS}
        if unknown:
            raise DatasetError(f"unknown keys {sorted(unknown)} in the paths of {self.NAME}; "
                               f"known: root, {', '.join(self.DOMAINS)}")
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.skipped: dict[str, list[str]] = {}
        self._samples: dict[str, FileSamples] = {}

    # ------------------------------------------------------------------ locations
    def resolve(self, path: str | Path) -> Path:
        """A configured path: absolute, or relative to ``data_dir``."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    @property
    def root(self) -> Path:
        """The dataset folder: ``paths["root"]`` if configured, else the first of ``ROOTS``
        that exists under ``data_dir`` (else the first one, which the report names)."""
        if "root" in self.paths:
            return self.resolve(self.paths["root"])
        for candidate in self.ROOTS:
            if (self.data_dir / candidate).is_dir():
                return self.data_dir / candidate
        return self.data_dir / self.ROOTS[0]

    def root_problem(self) -> str | None:
        if self.root.is_dir():
            return None
        if "root" not in self.paths and not self.data_dir.is_dir():
            return f"--data_dir {self.data_dir} does not exist"
        tried = ([str(self.root)] if "root" in self.paths
                 else [str(self.data_dir / c) for c in self.ROOTS])
        return f"dataset folder not found (tried {', '.join(tried)})"

    # ------------------------------------------------------------------ index
    @abc.abstractmethod
    def build_index(self, domain: str) -> DomainIndex:
        """Walk the layout of ``domain`` (no cache)."""

    @abc.abstractmethod
    def fingerprint_paths(self, domain: str) -> list[Path]:
        """Files and folders whose mtimes change when the domain's images change."""

    def _fingerprint(self, domain: str) -> list:
        out = []
        for p in self.fingerprint_paths(domain):
            try:
                st = os.stat(p)
                out.append([str(p), st.st_mtime_ns, st.st_size])
            except OSError:
                out.append([str(p), None, None])
        return out

    def _cache_file(self, domain: str) -> Path:
        key = json.dumps([self.NAME, INDEX_VERSION, domain, str(self.root.resolve()),
                          sorted((k, str(v)) for k, v in self.paths.items())])
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return cache_dir() / "index" / self.NAME / f"{domain}-{digest}.json"

    def _save(self, index: DomainIndex) -> None:
        path = self._cache_file(index.domain)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(index)))
            os.replace(tmp, path)
        except OSError as e:   # a read-only cache only costs speed
            log.warning("cannot write the index cache %s: %s", path, e)

    def index(self, domain: str, refresh: bool = False) -> DomainIndex:
        """The domain's index: from the cache when its fingerprint still matches, else built
        (and cached)."""
        self._check_domain(domain)
        fingerprint = self._fingerprint(domain)
        path = self._cache_file(domain)
        if not refresh and path.is_file():
            try:
                cached = DomainIndex(**json.loads(path.read_text()))
                if cached.fingerprint == fingerprint:
                    return cached
            except (OSError, ValueError, TypeError):
                pass     # unreadable or old cache: rebuild
        index = self.build_index(domain)
        index.fingerprint = fingerprint
        self._save(index)
        return index

    def verify(self, index: DomainIndex, all_files: bool = False) -> DomainIndex:
        """Decode the domain's images (all of them, or only the ones not verified before and
        the known-corrupt ones that changed since) and record the corrupt files."""
        if all_files or index.corrupt is None:
            index.corrupt = verify_images(index.paths, self.workers,
                                          f"{self.NAME}/{index.domain}: verifying")
        else:
            changed = [p for p, (mtime, _) in index.corrupt.items() if _mtime(p) != mtime]
            index.corrupt = {p: v for p, v in index.corrupt.items() if p not in changed}
            index.corrupt.update(verify_images(changed, self.workers, "re-verifying"))
        self._save(index)
        return index

    # ------------------------------------------------------------------ loading
    def _usable_index(self, domain: str) -> DomainIndex:
        index = self.index(domain)
        if self.skip_corrupt or index.corrupt:
            index = self.verify(index)
        return index

    def _problems(self, index: DomainIndex) -> list[str]:
        return index.problems + ([] if self.skip_corrupt else index.corrupt_problems())

    def _samples_of(self, index: DomainIndex) -> FileSamples:
        """The usable images of an index (corrupt ones left out with ``skip_corrupt``)."""
        keep = np.ones(len(index.paths), dtype=bool)
        if self.skip_corrupt and index.corrupt:
            keep = np.array([p not in index.corrupt for p in index.paths], dtype=bool)
            self.skipped[index.domain] = sorted(index.corrupt)
            log.warning("%s/%s: skipping %d corrupt image files: %s", self.NAME, index.domain,
                        len(index.corrupt), some(sorted(index.corrupt), 3))
        flags = (None if index.official_test is None
                 else np.asarray(index.official_test, dtype=bool)[keep])
        return FileSamples(index.domain, [p for p, k in zip(index.paths, keep) if k],
                           np.asarray(index.labels, dtype=np.int64)[keep], flags,
                           blank_corrupt=self.skip_corrupt)

    def load_domain(self, domain: str) -> FileSamples:
        if domain not in self._samples:
            index = self._usable_index(domain)
            if self._problems(index):
                raise DatasetError(self.report([index]))
            self._samples[domain] = self._samples_of(index)
        return self._samples[domain]

    def validate(self) -> None:
        """Index every domain the experiment uses and raise one :class:`DatasetError` naming
        everything that is missing (the same report as ``python -m sdgdml.datasets check``)."""
        domains = [d for d in [self.source, *self.targets] if d not in self._samples]
        indexes = [self._usable_index(d) for d in domains]
        if any(self._problems(i) for i in indexes):
            raise DatasetError(self.report(indexes))
        for index in indexes:
            self._samples[index.domain] = self._samples_of(index)

    # ------------------------------------------------------------------ report
    def layout(self) -> str:
        """The expected layout, domains and classes (shown when something is missing)."""
        return (f"{self.LAYOUT.format(root=self.root)}\n"
                f"domains: {', '.join(self.DOMAINS)}\n"
                f"classes ({len(self.CLASSES)}, in label order): {some(self.CLASSES, 12)}")

    def report(self, indexes: list[DomainIndex]) -> str:
        """What was found per domain versus what is expected, then every problem."""
        seen = set(self.seen_classes.tolist())
        rows, warnings = [], []
        problems: dict[str, list[str]] = {}     # message -> domains (shown once)
        for ix in indexes:
            labels = np.asarray(ix.labels, dtype=np.int64)
            n_seen = int(np.isin(labels, list(seen)).sum())
            expected = self.EXPECTED_IMAGES.get(ix.domain)
            issues = ix.problems + ix.corrupt_problems()
            if ix.problems:
                status = "MISSING" if not ix.paths else "INCOMPLETE"
            elif ix.corrupt:
                status = f"{len(ix.corrupt)} corrupt"
            else:
                status = "ok" + (" (verified)" if ix.corrupt is not None else "")
            rows.append([ix.domain, len(ix.paths), "?" if expected is None else expected,
                         f"{len(set(ix.labels))}/{len(self.CLASSES)}", n_seen,
                         len(labels) - n_seen,
                         "-" if ix.official_test is None else sum(ix.official_test), status])
            for p in issues:
                problems.setdefault(p, []).append(ix.domain)
            warnings += [f"{ix.domain}: {w}" for w in ix.warnings]
            if expected is not None and ix.paths and expected != len(ix.paths):
                warnings.append(f"{ix.domain}: found {len(ix.paths)} images, the distributed "
                                f"dataset has {expected}")
        n_seen_cls = len(seen)
        head = ["domain", "images", "expected", "classes", f"seen ({n_seen_cls} cls)",
                f"unseen ({len(self.CLASSES) - n_seen_cls} cls)", "official test", "status"]
        lines = [f"{self.NAME} at {self.root}",
                 tabulate(rows, headers=head, tablefmt="simple")]
        if problems:
            lines.append(f"{len(problems)} problem(s):")
            for p, doms in problems.items():
                where = "all domains" if len(doms) == len(self.DOMAINS) > 1 else ", ".join(doms)
                lines.append(f"  - {where}: {p}")
            lines += [f"expected layout:\n{self.layout()}"]
            if self.DOWNLOAD:
                lines += [f"download: {self.DOWNLOAD}"]
            if any("corrupt image" in p for p in problems):
                lines += ["replace the corrupt files, or train with --skip_corrupt to leave "
                          "them out (they are counted and logged)"]
        if warnings:
            lines += ["notes:"] + [f"  - {w}" for w in warnings]
        return "\n".join(lines)

    def check(self, domains: list[str] | None = None, verify: bool = True) -> tuple[bool, str]:
        """(ok, report) for ``domains`` (default: all), rebuilding the indexes and, with
        ``verify``, decoding every image."""
        indexes = []
        for d in domains or self.DOMAINS:
            index = self.index(d, refresh=True)
            indexes.append(self.verify(index, all_files=True) if verify else index)
        ok = not any(i.problems or i.corrupt for i in indexes)
        return ok, self.report(indexes)


def scan_class_folders(index: DomainIndex, folder: Path, label_of: Callable[[str], int | None],
                       class_names: tuple[str, ...], strict: bool = True) -> None:
    """Fill ``index`` from ``folder/<class folder>/<image>``. ``label_of`` maps a folder name
    to its class id (None: not a class of the dataset: reported, never guessed). Missing or
    empty classes are problems (``strict``) or warnings."""
    if not folder.is_dir():
        index.problems.append(f"domain folder not found: {folder}")
        return
    by_label: dict[int, list[str]] = {}
    unknown = []
    for name in list_folders(folder):
        label = label_of(name)
        if label is None:
            unknown.append(name)
        else:
            by_label.setdefault(label, []).append(name)
    if unknown:
        index.problems.append(f"{len(unknown)} folders in {folder} name no class of the "
                              f"dataset (cannot label them): {some(unknown)}")
    twice = [" and ".join(v) for v in by_label.values() if len(v) > 1]
    if twice:
        index.problems.append(f"several folders for one class in {folder}: {some(twice)}")
    missing, empty = [], []
    for label, class_name in enumerate(class_names):
        if label not in by_label:
            missing.append(class_name)
            continue
        for name in by_label[label]:
            files = list_images(folder / name)
            if not files:
                empty.append(name)
            index.paths += [str(folder / name / f) for f in files]
            index.labels += [label] * len(files)
    for names, what in ((missing, "class folders missing"),
                        (empty, "class folders without images")):
        if names:
            msg = f"{len(names)} {what} in {folder}: {some(names)}"
            (index.problems if strict else index.warnings).append(msg)
