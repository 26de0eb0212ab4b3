"""What a run trains on and how it is evaluated: the SDG-DML protocol (labelled seen classes of
the source; retrieval of unseen classes in the targets) or a UCDR protocol (``--ucdr``: unlabeled
query and gallery domains, UEM's setting). The trainer asks the protocol for the training views,
the evaluation and the final summary, and never branches on which protocol it has."""
from __future__ import annotations

import logging

import numpy as np
from tabulate import tabulate

from . import evaluation
from .algorithms import DataNeeds
from .datasets import Split, ucdr

log = logging.getLogger("sdgdml")


class SDGDMLProtocol:
    """Train on the source's seen classes; retrieval of unseen classes in each target (and the
    source's validation/test splits, for model selection). A label-free method gets the same
    source images without labels; a transductive one, each target's images without labels."""

    def __init__(self, args, dataset):
        self.args, self.dataset = args, dataset
        self.open_set = None

    def check(self, needs: DataNeeds) -> None:
        """Raise for a method this protocol cannot train."""

    def training_views(self, needs: DataNeeds) -> tuple[Split, dict[str, Split]]:
        """(source view, {target: unlabeled view}) the method trains on."""
        train_split = self.dataset.train_split()
        source = train_split if needs.labels else self.dataset.unlabeled(train_split)
        targets = {t: self.dataset.unlabeled_split(t) for t in self.dataset.targets}
        return source, targets

    def eval_splits(self) -> list:
        return self.dataset.eval_splits()

    def evaluate(self, embed, transform, device, embeddings: dict | None = None
                 ) -> dict[str, float]:
        """Every evaluation's metrics (``embeddings``: filled with {split name: embeddings})."""
        a = self.args
        return evaluation.evaluate(embed, self.eval_splits(), transform, a.metrics,
                                   a.eval_batch_size, a.num_workers, device, a.eval_chunk_size,
                                   a.ucdr_metrics, self.open_set, embeddings)

    def summary(self, records: list[dict], metric: str = "recall@1") -> str:
        """Each target's and the source's metric at the first and last checkpoint."""
        first, last, source = records[0], records[-1], self.dataset.source
        keys = [k for k in last if k.endswith(f"_test_{metric}")
                and not k.startswith(f"{source}_test")]
        rows = [[k[: -len(f"_{metric}")], first.get(k, float("nan")) * 100, last[k] * 100]
                for k in keys]
        if rows:
            rows.append(["average (targets)", np.mean([r[1] for r in rows]),
                         np.mean([r[2] for r in rows])])
        for key in (f"{source}_val_{metric}", f"{source}_test_{metric}"):
            if key in last:
                rows.append([key[: -len(f"_{metric}")] + " (source)",
                             first.get(key, float("nan")) * 100, last[key] * 100])
        return first_last_table(rows, f"split ({metric}, %)", first, last)


class UCDRProtocol(SDGDMLProtocol):
    """``--ucdr closed|partial|open``: the source is the query domain, the targets the
    galleries, both unlabeled for training; the class sets are drawn with ``trial_seed``."""

    def __init__(self, args, dataset):
        super().__init__(args, dataset)
        if args.protocol is not None:
            raise ucdr.ProtocolError("--protocol (SDG-DML splits) and --ucdr exclude each other")
        self.protocol = ucdr.make_protocol(dataset, args.ucdr, args.trial_seed,
                                           args.ucdr_partial_fraction, args.ucdr_shared_fraction,
                                           getattr(args, "ucdr_min_images", 0),
                                           getattr(args, "ucdr_num_classes", 0))
        seed = args.trial_seed if args.seed is None else args.seed
        self.open_set = evaluation.OpenSetRule(args.open_rule, args.open_threshold,
                                               args.open_clusters, seed,
                                               getattr(args, "open_max_clusters", 30))

    def check(self, needs: DataNeeds) -> None:
        if needs.labels:
            raise ucdr.ProtocolError(
                f"--ucdr protocols are unsupervised: {self.args.algorithm} trains on labels; "
                f"use an algorithm without labels")

    def training_views(self, needs: DataNeeds) -> tuple[Split, dict[str, Split]]:
        log.info("%s", self.protocol.describe())
        views = ucdr.train_views(self.dataset, self.protocol)
        return (views[self.dataset.source], {t: views[t] for t in self.dataset.targets})

    def eval_splits(self) -> list:
        return ucdr.eval_splits(self.dataset, self.protocol)

    def summary(self, records: list[dict], metric: str = "map@all") -> str:
        first, last = records[0], records[-1]
        ends = ("_map@all", "_open_acc", "_shared_accept", "_open_auroc", "_detect_acc")
        rows = [[k, first.get(k, float("nan")) * 100, last[k] * 100]
                for k in sorted(k for k in last if k.endswith(ends))]
        return first_last_table(rows, "UCDR metric (%)", first, last)


def first_last_table(rows: list[list], label: str, first: dict, last: dict) -> str:
    """``rows`` of [name, value at the first checkpoint, value at the last] as a table; one
    value column when both are the same checkpoint (a run with a single record)."""
    if first["step"] == last["step"]:
        return tabulate([[r[0], r[2]] for r in rows], headers=[label, f"step {last['step']}"],
                        floatfmt=".2f")
    return tabulate(rows, headers=[label, f"step {first['step']}", f"step {last['step']}"],
                    floatfmt=".2f")


def make_protocol(args, dataset) -> SDGDMLProtocol:
    """The run's protocol, from its arguments."""
    return UCDRProtocol(args, dataset) if args.ucdr else SDGDMLProtocol(args, dataset)
