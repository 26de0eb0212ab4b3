"""Retrieval evaluation: exact chunked k-NN and the metrics of the DML literature.

Metrics (all in [0, 1]):
- ``recall@K``: fraction of queries with at least one same-class item among their K nearest
  gallery items (self excluded in the within-domain protocol). Queries whose class has no
  other item in the gallery count as misses.
- ``map@r``: Mean Average Precision at R (Musgrave et al., "A Metric Learning Reality Check",
  2020), R = number of gallery items of the query's class: (1/R) sum_{i<=R} P(i) rel(i).
- ``map@all``: mean Average Precision over the full gallery ranking.
- ``precision@K``: fraction of same-class items among the K nearest (divided by K, also for a
  query whose class has fewer than K gallery items: its best possible score is then R/K).
- ``ucdir_precision@K``: P@K as UCDIR computes it (github conghuihu/UCDIR, ``main.py``
  ``retrieval_precision_cal``), the convention of the unsupervised cross-domain retrieval papers
  that report its P@K: each query's top min(K, R) items are judged (R = gallery items of its
  class), and the hits are pooled over the queries: sum of hits / sum of min(K, R). A query
  whose class has R < K gallery items can then score 1, and queries weigh by min(K, R).
- ``class_recall@K``: recall@K averaged per class first, then over the query classes (every
  class weighs the same, however many images it has), beside the per-query mean ``recall@K``.
- ``nmi``, ``ami``: normalised / adjusted mutual information between the query labels and a
  k-means clustering of the query embeddings (scikit-learn ``KMeans``, k = number of query
  classes, ``n_init=10``, ``random_state=0``: deterministic), the clustering quality the DML
  tables report beside recall (AMI is corrected for chance: about 0 for random clusters).
``map@r``, ``map@all`` and ``precision@K`` average only over queries with at least one relevant
gallery item (undefined otherwise).

Universal cross-domain retrieval (UCDR, UEM's protocols; ``cross_domain_metrics``): queries of
domain A against the gallery of domain B, whose classes may differ. Retrieval metrics
(default ``UCDR_METRICS``: mAP@All and P@K) are averaged over the *shared-class* queries; the
queries of classes absent from the gallery must be rejected (retrieval returns null):

- ``open_acc``: fraction of private-class queries rejected (the slides' "open-set acc");
- ``shared_accept``: fraction of shared-class queries not rejected;
- ``open_hmean``: their harmonic mean (a rule that rejects everything scores 0 here);
- ``detect_acc``: fraction of all queries whose private / shared decision is right (the
  paper's open-set "acc" under ``--open_rule detector``);
- ``open_auroc``: threshold-free, the area under the ROC curve of the rule's acceptance score
  separating shared-class (positive) from private-class queries (0.5: chance).

The rejection rule (``OpenSetRule``) is an evaluation setting: ``threshold``: reject a query
whose highest cosine similarity to any gallery item is below ``threshold``; ``prototype``:
reject it when its highest cosine to the gallery's k-means prototypes (``clusters`` of them;
0: as many as the gallery has classes) is below ``threshold``; ``detector``: UEM's App. B.1
detector (``detector_scores``), the paper's rule, applicable to any method's embeddings; under
it the threshold rule's ``thr_open_auroc`` and ``thr_detect_acc`` are recorded too.

Nearest neighbours are exact inner-product search on L2-normalised embeddings, computed in
query chunks of ``chunk_size`` rows so memory is O(chunk_size x N), never O(N^2). Ties are
broken deterministically: equal similarities rank by ascending gallery index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")
CLUSTERING_METRICS = ("nmi", "ami")
METRIC_NAMES = ("recall@K, class_recall@K, precision@K, ucdir_precision@K (K >= 1), map@r, "
                "map@all, nmi, ami")
UCDR_METRICS = ("map@all", "precision@1", "precision@5", "precision@15")
OPEN_RULES = ("threshold", "prototype", "detector")


@dataclass(frozen=True)
class OpenSetRule:
    """When a cross-domain query is rejected (returns null); see the module docstring."""

    rule: str = "threshold"
    threshold: float = 0.5
    clusters: int = 0
    seed: int = 0
    max_clusters: int = 30

    def __post_init__(self):
        if self.rule not in OPEN_RULES:
            raise ValueError(f"unknown open-set rule {self.rule!r}; known: {', '.join(OPEN_RULES)}")

    def rejects(self, scores: torch.Tensor) -> torch.Tensor:
        """True where a query's acceptance score is below the threshold (its retrieval is
        null); the detector's score is a margin, rejected below 0."""
        return scores < (0.0 if self.rule == "detector" else self.threshold)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_tensor(x, device, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)


