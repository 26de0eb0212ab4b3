"""Inspect the dataset registry and the data on disk.

    python -m sdgdml.datasets list                       # registered datasets and their protocol
    python -m sdgdml.datasets splits PACS                # every single-source split (for sweeps)
    python -m sdgdml.datasets check --data_dir D [--dataset PACS ...]   # DigitsDG: no --data_dir
    python -m sdgdml.datasets examples GlyphsDG --out docs/images/glyphs_examples.png
    python -m sdgdml.datasets scaffold --root D/mydata --name MyData   # a config entry to edit
    python -m sdgdml.datasets download PACS --data_dir D   # official files, unpacked, checked
    python -m sdgdml.datasets download --list            # every address (and what is not public)

``check`` reports, per dataset and domain, the images and classes found against what the
protocol expects (and the seen/unseen image counts), lists exactly what is missing or corrupt
with the expected layout, and exits with status 1 unless every dataset checked is ready.
Training on a dataset that is not ready fails with the same report before building a model.

``download`` fetches a dataset's official files (resuming an interrupted transfer, verifying
published sizes/checksums), unpacks them into the layout ``check`` expects, then runs
``check`` (without decoding images) and exits with its status.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from tabulate import tabulate

from . import (DATASETS, DatasetError, FileDataset, create_dataset, get_dataset_class,
               load_dataset_config, single_source_splits)
from .config import CONFIG_NAME, scaffold
from . import download


def _list(args) -> int:
    load_dataset_config(args.data_dir, args.dataset_config)
    rows = []
    for name, cls in sorted(DATASETS.items()):
        n, seen = len(cls.CLASSES), len(cls.seen_class_ids())
        rows.append([name, ", ".join(cls.DOMAINS), n, f"{seen}/{n - seen}",
                     cls.DEFAULT_SOURCE, cls.DEFAULT_PROTOCOL, cls.VAL_PROTOCOL,
                     "yes" if cls.OFFICIAL_LISTS else "no"])
    print(tabulate(rows, headers=["dataset", "domains", "classes", "seen/unseen", "source",
                                  "protocol", "validation", "official lists"]))
    return 0


def _splits(args) -> int:
    load_dataset_config(args.data_dir, args.dataset_config)
    print("\n".join(single_source_splits(args.dataset)))
    return 0


def _check(args) -> int:
    load_dataset_config(args.data_dir, args.dataset_config)
    names = args.dataset or [n for n, c in sorted(DATASETS.items()) if issubclass(c, FileDataset)]
    files = [n for n in names if issubclass(get_dataset_class(n), FileDataset)]
    if files and args.data_dir is None:       # embedded datasets (DigitsDG) need none
        raise DatasetError(f"check {', '.join(files)} needs --data_dir (the folder holding "
                           f"the datasets)")
    summary = []
    for name in names:
        cls = get_dataset_class(name)
        if not issubclass(cls, FileDataset):
            summary.append(f"{name}: embedded, nothing to check")
            continue
        dataset = create_dataset(name, args.data_dir, config_file=args.dataset_config,
                                 workers=args.workers)
        for d in args.domains or []:
            dataset._check_domain(d)
        ok, report = dataset.check(args.domains, verify=not args.no_verify)
        print(report, end="\n\n")
        summary.append(f"{name}: {'ready' if ok else 'NOT READY'}")
    print("\n".join(summary))
    return 1 if any(s.endswith("NOT READY") for s in summary) else 0


def _examples(args) -> int:
    """One image per chosen class (the first seen and the first unseen classes) in every domain,
    as a grid (``sdgdml.figures.example_grid``)."""
    from ..figures import example_grid

    dataset = create_dataset(args.dataset, args.data_dir, config_file=args.dataset_config)
    seen = dataset.seen_class_ids()
    unseen = np.setdiff1d(np.arange(len(dataset.CLASSES)), seen)
    ids = list(seen[:args.classes // 2]) + list(unseen[:args.classes - args.classes // 2])
    rows = {}
    for domain in dataset.DOMAINS:
        samples = dataset.load_domain(domain)
        firsts = [np.flatnonzero(samples.labels == c) for c in ids]
        rows[domain] = [np.asarray(samples.load(int(f[0])).convert("RGB")) if len(f) else
                        np.zeros((8, 8, 3), np.uint8) for f in firsts]
    names = [f"{dataset.CLASSES[c].split()[-1]}{'*' if c in set(unseen) else ''}" for c in ids]
    title = f"{dataset.NAME}: one image per class (columns; * = unseen) and domain (rows)"
    print("\n".join(str(p) for p in example_grid(rows, args.out, title, names)))
    return 0


def _scaffold(args) -> int:
    print(f"# add to {CONFIG_NAME} (in --data_dir) or pass with --dataset_config; review the "
          f"class order and set seen_classes if the first half is not what you want")
    print(scaffold(args.root, args.name), end="")
    return 0


def _download(args) -> int:
    if args.list:
        print(tabulate(download.table_rows(), headers=download.TABLE_HEADERS,
                       disable_numparse=True))
        print(f"\nsize / MD5 '{download.NOT_KNOWN}': the distributor publishes none; such a "
              f"file is checked by unpacking it and by `check`. Offline: put a file by hand in "
              f"<data_dir>/{download.STAGING}/ under its name, or use --base_url MIRROR.")
        return 0
    if not args.dataset or not args.data_dir:
        raise DatasetError("download needs a dataset name and --data_dir (or --list)")
    cls = get_dataset_class(args.dataset)
    if not issubclass(cls, FileDataset):
        print(f"{args.dataset}: embedded in the package, nothing to download")
        return 0
    for d in args.domains or []:
        if d not in cls.DOMAINS:
            raise DatasetError(f"unknown domain {d!r}; {cls.NAME} has: {', '.join(cls.DOMAINS)}")
    for line in download.download(cls.NAME, args.data_dir, args.domains, args.base_url,
                                  args.keep_archives, args.quiet):
        print(line)
    dataset = create_dataset(cls.NAME, args.data_dir)
    ok, report = dataset.check(args.domains, verify=False)
    print(report, end="\n\n")
    print(f"{cls.NAME}: {'ready' if ok else 'NOT READY'} (check --data_dir {args.data_dir} "
          f"--dataset {cls.NAME} also decodes every image)")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdgdml.datasets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(q, data_dir_required=False):
        q.add_argument("--data_dir", required=data_dir_required, default=None,
                       help="the folder holding the datasets (as for training)")
        q.add_argument("--dataset_config", default=None,
                       help=f"YAML file registering datasets / their paths (default: "
                            f"<data_dir>/{CONFIG_NAME} if present)")

    common(sub.add_parser("list", help="registered datasets and their protocol"))
    q = sub.add_parser("splits", help="every single-source split of a dataset")
    q.add_argument("dataset")
    common(q)
    q = sub.add_parser("check", help="what is on disk versus what each dataset expects")
    common(q)
    q.add_argument("--dataset", nargs="+", default=None,
                   help="datasets to check (default: every dataset of image files)")
    q.add_argument("--domains", nargs="+", default=None, help="only these domains")
    q.add_argument("--no_verify", action="store_true",
                   help="do not decode the images (only files, folders and lists are checked)")
    q.add_argument("--workers", type=int, default=None,
                   help="threads decoding images (default: min(8, CPUs))")
    q = sub.add_parser("examples", help="a figure of example images: a row per domain, a "
                                        "column per class")
    q.add_argument("dataset")
    q.add_argument("--out", required=True, help="the PNG to write")
    q.add_argument("--classes", type=int, default=12,
                   help="columns: the first classes/2 seen and the first unseen classes")
    common(q)
    q = sub.add_parser("scaffold", help="print a config entry for a <domain>/<class>/<image> "
                                        "tree")
    q.add_argument("--root", required=True, help="the dataset folder")
    q.add_argument("--name", required=True, help="the name to register it under")
    q = sub.add_parser("download", help="fetch a dataset's official files into the layout "
                                        "check expects (resumable; checksums verified)")
    q.add_argument("dataset", nargs="?", default=None, help="registered dataset name")
    q.add_argument("--data_dir", default=None, help="the folder holding the datasets")
    q.add_argument("--domains", nargs="+", default=None,
                   help="only the files of these domains (DomainNet: one zip and two lists "
                        "per domain)")
    q.add_argument("--base_url", default=None,
                   help="fetch the same file names from this mirror instead of the official "
                        "addresses (a local file server, ...)")
    q.add_argument("--keep_archives", action="store_true",
                   help="keep the downloaded archives (in <data_dir>/.sdgdml_downloads/)")
    q.add_argument("--quiet", action="store_true", help="no progress output")
    q.add_argument("--list", action="store_true",
                   help="print every dataset's files and addresses, and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    command = {"list": _list, "splits": _splits, "check": _check, "examples": _examples,
               "scaffold": _scaffold,
               "download": _download}
    try:
        return command[args.command](args)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
