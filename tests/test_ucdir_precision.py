"""``ucdir_precision@K``: P@K as UCDIR's released evaluation computes it (github
conghuihu/UCDIR, main.py ``retrieval_precision_cal``): each query's top min(K, R) items judged,
hits pooled over the queries. Our ``precision@K`` divides every query by K."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdgdml.evaluation import check_metrics, cross_domain_metrics, retrieval_metrics


def ucdir_reference(query, q_labels, gallery, g_labels, k):
    """UCDIR's computation, restated: cosine similarities, each query's gallery sorted by
    decreasing similarity, the first min(k, R) positions judged; sum of hits over sum of
    min(k, R)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    order = np.argsort(-(q @ g.T), axis=1)
    correct = g_labels[order] == q_labels[:, None]
    judged = np.minimum(k, (g_labels[None, :] == q_labels[:, None]).sum(1))
    hits = sum(correct[i, :judged[i]].sum() for i in range(len(q_labels)))
    return hits / judged.sum()


def test_a_hand_made_case_where_the_two_conventions_differ():
    # gallery: class 0 has 1 item, class 1 has 3; queries of class 0 and 1, k = 2
    gallery = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [0.2, 1.0]]), dim=1)
    g_labels = [0, 1, 1, 1]
    query = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0]]), dim=1)
    q_labels = [0, 1]
    out = retrieval_metrics(query, q_labels, gallery, g_labels,
                            ["precision@2", "ucdir_precision@2"])
    # query 0: ranking [0 (hit), 3 (miss)]; R = 1 -> UCDIR judges 1 position: 1 / 1
    # query 1: ranking [1, 2 (hits)]; R = 3 -> 2 positions: 2 / 2
    assert out["ucdir_precision@2"] == 1.0                  # (1 + 2) / (1 + 2)
    assert out["precision@2"] == pytest.approx((1 / 2 + 2 / 2) / 2)   # ours: / k per query


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ucdir_precision_reproduces_ucdirs_computation(seed):
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(60, 8)).astype(np.float32)
    query = rng.normal(size=(25, 8)).astype(np.float32)
    g_labels = rng.choice(5, size=60, p=[0.5, 0.3, 0.1, 0.07, 0.03])   # some classes rare
    q_labels = rng.integers(0, 5, size=25)
    q_labels[:2] = 7                           # classes absent from the gallery (R = 0)
    counts = np.bincount(g_labels, minlength=8)
    assert (counts[np.unique(q_labels)] < 10).any()          # R < K occurs for K = 10
    ks = [1, 5, 10, 40]
    out = retrieval_metrics(F.normalize(torch.from_numpy(query), dim=1), q_labels,
                            F.normalize(torch.from_numpy(gallery), dim=1), g_labels,
                            [f"ucdir_precision@{k}" for k in ks] + ["precision@10"])
    for k in ks:
        assert out[f"ucdir_precision@{k}"] == pytest.approx(
            ucdir_reference(query, q_labels, gallery, g_labels, k), abs=1e-12), k
    assert out["ucdir_precision@10"] != pytest.approx(out["precision@10"])


def test_the_name_is_known_and_available_to_ucdr_splits():
    check_metrics(["ucdir_precision@50", "ucdir_precision@200"])
    with pytest.raises(ValueError, match=r"ucdir_precision@K \(K >= 1\)"):
        check_metrics(["ucdir_precision@0"])
    gallery = F.normalize(torch.eye(3)[[0, 0, 1]] + 0.01, dim=1)
    out = cross_domain_metrics(torch.eye(3)[:2], [0, 1], gallery, [0, 0, 1],
                               metrics=["ucdir_precision@2"])
    assert out["ucdir_precision@2"] == 1.0          # (2 + 1) / (2 + 1)