def _stable_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row, descending, ties broken by ascending column index."""
    extra = int(k < sims.shape[1])
    vals, idx = sims.topk(k + extra, dim=1)
    if extra:
        # a tie straddles the k-th position iff the (k+1)-th value equals the k-th: topk's
        # choice among tied columns is arbitrary there, so redo those rows with a stable sort
        straddle = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k], idx[:, :k]
        if straddle.any():
            rows = straddle.nonzero().squeeze(1)
            order = torch.sort(sims[rows], dim=1, descending=True, stable=True).indices[:, :k]
            idx[rows] = order
            vals[rows] = sims[rows].gather(1, order)
    # canonical order inside the top-k: by value descending, then index ascending
    by_index = idx.argsort(dim=1)
    idx, vals = idx.gather(1, by_index), vals.gather(1, by_index)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, by_value), idx.gather(1, by_value)


def knn(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude_self: bool = False,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest gallery items of each query by inner product.

    ``exclude_self``: query i is gallery item i (within-domain, leave-one-out). Returns
    (similarities, indices), both (n_query, k), on the CPU.
    """
    dev = _device(device)
    gallery = _as_tensor(gallery, dev, torch.float32)
    n_gallery = gallery.shape[0] - (1 if exclude_self else 0)
    if k > n_gallery:
        raise ValueError(f"k={k} exceeds the {n_gallery} gallery items available per query")
    out_vals, out_idx = [], []
    buffer = torch.empty(min(chunk_size, len(query)), gallery.shape[0], device=dev)
    for start in range(0, query.shape[0], chunk_size):
        q = _as_tensor(query[start:start + chunk_size], dev, torch.float32)
        sims = torch.mm(q, gallery.T, out=buffer[:len(q)])    # reused: no page faults per chunk
        if exclude_self:
            rows = torch.arange(q.shape[0], device=dev)
            sims[rows, rows + start] = -math.inf
        vals, idx = _stable_topk(sims, k)
        out_vals.append(vals.cpu())
        out_idx.append(idx.cpu())
    return torch.cat(out_vals), torch.cat(out_idx)


@dataclass
class _MetricRequest:
    recall_ks: list[int] = field(default_factory=list)
    class_recall_ks: list[int] = field(default_factory=list)
    precision_ks: list[int] = field(default_factory=list)
    ucdir_precision_ks: list[int] = field(default_factory=list)
    map_r: bool = False
    map_all: bool = False
    clustering: list[str] = field(default_factory=list)


def _parse_metrics(metrics) -> _MetricRequest:
    req = _MetricRequest()
    for m in metrics:
        name, _, arg = m.partition("@")
        lists = {"recall": req.recall_ks, "class_recall": req.class_recall_ks,
                 "precision": req.precision_ks, "ucdir_precision": req.ucdir_precision_ks}
        if name in lists and arg.isdigit() and int(arg) >= 1:
            lists[name].append(int(arg))
        elif m == "map@r":
            req.map_r = True
        elif m == "map@all":
            req.map_all = True
        elif m in CLUSTERING_METRICS:
            req.clustering.append(m)
        else:
            raise ValueError(f"unknown metric {m!r}; known: {METRIC_NAMES}")
    return req


