"""Retrieval metrics against brute-force references and hand-made cases with known answers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from sklearn.neighbors import NearestNeighbors

from sdgdml.evaluation import knn, retrieval_metrics


def _data(n=300, d=16, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = F.normalize(centres[y] + 1.2 * torch.randn(n, d, generator=g), dim=1)
    return x, y


def _sklearn_neighbours(query, gallery, k, exclude_self):
    nn_ = NearestNeighbors(n_neighbors=k + int(exclude_self), algorithm="brute",
                           metric="cosine").fit(gallery.numpy())
    idx = nn_.kneighbors(query.numpy(), return_distance=False)
    if exclude_self:
        idx = np.array([[j for j in row if j != i][:k] for i, row in enumerate(idx)])
    return idx


def _brute_force(query, q_labels, gallery, g_labels, exclude_self, ks):
    """Reference metrics from sklearn neighbours and explicit Python loops."""
    q_labels, g_labels = q_labels.numpy(), g_labels.numpy()
    n_g = len(g_labels)
    order = _sklearn_neighbours(query, gallery, n_g - int(exclude_self), exclude_self)
    out = {f"recall@{k}": np.mean([(g_labels[row[:k]] == q).any()
                                   for row, q in zip(order, q_labels)]) for k in ks}
    maps, aps = [], []
    for i, (row, q) in enumerate(zip(order, q_labels)):
        rel = g_labels[row] == q
        r = int(rel.sum())
        if r == 0:
            continue
        prec = [rel[:j + 1].mean() for j in range(r)]
        maps.append(sum(p for p, h in zip(prec, rel[:r]) if h) / r)
        sims = (gallery @ query[i]).numpy()
        mask = np.ones(n_g, bool)
        if exclude_self:
            mask[i] = False
        aps.append(average_precision_score(g_labels[mask] == q, sims[mask]))
    out["map@r"], out["map@all"] = np.mean(maps), np.mean(aps)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_within_domain_matches_brute_force(seed):
    x, y = _data(seed=seed)
    got = retrieval_metrics(x, y, metrics=["recall@1", "recall@2", "recall@4", "recall@8",
                                           "map@r", "map@all"], chunk_size=37)
    ref = _brute_force(x, y, x, y, True, [1, 2, 4, 8])
    for k, v in ref.items():
        # map@all: float32 rounding can swap near-equal similarities (1e-6 level)
        assert got[k] == pytest.approx(v, abs=1e-5 if k == "map@all" else 1e-9), k


@pytest.mark.parametrize("seed", [3, 4])
def test_cross_domain_matches_brute_force(seed):
    q, qy = _data(n=120, seed=seed)
    g, gy = _data(n=250, seed=seed + 10)
    got = retrieval_metrics(q, qy, g, gy, metrics=["recall@1", "recall@4", "map@r", "map@all"],
                            chunk_size=50)
    ref = _brute_force(q, qy, g, gy, False, [1, 4])
    for k in got:
        assert got[k] == pytest.approx(ref[k], abs=1e-5 if k == "map@all" else 1e-9), k


def test_knn_matches_sklearn_and_never_returns_self():
    x, _ = _data(n=200, d=8, seed=5)
    _, idx = knn(x, x, 5, exclude_self=True, chunk_size=16)
    assert not (idx == torch.arange(200).unsqueeze(1)).any()
    assert (idx.numpy() == _sklearn_neighbours(x, x, 5, True)).all()


def test_hand_made_case_with_known_answers():
    # four points on a circle: classes a,a,b,b; angles 0, 10, 90, 180 degrees (exact coordinates)
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    x = torch.tensor([[1.0, 0.0], [c, s], [0.0, 1.0], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    m = retrieval_metrics(x, y, metrics=["recall@1", "recall@2", "map@r", "precision@1"])
    # nearest neighbours: 0->1 (hit), 1->0 (hit), 2->1 (miss), 3->2 (hit)
    assert m["recall@1"] == pytest.approx(3 / 4)
    assert m["precision@1"] == pytest.approx(3 / 4)
    # R = 1 for every query: MAP@R = precision@1 here
    assert m["map@r"] == pytest.approx(3 / 4)
    # 2's ranking: 1 (10 deg -> 80 apart), 0 (90 apart), 3 (90 apart): index order breaks the tie
    # -> the same-class item (3) comes third: recall@2 misses it
    assert m["recall@2"] == pytest.approx(3 / 4)
    # K beyond the 3 other items: every query's one relevant item is found, P@5 = 1/5
    m = retrieval_metrics(x, y, metrics=["recall@5", "precision@5"])
    assert m == {"recall@5": 1.0, "precision@5": pytest.approx(1 / 5)}


def test_map_at_r_known_value():
    # query 0 (class 0) with R = 3 relevant items ranked at positions 1, 3 and 5:
    # MAP@R = (1/3) * (1/1 + 2/3) = 5/9 (positions beyond R do not count)
    gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    gallery = F.normalize(gallery, dim=1)
    g_labels = torch.tensor([0, 1, 0, 1, 0])
    query = torch.tensor([[1.0, 0.0]])
    m = retrieval_metrics(query, torch.tensor([0]), gallery, g_labels,
                          metrics=["map@r", "map@all", "recall@1"])
    assert m["map@r"] == pytest.approx(5 / 9)
    assert m["map@all"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert m["recall@1"] == 1.0


def test_ties_break_by_ascending_gallery_index():
    gallery = torch.tensor([[1.0, 0.0]] * 6)                     # six identical items
    g_labels = torch.tensor([0, 1, 2, 3, 4, 5])
    for k in (1, 3, 6):
        _, idx = knn(torch.tensor([[1.0, 0.0]]), gallery, k)
        assert idx.tolist() == [list(range(k))]
    # a query with a tie straddling the k-th position: the lower index wins, every time
    m = retrieval_metrics(torch.tensor([[1.0, 0.0]]), torch.tensor([2]), gallery, g_labels,
                          metrics=["recall@2", "recall@3"])
    assert m == {"recall@2": 0.0, "recall@3": 1.0}


def test_chunk_size_does_not_change_results():
    x, y = _data(n=257, seed=9)
    ref = retrieval_metrics(x, y, metrics=["recall@1", "recall@8", "map@r", "map@all"],
                            chunk_size=1024)
    for chunk in (1, 10, 256):
        assert retrieval_metrics(x, y, metrics=list(ref), chunk_size=chunk) == ref


def test_query_without_relevant_items_counts_as_miss_and_is_left_out_of_map():
    x = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    y = torch.tensor([0, 0, 1])                        # class 1 has a single image
    m = retrieval_metrics(x, y, metrics=["recall@1", "map@r"])
    assert m["recall@1"] == pytest.approx(2 / 3)
    assert m["map@r"] == pytest.approx(1.0)


def test_unknown_metric_and_bad_k_are_clear_errors():
    x, y = _data(n=10)
    with pytest.raises(ValueError, match="unknown metric"):
        retrieval_metrics(x, y, metrics=["ndcg"])
    with pytest.raises(ValueError, match="exceeds"):
        knn(x, x, 10, exclude_self=True)


def test_class_recall_averages_classes_not_queries():
    # class 0: three tight images (all hit); class 1: two images, each nearer to class 0 (miss)
    x = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.98, 0.02],
                                  [0.7, 0.3], [0.5, -0.5]]), dim=1)
    y = torch.tensor([0, 0, 0, 1, 1])
    m = retrieval_metrics(x, y, metrics=["recall@1", "class_recall@1"])
    assert m["recall@1"] == pytest.approx(3 / 5)          # per query
    assert m["class_recall@1"] == pytest.approx(0.5)      # (1 + 0) / 2


def test_class_recall_equals_recall_on_balanced_classes_computed_by_hand():
    x, y = _data(n=200, classes=4, seed=3)
    m = retrieval_metrics(x, y, metrics=["class_recall@2"])
    _, idx = knn(x, x, 2, exclude_self=True)
    hit = (y[idx] == y.unsqueeze(1)).any(1).double()
    per_class = [hit[y == c].mean().item() for c in torch.unique(y)]
    assert m["class_recall@2"] == pytest.approx(np.mean(per_class), abs=1e-12)


def test_nmi_ami_equal_scikit_learn_kmeans_on_a_fixed_embedding():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    x, y = _data(n=300, classes=7, seed=5)
    m = retrieval_metrics(x, y, metrics=["nmi", "ami", "recall@1"])
    clusters = KMeans(n_clusters=7, n_init=10, random_state=0).fit_predict(x.numpy())
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(y.numpy(), clusters), abs=1e-12)
    assert m["ami"] == pytest.approx(adjusted_mutual_info_score(y.numpy(), clusters), abs=1e-12)
    assert 0.05 < m["ami"] < m["nmi"] < 0.95      # noisy clusters: informative, not perfect


def test_nmi_ami_are_one_for_separated_classes_and_near_zero_for_random_labels():
    centres = torch.eye(4) * 10
    y = torch.arange(4).repeat_interleave(25)
    x = F.normalize(centres[y] + 0.01 * torch.randn(100, 4, generator=torch.Generator()
                                                        .manual_seed(0)), dim=1)
    assert retrieval_metrics(x, y, metrics=["nmi", "ami"]) == {"nmi": pytest.approx(1.0),
                                                               "ami": pytest.approx(1.0)}
    noise = y[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    assert abs(retrieval_metrics(x, noise, metrics=["ami"])["ami"]) < 0.05
