"""UCDR protocols (closed / partial / open) on any SDGDataset, and their metrics: mAP@All and
P@K over shared-class queries, open-set rejection on hand-made embeddings."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from sdgdml.datasets import DigitsDG, SDGDataset
from sdgdml.datasets.samples import ArraySamples
from sdgdml.datasets.ucdr import (CrossDomainSplit, ProtocolError, class_sets, eval_splits,
                                  make_protocol, train_views)
from sdgdml.evaluation import OpenSetRule, cross_domain_metrics, evaluate, reject_queries
from sdgdml.train import main


class TinyFolders(SDGDataset):
    """Another dataset (7 classes, 2 domains, in memory) to show the protocol is generic."""

    NAME = "TinyFolders"
    DOMAINS = ("photo", "art")
    CLASSES = tuple("abcdefg")
    DEFAULT_SOURCE = "photo"
    NEEDS_DATA_DIR = False

    def load_domain(self, domain):
        labels = np.repeat(np.arange(7), 3 if domain == "photo" else 2)
        images = np.zeros((len(labels), 4, 4, 3), np.uint8)
        return ArraySamples(domain, images, labels)


@pytest.mark.parametrize("num_classes", [7, 10, 65, 345])
def test_class_sets(num_classes):
    q, g = class_sets("closed", num_classes)
    assert q == g == tuple(range(num_classes))
    q, g = class_sets("partial", num_classes, seed=1)
    assert g == tuple(range(num_classes)) and set(q) < set(g)
    assert len(q) == round(0.5 * num_classes)
    q, g = class_sets("open", num_classes, seed=1, shared_fraction=0.5)
    # UEM's open set: the retrieval label space is half of the query's (B subset of A)
    assert q == tuple(range(num_classes)) and set(g) < set(q)
    assert len(g) == round(0.5 * num_classes)
    assert class_sets("open", num_classes, seed=1) == (q, g)          # seeded
    assert class_sets("open", num_classes, seed=2) != (q, g)


def test_bad_protocols_are_clear_errors():
    with pytest.raises(ProtocolError, match="known: closed, partial, open"):
        class_sets("universal", 10)
    with pytest.raises(ProtocolError, match="partial_fraction"):
        class_sets("partial", 10, partial_fraction=1.0)


@pytest.mark.parametrize("dataset", [DigitsDG(source="mnist", targets=["uci"]),
                                     TinyFolders(source="photo", targets=["art"])],
                         ids=["DigitsDG", "TinyFolders"])
@pytest.mark.parametrize("kind", ["closed", "partial", "open"])
def test_views_and_splits_hold_exactly_the_protocol_classes(dataset, kind):
    proto = make_protocol(dataset, kind, seed=0)
    q_dom, (g_dom,) = proto.query_domain, proto.gallery_domains
    views = train_views(dataset, proto)
    for domain, classes in ((q_dom, proto.query_classes), (g_dom, proto.gallery_classes)):
        view = views[domain]
        assert view.labels is None                                # no label reaches training
        with pytest.raises(AttributeError, match="no labels"):
            view.samples.labels
        all_labels = dataset.domain(domain).labels
        assert set(all_labels[view.indices]) == set(classes)
        assert len(view) == np.isin(all_labels, classes).sum()    # every image of those classes
    (split,) = eval_splits(dataset, proto)
    assert isinstance(split, CrossDomainSplit) and split.name == f"{q_dom}->{g_dom}_{kind}"
    assert set(split.query.labels) == set(proto.query_classes)
    assert set(split.gallery.labels) == set(proto.gallery_classes)
    assert np.array_equal(split.query.indices, views[q_dom].indices)   # transductive
    if kind == "open":              # B subset of A: A has private classes, B none
        assert proto.query_private and not proto.gallery_private
        assert len(proto.gallery_classes) == round(len(proto.query_classes) / 2)
    if kind == "partial":           # A subset of B
        assert proto.gallery_private and not proto.query_private
        assert len(proto.query_classes) == round(len(proto.gallery_classes) / 2)


class SkewedFolders(TinyFolders):
    """7 classes whose image counts differ per domain (class c: 10 * (c + 1) photos, and
    70 - 10 c art images, except class 3 with 5 art images)."""

    NAME = "SkewedFolders"

    def load_domain(self, domain):
        counts = ([10 * (c + 1) for c in range(7)] if domain == "photo"
                  else [5 if c == 3 else 70 - 10 * c for c in range(7)])
        labels = np.repeat(np.arange(7), counts)
        return ArraySamples(domain, np.zeros((len(labels), 4, 4, 3), np.uint8), labels)


def test_class_subset_keeps_the_classes_with_enough_images_in_every_domain():
    # smallest count per class over the two domains: 10, 20, 30, 5, 30, 20, 10
    dataset = SkewedFolders(source="photo", targets=["art"])
    proto = make_protocol(dataset, "closed", min_images=15)
    assert proto.query_classes == proto.gallery_classes == (1, 2, 4, 5)      # > 15 in both
    proto = make_protocol(dataset, "closed", min_images=15, num_classes=2)
    assert proto.query_classes == (2, 4)                # the two largest smallest-counts
    proto = make_protocol(dataset, "open", seed=0, min_images=15)
    assert proto.query_classes == (1, 2, 4, 5) and len(proto.gallery_classes) == 2
    assert set(proto.gallery_classes) < {1, 2, 4, 5}
    with pytest.raises(ProtocolError, match="only 4 classes"):
        make_protocol(dataset, "closed", min_images=15, num_classes=7)


def _onehot(idx, d=8, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.one_hot(torch.as_tensor(idx), d).float()
    return F.normalize(x + noise * torch.randn(x.shape, generator=g), dim=1)


def test_open_set_decision_on_a_hand_made_case():
    # gallery: classes 0 and 1 around axes 0 and 1; queries: 0, 1 (shared), 2 and 3 (private)
    gallery = _onehot([0, 0, 0, 1, 1, 1], noise=0.1, seed=1)
    g_labels = [0, 0, 0, 1, 1, 1]
    query = torch.cat([_onehot([0, 1], noise=0.1, seed=2),
                       _onehot([2], noise=0.1, seed=3),                # far from the gallery
                       F.normalize(torch.tensor([[0.9, 0, 0, 0.44, 0, 0, 0, 0]]), dim=1)])
    q_labels = [0, 1, 2, 3]                                            # class 3 lies near class 0
    rule = OpenSetRule("threshold", threshold=0.5)
    rejected = reject_queries(query, gallery, rule)
    assert rejected.tolist() == [False, False, True, False]
    out = cross_domain_metrics(query, q_labels, gallery, g_labels, open_set=rule)
    assert out["open_acc"] == 0.5 and out["shared_accept"] == 1.0
    assert out["open_hmean"] == pytest.approx(2 * 0.5 / 1.5)
    assert out["map@all"] == 1.0 and out["precision@1"] == 1.0
    assert out["open_auroc"] == 1.0           # both shared queries outscore both private ones
    best = (query @ gallery.T).max(1).values
    assert best[3] < 0.95 < best[:2].min()
    tighter = cross_domain_metrics(query, q_labels, gallery, g_labels,
                                   open_set=OpenSetRule("threshold", threshold=0.95))
    assert tighter["open_acc"] == 1.0 and tighter["shared_accept"] == 1.0
    reject_all = cross_domain_metrics(query, q_labels, gallery, g_labels,
                                      open_set=OpenSetRule("threshold", threshold=1.01))
    assert reject_all["open_acc"] == 1.0 and reject_all["open_hmean"] == 0.0
    proto = cross_domain_metrics(query, q_labels, gallery, g_labels,
                                 open_set=OpenSetRule("prototype", threshold=0.5))
    assert proto["open_acc"] == 0.5 and proto["shared_accept"] == 1.0
    with pytest.raises(ValueError, match="known: threshold, prototype, detector"):
        OpenSetRule("entropy")


def test_retrieval_metrics_use_only_shared_queries_and_match_sklearn():
    g = torch.Generator().manual_seed(0)
    gallery = F.normalize(torch.randn(40, 6, generator=g), dim=1)
    g_labels = torch.randint(0, 3, (40,), generator=g)
    query = F.normalize(torch.randn(12, 6, generator=g), dim=1)
    q_labels = torch.tensor([0, 1, 2, 5] * 3)                          # class 5: private
    out = cross_domain_metrics(query, q_labels, gallery, g_labels, ("map@all", "precision@5"))
    sims = query @ gallery.T
    shared = q_labels != 5
    aps = [average_precision_score((g_labels == q_labels[i]).numpy(), sims[i].numpy())
           for i in np.flatnonzero(shared.numpy())]
    assert out["map@all"] == pytest.approx(np.mean(aps))
    top5 = sims[shared].topk(5, dim=1).indices
    p5 = (g_labels[top5] == q_labels[shared].unsqueeze(1)).double().mean().item()
    assert out["precision@5"] == pytest.approx(p5)
    auroc = roc_auc_score(shared.numpy(), sims.max(1).values.numpy())
    assert out["open_auroc"] == pytest.approx(auroc)
    closed = cross_domain_metrics(query[shared], q_labels[shared], gallery, g_labels)
    assert "open_acc" not in closed


def test_evaluate_routes_cross_domain_splits(digits):
    dataset = DigitsDG(source="mnist", targets=["uci"])
    proto = make_protocol(dataset, "open", seed=0)
    torch.manual_seed(0)
    proj = torch.randn(3 * 32 * 32, 16)

    def embed(x):
        return F.normalize(x.flatten(1) @ proj, dim=1)

    out = evaluate(embed, eval_splits(dataset, proto), dataset.eval_transform(32),
                   open_set=OpenSetRule("threshold", 0.9))
    assert {"mnist->uci_open_map@all", "mnist->uci_open_precision@1", "mnist->uci_open_open_acc",
            "mnist->uci_open_shared_accept", "mnist->uci_open_open_hmean",
            "mnist->uci_open_open_auroc"} <= set(out)


def test_train_rejects_ucdr_with_a_supervised_algorithm(tmp_path):
    with pytest.raises(SystemExit, match="unsupervised"):
        main(["--algorithm", "ProxyAnchor", "--ucdr", "open", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="exclude each other"):
        main(["--algorithm", "UEM", "--targets", "uci", "--ucdr", "open", "--protocol", "cross",
              "--output_dir", str(tmp_path)])


def test_protocols_on_a_real_office31_tree_train_uem_end_to_end(tmp_path):
    """Office-31 in its distributed layout (<domain>/images/<class>/*.jpg, real JPEG files):
    the partial protocol's views and splits, then a short UEM run that writes the metrics."""
    import json

    import datatrees
    from sdgdml.datasets import Office31, create_dataset
    from sdgdml.records import read_records

    datatrees.folder_tree(tmp_path / "office31", {d: d for d in Office31.DOMAINS},
                          Office31.CLASSES, per_class=2, images_subdir="images")
    dataset = create_dataset("Office31", tmp_path, "amazon", ["dslr"])
    proto = make_protocol(dataset, "partial", seed=0)
    assert len(proto.query_classes) == 16 and len(proto.gallery_classes) == 31
    views = train_views(dataset, proto)
    assert len(views["amazon"]) == 32 and len(views["dslr"]) == 62
    (split,) = eval_splits(dataset, proto)
    assert split.name == "amazon->dslr_partial" and len(split.gallery) == 62
    small = {"backbone": "digits_cnn", "pretrained": False, "image_size": 32, "embed_dim": 16,
             "batch_size": 8, "freeze_bn": False, "uem_init": "scratch",
             "uem_cluster_every": 1.0, "uem_idse_fraction": 0.5, "uem_elbow_max_k": 6}
    out = tmp_path / "run"
    main(["--algorithm", "UEM", "--split", "Office31:amazon->dslr", "--data_dir", str(tmp_path),
          "--ucdr", "partial", "--steps", "8", "--checkpoint_freq", "8", "--output_dir",
          str(out), "--quiet",
          "--hparams", json.dumps(small)])
    last = read_records(out / "results.jsonl")[-1]
    assert 0 < last["amazon->dslr_partial_map@all"] <= 1
    assert "amazon->dslr_partial_open_acc" not in last         # no private query classes
    assert "uem_sn2m" in last