def clustering_metrics(embeddings, labels, metrics=CLUSTERING_METRICS,
                       seed: int = 0) -> dict[str, float]:
    """NMI / AMI of the labels against a k-means clustering of the embeddings (k = number of
    distinct labels; see the module docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    x = _as_tensor(embeddings, "cpu", torch.float32).numpy()
    y = _as_tensor(labels, "cpu").long().numpy()
    k = len(np.unique(y))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    scores = {"nmi": normalized_mutual_info_score, "ami": adjusted_mutual_info_score}
    return {m: float(scores[m](y, clusters)) for m in metrics}


def _class_mean(values: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of each class's mean value."""
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, values.double())
    return (sums / torch.bincount(inverse, minlength=len(classes))).mean().item()


def check_metrics(metrics) -> None:
    """Raise ValueError naming the known metrics if any name is unknown."""
    _parse_metrics(metrics)


def ranking(query, gallery, k: int, chunk_size: int = 1024,
            device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of each query's k nearest gallery items (fewer when the gallery
    is smaller); ``gallery`` None: leave-one-out inside the queries (within-domain)."""
    within = gallery is None
    gallery = query if within else gallery
    return knn(query, gallery, min(k, len(gallery) - int(within)), exclude_self=within,
               chunk_size=chunk_size, device=device)


def _relevant_counts(q_labels, g_labels, exclude_self) -> torch.Tensor:
    classes, g_counts = torch.unique(g_labels, return_counts=True)
    pos = torch.searchsorted(classes, q_labels).clamp(max=len(classes) - 1)
    counts = torch.where(classes[pos] == q_labels, g_counts[pos], torch.zeros_like(pos))
    return counts - (1 if exclude_self else 0)


def _map_at_r(hits: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """hits: (n, kmax) bool of the ranked list; relevant: (n,) R per query (> 0)."""
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    within_r = ranks.unsqueeze(0) <= relevant.unsqueeze(1)
    h = (hits & within_r).double()
    precision = h.cumsum(1) / ranks
    return (precision * h).sum(1) / relevant.double()


def _ucdir_precision(hits: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    """UCDIR's P@K (module doc): hits within each query's top min(k, R), pooled over the
    queries. hits: (n, >= min(k, R)) bool of the ranked lists; relevant: (n,) R (> 0)."""
    judged = relevant.clamp(max=k)
    ranks = torch.arange(1, hits.shape[1] + 1)
    within = ranks.unsqueeze(0) <= judged.unsqueeze(1)
    return ((hits & within).sum().double() / judged.sum()).item()


def _map_at_all(query, gallery, q_labels, g_labels, exclude_self, chunk_size, dev):
    """Average precision over the whole ranking, per query (nan when nothing is relevant)."""
    aps = []
    g_labels_d = g_labels.to(dev)
    for start in range(0, query.shape[0], chunk_size):
        q = _as_tensor(query[start:start + chunk_size], dev, torch.float32)
        sims = q @ gallery.T
        rows = torch.arange(q.shape[0], device=dev)
        if exclude_self:
            sims[rows, rows + start] = -math.inf
        order = torch.sort(sims, dim=1, descending=True, stable=True).indices
        if exclude_self:  # self is ranked last: drop that column
            order = order[:, :-1]
        hits = (g_labels_d[order] == q_labels[start:start + chunk_size].to(dev).unsqueeze(1))
        hits = hits.double()
        ranks = torch.arange(1, hits.shape[1] + 1, device=dev, dtype=torch.float64)
        n_rel = hits.sum(1)
        ap = (hits.cumsum(1) / ranks * hits).sum(1) / n_rel.clamp(min=1)
        aps.append(torch.where(n_rel > 0, ap, torch.full_like(ap, math.nan)).cpu())
    return torch.cat(aps)


def retrieval_metrics(
    query: torch.Tensor,
    query_labels,
    gallery: torch.Tensor | None = None,
    gallery_labels=None,
    metrics=DEFAULT_METRICS,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Retrieval metrics of ``query`` against ``gallery``.

    With no gallery, the protocol is within-domain leave-one-out: the queries are the gallery and
    each query's own item is excluded. Embeddings are used as given (inner product); pass
    L2-normalised embeddings for cosine similarity. ``nmi`` / ``ami`` cluster the queries.
    """
    exclude_self = gallery is None
    if exclude_self:
        gallery, gallery_labels = query, query_labels
    q_labels = _as_tensor(query_labels, "cpu").long()
    g_labels = _as_tensor(gallery_labels, "cpu").long()
    if len(q_labels) != len(query) or len(g_labels) != len(gallery):
        raise ValueError("embeddings and labels must have the same length")
    req = _parse_metrics(metrics)
    relevant = _relevant_counts(q_labels, g_labels, exclude_self)
    has_rel = relevant > 0
    kmax = max(req.recall_ks + req.class_recall_ks + req.precision_ks + req.ucdir_precision_ks
               + ([int(relevant.max())] if req.map_r else []) + [1])
    kmax = min(kmax, len(gallery) - (1 if exclude_self else 0))
    _, idx = knn(query, gallery, kmax, exclude_self, chunk_size, device)
    hits = g_labels[idx] == q_labels.unsqueeze(1)

    out: dict[str, float] = {}
    for k in req.recall_ks:
        out[f"recall@{k}"] = hits[:, :k].any(1).double().mean().item()
    for k in req.class_recall_ks:
        out[f"class_recall@{k}"] = _class_mean(hits[:, :k].any(1), q_labels)
    for k in req.precision_ks:      # / k, also when the gallery is smaller than k
        out[f"precision@{k}"] = (hits[has_rel, :k].double().sum(1) / k).mean().item()
    for k in req.ucdir_precision_ks:
        out[f"ucdir_precision@{k}"] = _ucdir_precision(hits[has_rel], relevant[has_rel], k)
    if req.map_r:
        out["map@r"] = _map_at_r(hits[has_rel], relevant[has_rel]).mean().item()
    if req.map_all:
        dev = _device(device)
        aps = _map_at_all(query, _as_tensor(gallery, dev, torch.float32), q_labels, g_labels,
                          exclude_self, chunk_size, dev)
        out["map@all"] = aps[has_rel].mean().item()
    if req.clustering:
        out.update(clustering_metrics(query, q_labels, req.clustering))
    return {k: (math.nan if v != v else float(v)) for k, v in out.items()}


