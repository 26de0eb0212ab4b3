"""Universal unsupervised cross-domain retrieval (UCDR) protocols, as in UEM (NeurIPS 2024), for
any registered :class:`SDGDataset`.

A protocol is a query domain A (the run's ``source``), one or more gallery domains B (the run's
``targets``) and the classes each side holds:

- ``closed``: A and B hold every class.
- ``partial``: B holds every class, A a random ``partial_fraction`` of them (UEM's partial
  setting: "the query domain contains only half of the label space of the retrieval domain,
  randomly selected").
- ``open``: a random ``shared_fraction`` of the classes is held by both; the remaining classes
  are split in two halves, private to A and private to B (the exact DomainNet open-set split of
  the paper is not published: this is our documented default). A query of an A-private class
  must be rejected (retrieval returns null).

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


def class_sets(kind: str, num_classes: int, seed: int = 0, partial_fraction: float = 0.5,
               shared_fraction: float = 0.5) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(query classes, gallery classes) of a protocol, as sorted global class ids."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown UCDR protocol {kind!r}; known: {', '.join(KINDS)}")
    everything = tuple(range(num_classes))
    if kind == "closed":
        return everything, everything
    rng = np.random.default_rng([seed, 4242])
    order = [int(c) for c in rng.permutation(num_classes)]
    if kind == "partial":
        if not 0 < partial_fraction < 1:
            raise ProtocolError(f"partial_fraction must be in (0, 1), got {partial_fraction}")
        n = min(num_classes - 1, max(1, round(partial_fraction * num_classes)))
        return tuple(sorted(order[:n])), everything
    if not 0 < shared_fraction < 1:
        raise ProtocolError(f"shared_fraction must be in (0, 1), got {shared_fraction}")
    n_shared = min(num_classes - 2, max(1, round(shared_fraction * num_classes)))
    rest = order[n_shared:]
    half = len(rest) // 2
    shared, q_private, g_private = order[:n_shared], rest[:half], rest[half:]
    return tuple(sorted(shared + q_private)), tuple(sorted(shared + g_private))


def make_protocol(dataset: SDGDataset, kind: str, seed: int = 0, partial_fraction: float = 0.5,
                  shared_fraction: float = 0.5) -> UCDRProtocol:
    """The protocol of a dataset instance: its source is the query domain, its targets the
    gallery domains."""
    q, g = class_sets(kind, len(dataset.CLASSES), seed, partial_fraction, shared_fraction)
    return UCDRProtocol(kind, dataset.source, tuple(dataset.targets), q, g)


def domain_view(dataset: SDGDataset, domain: str, classes, name: str, labelled: bool) -> Split:
    """Every image of ``domain`` whose class is in ``classes``; ``labelled=False`` gives a view
    without labels (:class:`UnlabeledSamples`: ``ImageDataset`` over it yields images only and
    its samples have no labels to give)."""
    samples = dataset.domain(domain)
    idx = np.flatnonzero(np.isin(samples.labels, np.asarray(classes)))
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
