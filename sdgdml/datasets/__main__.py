"""Inspect the dataset registry and the data on disk.

    python -m sdgdml.datasets list                       # registered datasets and their protocol
    python -m sdgdml.datasets splits PACS                # every single-source split (for sweeps)
    python -m sdgdml.datasets check --data_dir D [--dataset PACS ...]
    python -m sdgdml.datasets scaffold --root D/mydata --name MyData   # a config entry to edit

``check`` reports, per dataset and domain, the images and classes found against what the
protocol expects (and the seen/unseen image counts), lists exactly what is missing or corrupt
with the expected layout, and exits with status 1 unless every dataset checked is ready.
Training on a dataset that is not ready fails with the same report before building a model.
"""
from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from . import (DATASETS, DatasetError, FileDataset, create_dataset, get_dataset_class,
               load_dataset_config, single_source_splits)
from .config import CONFIG_NAME, scaffold


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


def _scaffold(args) -> int:
    print(f"# add to {CONFIG_NAME} (in --data_dir) or pass with --dataset_config; review the "
          f"class order and set seen_classes if the first half is not what you want")
    print(scaffold(args.root, args.name), end="")
    return 0


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
    common(q, data_dir_required=True)
    q.add_argument("--dataset", nargs="+", default=None,
                   help="datasets to check (default: every dataset of image files)")
    q.add_argument("--domains", nargs="+", default=None, help="only these domains")
    q.add_argument("--no_verify", action="store_true",
                   help="do not decode the images (only files, folders and lists are checked)")
    q.add_argument("--workers", type=int, default=None,
                   help="threads decoding images (default: min(8, CPUs))")
    q = sub.add_parser("scaffold", help="print a config entry for a <domain>/<class>/<image> "
                                        "tree")
    q.add_argument("--root", required=True, help="the dataset folder")
    q.add_argument("--name", required=True, help="the name to register it under")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    command = {"list": _list, "splits": _splits, "check": _check, "scaffold": _scaffold}
    try:
        return command[args.command](args)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