def acceptance_scores(query: torch.Tensor, gallery: torch.Tensor, rule: OpenSetRule,
                      gallery_labels=None, chunk_size: int = 1024,
                      device: str | torch.device | None = None) -> torch.Tensor:
    """(n_query,) the rule's score of each query: its best cosine to a gallery item
    (``threshold``) or to a gallery k-means prototype (``prototype``), or the App. B.1
    detector's margin (``detector``, ``detector_scores``)."""
    if rule.rule == "detector":
        return detector_scores(query, gallery, rule)
    if rule.rule == "prototype":
        from .clustering import spherical_kmeans

        k = rule.clusters or len(torch.unique(_as_tensor(gallery_labels, "cpu")))
        gallery, _ = spherical_kmeans(_as_tensor(gallery, _device(device), torch.float32),
                                      min(k, len(gallery)), seed=rule.seed)
    best, _ = knn(query, gallery, 1, chunk_size=chunk_size, device=device)
    return best[:, 0]


def detector_scores(query: torch.Tensor, gallery: torch.Tensor, rule: OpenSetRule
                    ) -> torch.Tensor:
    """UEM's App. B.1 private-query detector on any embeddings (App. B.2 gives every method the
    same detector): K-Means of each domain (``rule.clusters`` clusters, or the Elbow estimate
    up to ``rule.max_clusters``; no label is read), then ``prototypes.detector_margin``."""
    from .clustering import elbow_k, kmeans
    from .prototypes import detector_margin

    q, g = normalize(_as_tensor(query, "cpu")), normalize(_as_tensor(gallery, "cpu"))
    fits = []
    for i, x in enumerate((q, g)):
        k = rule.clusters or elbow_k(x, rule.max_clusters, seed=rule.seed + i, sample=5000)
        centres, assign, _ = kmeans(x, min(k, len(x)), seed=rule.seed + i)
        fits.append((centres, assign))
    return detector_margin(q, g, *fits[0], *fits[1])


