"""Universal unsupervised cross-domain retrieval (UCDR) protocols, as in UEM (NeurIPS 2024), for
any registered :class:`SDGDataset`.

A protocol is a query domain A (the run's ``source``), one or more gallery domains B (the run's
``targets``) and the classes each side holds:

- ``closed``: A and B hold every class.
- ``partial``: B holds every class, A a random ``partial_fraction`` of them (UEM's partial
  setting: "the query domain contains only half of the label space of the retrieval domain,
  randomly selected").
- ``open``: A holds every class, B a random ``shared_fraction`` of A's classes (UEM's open
  set: "the retrieval domain's label space is half of the query's", B a subset of A). A query of
  a class B lacks (A-private) must be detected as private (retrieval returns null).

A class subset (``min_images``, ``num_classes``) restricts every protocol to one fixed set of
classes, the same for every domain pair of the dataset: the classes with more than
``min_images`` *training* images in every domain of the dataset, the ``num_classes`` of them
with the largest smallest count (ties: lower class id), before the draws above. UEM's DomainNet
protocol is UCDIR's "DomainNet-7" (Hu & Lee ECCV 2022: "the 7 classes with more than 200
images"; UCDIR's first released script, github conghuihu/UCDIR
``scripts/domainnet_clipart-sketch.sh``, reads the folders ``domainNet-7/<domain>`` with 1,959
clipart and 2,091 sketch training images and ``--num-cluster 7``): ``min_images=200,
num_classes=7`` (``--ucdr_min_images 200 --ucdr_num_classes 7``). UCDIR's repository does not
name the 7 classes; this rule, applied to DomainNet's official training lists, is ours and is
printed with each domain's counts by ``python -m sdgdml.datasets check`` (docs/datasets.md).

Training images only: on a dataset with official train/test lists (DomainNet) a UCDR domain is
its training-list images (UCDIR trains and retrieves on the training folders); elsewhere every
image of the domain.

Class subsets are drawn from the dataset's class count with ``seed`` (the run's trial seed),
never from file lists, so the same definitions hold for DigitsDG, Office-31, Office-Home or
DomainNet. Training is transductive and unsupervised: the algorithm gets every image of A's
classes in A and of B's classes in B, without labels (``train_views``); evaluation retrieves
those images of A from those of B with their labels (``eval_splits``). Choosing which images a
domain holds uses the labels once, to build the benchmark (as the paper does); the training
views carry none.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tabulate import tabulate

from .base import SDGDataset
from .samples import DatasetError, EvalSplit, Split, UnlabeledSamples

KINDS = ("closed", "partial", "open")


class ProtocolError(DatasetError):
    """A UCDR protocol cannot be built as asked."""


@dataclass(frozen=True)
class CrossDomainSplit(EvalSplit):
    """A UCDR evaluation: queries of domain A against the gallery of domain B. Queries whose
    class is absent from the gallery are the open-set (private) queries."""


@dataclass(frozen=True)
class UCDRProtocol:
    kind: str
    query_domain: str
    gallery_domains: tuple[str, ...]
    query_classes: tuple[int, ...]
    gallery_classes: tuple[int, ...]

    @property
    def shared_classes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.query_classes) & set(self.gallery_classes)))

    @property
    def query_private(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.query_classes) - set(self.gallery_classes)))

    @property
    def gallery_private(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.gallery_classes) - set(self.query_classes)))

    def describe(self) -> str:
        return (f"UCDR {self.kind}: {self.query_domain} -> {','.join(self.gallery_domains)}; "
                f"shared classes {list(self.shared_classes)}, query-private "
                f"{list(self.query_private)}, gallery-private {list(self.gallery_private)}")


def class_sets(kind: str, classes, seed: int = 0, partial_fraction: float = 0.5,
               shared_fraction: float = 0.5) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(query classes, gallery classes) of a protocol, as sorted global class ids, drawn from
    ``classes`` (an int n: classes 0..n-1; or the class ids)."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown UCDR protocol {kind!r}; known: {', '.join(KINDS)}")
    everything = tuple(range(classes)) if isinstance(classes, int) else tuple(sorted(classes))
    n_all = len(everything)
    if kind == "closed":
        return everything, everything
    if n_all < 2:
        raise ProtocolError(f"the {kind} protocol needs at least 2 classes, got {n_all}")
    rng = np.random.default_rng([seed, 4242])
    order = [everything[int(i)] for i in rng.permutation(n_all)]
    fraction = partial_fraction if kind == "partial" else shared_fraction
    if not 0 < fraction < 1:
        name = "partial_fraction" if kind == "partial" else "shared_fraction"
        raise ProtocolError(f"{name} must be in (0, 1), got {fraction}")
    subset = tuple(sorted(order[:min(n_all - 1, max(1, round(fraction * n_all)))]))
    # partial: the query holds a subset of the gallery's classes; open: the reverse
    return (subset, everything) if kind == "partial" else (everything, subset)


def frequent_classes(dataset: SDGDataset, min_images: int, num_classes: int
                     ) -> tuple[int, ...]:
    """The classes with more than ``min_images`` training images in every domain of the
    dataset, at most ``num_classes`` of them (0: all): the largest smallest-count first, ties by
    class id. One set for the dataset, whichever domains a run uses."""
    counts = np.stack([dataset.training_class_counts(d) for d in dataset.DOMAINS]).min(0)
    eligible = [c for c in np.argsort(-counts, kind="stable") if counts[c] > min_images]
    chosen = eligible[:num_classes] if num_classes else eligible
    if len(chosen) < max(num_classes, 1):
        raise ProtocolError(f"only {len(chosen)} classes of {dataset.NAME} have more than "
                            f"{min_images} training images in each of its domains "
                            f"({', '.join(dataset.DOMAINS)}); asked for "
                            f"{num_classes or 'at least 1'}")
    return tuple(sorted(int(c) for c in chosen))


def class_subset_report(dataset: SDGDataset, min_images: int, num_classes: int,
                        reference: dict[str, int] | None = None) -> str:
    """The class subset of ``frequent_classes`` with each domain's training images per class
    and in total (beside ``reference`` totals, e.g. a paper's, when given)."""
    classes = frequent_classes(dataset, min_images, num_classes)
    counts = {d: dataset.training_class_counts(d) for d in dataset.DOMAINS}
    rows = [[f"{c} {dataset.CLASSES[c]}", *(int(counts[d][c]) for d in dataset.DOMAINS)]
            for c in classes]
    rows.append(["total", *(int(counts[d][list(classes)].sum()) for d in dataset.DOMAINS)])
    if reference:
        rows.append(["reference", *(reference.get(d, "-") for d in dataset.DOMAINS)])
    return tabulate(rows, headers=["class", *dataset.DOMAINS], tablefmt="simple")


def make_protocol(dataset: SDGDataset, kind: str, seed: int = 0, partial_fraction: float = 0.5,
                  shared_fraction: float = 0.5, min_images: int = 0, num_classes: int = 0
                  ) -> UCDRProtocol:
    """The protocol of a dataset instance: its source is the query domain, its targets the
    gallery domains (restricted to the dataset's class subset when ``min_images`` or
    ``num_classes``)."""
    classes = (frequent_classes(dataset, min_images, num_classes) if min_images or num_classes
               else len(dataset.CLASSES))
    q, g = class_sets(kind, classes, seed, partial_fraction, shared_fraction)
    return UCDRProtocol(kind, dataset.source, tuple(dataset.targets), q, g)


def domain_view(dataset: SDGDataset, domain: str, classes, name: str, labelled: bool) -> Split:
    """Every training image (``training_pool``) of ``domain`` whose class is in ``classes``;
    ``labelled=False`` gives a view without labels (:class:`UnlabeledSamples`: ``ImageDataset``
    over it yields images only and its samples have no labels to give)."""
    samples = dataset.domain(domain)
    pool = dataset.training_pool(domain)
    idx = pool[np.isin(samples.labels[pool], np.asarray(classes))]
    if len(idx) == 0:
        raise ProtocolError(f"domain {domain!r} of {dataset.NAME} holds no image of classes "
                            f"{list(classes)}")
    if labelled:
        return Split(name, samples, idx, samples.labels[idx])
    return Split(name, UnlabeledSamples(samples), idx, None)


def train_views(dataset: SDGDataset, protocol: UCDRProtocol) -> dict[str, Split]:
    """{domain: unlabeled view}: the query domain's classes in A, the gallery's in each B."""
    views = {protocol.query_domain: domain_view(
        dataset, protocol.query_domain, protocol.query_classes,
        f"{protocol.query_domain}_unlabeled", labelled=False)}
    for g in protocol.gallery_domains:
        views[g] = domain_view(dataset, g, protocol.gallery_classes, f"{g}_unlabeled",
                               labelled=False)
    return views


def eval_splits(dataset: SDGDataset, protocol: UCDRProtocol) -> list[CrossDomainSplit]:
    """One ``<A>-><B>_<kind>`` retrieval evaluation per gallery domain."""
    query = domain_view(dataset, protocol.query_domain, protocol.query_classes,
                        f"{protocol.query_domain}_query", labelled=True)
    return [CrossDomainSplit(f"{protocol.query_domain}->{g}_{protocol.kind}", query,
                             domain_view(dataset, g, protocol.gallery_classes, f"{g}_gallery",
                                         labelled=True))
            for g in protocol.gallery_domains]