def reject_queries(query: torch.Tensor, gallery: torch.Tensor, rule: OpenSetRule,
                   gallery_labels=None, chunk_size: int = 1024,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """(n_query,) bool: True where the query is rejected (its retrieval is null)."""
    return rule.rejects(acceptance_scores(query, gallery, rule, gallery_labels, chunk_size,
                                          device))


def cross_domain_metrics(query: torch.Tensor, query_labels, gallery: torch.Tensor,
                         gallery_labels, metrics=UCDR_METRICS, open_set: OpenSetRule | None = None,
                         chunk_size: int = 1024,
                         device: str | torch.device | None = None) -> dict[str, float]:
    """UCDR metrics of queries (domain A) against a gallery (domain B): retrieval ``metrics``
    over the shared-class queries, and, when some query classes are absent from the gallery,
    ``open_acc``, ``shared_accept``, ``open_hmean`` and ``open_auroc`` under ``open_set``
    (default rule: threshold 0.5)."""
    q_labels = _as_tensor(query_labels, "cpu").long()
    g_labels = _as_tensor(gallery_labels, "cpu").long()
    shared = torch.isin(q_labels, torch.unique(g_labels))
    if not shared.any():
        raise ValueError("no query class is in the gallery: nothing to retrieve")
    out = retrieval_metrics(query[shared], q_labels[shared], gallery, g_labels, metrics,
                            chunk_size, device)
    if (~shared).any():
        from sklearn.metrics import roc_auc_score

        rule = open_set or OpenSetRule()
        scores = acceptance_scores(query, gallery, rule, g_labels, chunk_size, device)
        rejected = rule.rejects(scores)
        out["open_auroc"] = float(roc_auc_score(shared.numpy(), scores.numpy()))
        open_acc = rejected[~shared].double().mean().item()
        accept = (~rejected[shared]).double().mean().item()
        out["open_acc"], out["shared_accept"] = open_acc, accept
        out["open_hmean"] = (2 * open_acc * accept / (open_acc + accept)
                             if open_acc + accept > 0 else 0.0)
        out["detect_acc"] = (rejected == ~shared).double().mean().item()
        if rule.rule == "detector":     # the cosine-threshold rule alongside, named apart
            thr = OpenSetRule("threshold", rule.threshold)
            thr_scores = acceptance_scores(query, gallery, thr, g_labels, chunk_size, device)
            out["thr_open_auroc"] = float(roc_auc_score(shared.numpy(), thr_scores.numpy()))
            out["thr_detect_acc"] = (thr.rejects(thr_scores) == ~shared).double().mean().item()
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (the embedding convention of every algorithm here)."""
    return F.normalize(x.float(), dim=1)


def eval_batches(split, transform, batch_size: int = 256, num_workers: int = 0,
                 pin_memory: bool = False):
    """The split's images, transformed, in batches of ``batch_size`` in split order: straight
    from the array when the images are in memory and the transform takes whole arrays
    (``batch``: DigitsDG, GlyphsDG; the same tensors as per image, without PIL), else through a
    DataLoader."""
    from torch.utils.data import DataLoader

    from .datasets import ImageDataset

    whole = getattr(transform, "batch", None)
    first = split.samples.arrays(split.indices[:1]) if whole and len(split) else None
    if first is not None and whole(first) is not None:
        # the number a DataLoader draws from torch's RNG (its workers' base seed): training
        # after an evaluation draws what it drew before (records identical to the other path)
        torch.empty((), dtype=torch.int64).random_()
        for start in range(0, len(split), batch_size):
            yield whole(split.samples.arrays(split.indices[start:start + batch_size]))
        return
    for batch in DataLoader(ImageDataset(split, transform), batch_size=batch_size,
                            num_workers=num_workers, pin_memory=pin_memory):
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


@torch.no_grad()
def embed_split(embed_fn, split, transform, batch_size: int = 256, num_workers: int = 0,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Embeddings (CPU, float32) of every image of a split, in split order."""
    out = [embed_fn(x.to(device, non_blocking=True)).float().cpu()
           for x in eval_batches(split, transform, batch_size, num_workers,
                                 torch.device(device).type == "cuda")]
    return torch.cat(out)


def evaluate(embed_fn, eval_splits, transform, metrics=DEFAULT_METRICS, batch_size: int = 256,
             num_workers: int = 0, device: str | torch.device = "cpu",
             chunk_size: int = 1024, ucdr_metrics=UCDR_METRICS,
             open_set: OpenSetRule | None = None,
             embeddings: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Metrics of every :class:`EvalSplit` under flat keys ``<split name>_<metric>``, e.g.
    ``sketch_test_recall@1`` or ``sketch->mnist_test_map@r``. Each split is embedded once;
    ``embeddings`` (a dict, possibly empty) is filled with them, {split name: embeddings}, and
    the ones already in it are reused. UCDR splits (``CrossDomainSplit``) get
    ``cross_domain_metrics`` with ``ucdr_metrics``, e.g. ``mnist->uci_open_map@all`` and
    ``mnist->uci_open_open_acc``."""
    from .datasets.ucdr import CrossDomainSplit

    cache = {} if embeddings is None else embeddings

    def emb(split):
        if split.name not in cache:
            cache[split.name] = embed_split(embed_fn, split, transform, batch_size,
                                            num_workers, device)
        return cache[split.name]

    results = {}
    for ev in eval_splits:
        gallery = ev.gallery
        if isinstance(ev, CrossDomainSplit):
            values = cross_domain_metrics(emb(ev.query), ev.query.labels, emb(gallery),
                                          gallery.labels, ucdr_metrics, open_set, chunk_size,
                                          device)
            results.update({f"{ev.name}_{k}": v for k, v in values.items()})
            continue
        values = retrieval_metrics(
            emb(ev.query), ev.query.labels,
            None if gallery is None else emb(gallery),
            None if gallery is None else gallery.labels,
            metrics=metrics, chunk_size=chunk_size, device=device)
        results.update({f"{ev.name}_{k}": v for k, v in values.items()})
    return results


def proxy_alignment(proxies: torch.Tensor, proxy_labels, embeddings: torch.Tensor, labels,
                    chunk_size: int = 1024) -> float:
    """Proxy-data alignment of PFML Sec. 4.4 / Table 3: the mean over classes of the
    Wasserstein-2 distance between a class's proxies (uniform weights) and the embeddings
    closest to them, W2_c = sqrt(mean_{p in class c} min_{x in class c} ||p - x||^2).

    Matching every proxy to its nearest same-class embedding is an optimal coupling (each
    term is minimal on its own), so this is exactly W2; with one proxy per class it is the
    distance from the proxy to the closest embedding of its class (the paper's footnote).
    Rows are L2-normalised first; classes without embeddings are skipped."""
    p = normalize(_as_tensor(proxies, "cpu").detach())
    x = normalize(_as_tensor(embeddings, "cpu").detach())
    p_labels = _as_tensor(proxy_labels, "cpu").long()
    x_labels = _as_tensor(labels, "cpu").long()
    nearest = torch.full((len(p),), math.inf)
    for start in range(0, len(p), chunk_size):
        pc = p[start:start + chunk_size]
        d2 = ((pc * pc).sum(1, keepdim=True) + (x * x).sum(1) - 2.0 * pc @ x.T).clamp_min(0)
        same = p_labels[start:start + chunk_size].unsqueeze(1) == x_labels.unsqueeze(0)
        nearest[start:start + chunk_size] = d2.masked_fill(~same, math.inf).min(1).values
    per_class = [nearest[p_labels == c].mean().sqrt() for c in torch.unique(p_labels)
                 if torch.isfinite(nearest[p_labels == c]).all()]
    if not per_class:
        raise ValueError("no class has both proxies and embeddings")
    return float(torch.stack(per_class).mean())
