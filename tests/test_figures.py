"""Paper-ready figures (sdgdml.figures, tiny inputs): each is written as a vector PDF and a
>= 200 dpi PNG that read back as non-blank images; axes carry units, R@K is in %, the
learning rates are on a log scale, legends sit outside the axes, a chance line is drawn; the
embedding map colours the unseen classes by class and names its point count; the gallery's
title gives the split's R@1 and each retrieved image its rank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from sdgdml import figures
from sdgdml.datasets.samples import ArraySamples, Split


def check_files(files):
    """PNG >= PNG_DPI dpi and not blank; PDF a PDF (vector: text as text, not pixels)."""
    png, pdf = files[0], files[1]
    assert png.suffix == ".png" and pdf == png.with_suffix(".pdf")
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert min(im.info["dpi"]) >= figures.PNG_DPI - 0.5 >= 199.5
        assert np.asarray(im.convert("L")).std() > 5        # not a blank canvas
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and b"/Font" in data and len(data) > 2000


@pytest.fixture
def captured(monkeypatch):
    """The Figure objects the functions save (to inspect axes), files still written."""
    figs = []
    save = figures._save

    def keep(fig, path):
        figs.append(fig)
        return save(fig, path)
    monkeypatch.setattr(figures, "_save", keep)
    return figs


def legend_outside(ax):
    legend = ax.get_legend()
    assert legend is not None
    canvas = FigureCanvasAgg(ax.figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.x0 >= axes_box.x1 - 1          # right of the data, not over it


def test_training_curves(tmp_path, captured):
    records = [{"step": s, "loss": 1 / (s + 1), "lr_backbone": 1e-3 * (4 - s),
                "lr_proxies": 0.1, "a_test_recall@1": 0.1 * s, "a_val_recall@1": 0.1 * s + 0.05}
               for s in range(1, 5)]             # the backbone's lr ends at 0 (cosine)
    files = figures.training_curves(records, tmp_path / "c.png", num_classes=5)
    check_files(files)
    loss, lr, metric = captured[0].axes
    assert lr.get_yscale() == "log" and "log scale" in lr.get_ylabel()
    assert [len(line.get_xdata()) for line in lr.get_lines()] == [3, 4]     # lr 0 left out
    assert metric.get_ylabel() == "R@1 (%)" and loss.get_xlabel() == "training step"
    ys = np.concatenate([line.get_ydata() for line in metric.get_lines()])
    assert ys.max() == pytest.approx(45.0)                        # % , not a fraction
    chance = [line for line in metric.get_lines() if "chance" in line.get_label()]
    assert chance and chance[0].get_ydata()[0] == pytest.approx(20.0)   # 1/5 classes
    for ax in captured[0].axes:
        legend_outside(ax)


def test_chance_levels():
    assert figures.chance_level("recall@1", 4) == pytest.approx(0.25)
    assert figures.chance_level("recall@2", 2) == pytest.approx(0.75)
    assert figures.chance_level("map@r", 10) == pytest.approx(0.1)
    assert figures.chance_level("nmi", 10) is None


def test_bars_and_curves_in_percent_with_a_chance_line(tmp_path, captured):
    check_files(figures.grouped_bars({"A": [(60.0, 2.0), (50.0, float("nan"))]}, ["x", "avg"],
                                     tmp_path / "b.png", "t", "R@1 (%)", 20.0))
    check_files(figures.line_curves({"A": ([0, 10], [40.0, 60.0], [1.0, float("nan")])},
                                    tmp_path / "l.png", "t", ylabel="R@1 (%)", chance=20.0))
    for fig in captured:
        ax = fig.axes[0]
        assert ax.get_ylabel() == "R@1 (%)" and ax.get_xlabel()
        assert any(line.get_label() == "chance" for line in ax.get_lines())
        legend_outside(ax)


def test_embedding_map_colours_unseen_classes_by_class(tmp_path, captured, monkeypatch):
    monkeypatch.setattr(figures, "project_2d", lambda x, method, seed: (x[:, :2], "PCA"))
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(5, 1, (20, 8))])
    seen = np.array([True, False] * 20)
    labels = np.arange(40) % 4
    check_files(figures.embedding_map(x, ["a"] * 20 + ["b"] * 20, seen, tmp_path / "m.png",
                                      method="tsne", labels=labels,
                                      class_names=["zero", "one", "two", "three"]))
    fig = captured[0]
    assert fig._suptitle.get_text() == "PCA of 40 embeddings"
    by_class = fig.axes[2]
    texts = [t.get_text() for t in by_class.get_legend().get_texts()]
    assert texts == ["seen classes (20)", "one", "three"]      # unseen labels 1 and 3
    for ax in fig.axes:
        legend_outside(ax)


def test_gallery_title_has_the_splits_recall_and_ranks(tmp_path, captured):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    images = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    split = Split("d_test", ArraySamples("d", images, labels), np.arange(12), labels)
    emb = F.normalize(torch.eye(3)[labels] + 0.3 * torch.randn(12, 3,
                                                               generator=torch.Generator().manual_seed(0)), dim=1)
    r1 = figures.split_recall_at_1(split, emb, None, None)
    sims = emb @ emb.T - 2 * torch.eye(12)
    assert r1 == pytest.approx(float((labels[sims.argmax(1).numpy()] == labels).mean()))
    files = figures.retrieval_gallery(split, emb, None, None, tmp_path / "g", ["a", "b", "c"],
                                      n_queries=3, k=2, title="toy")
    check_files(files)
    assert files[2].suffix == ".html" and "rank 2" in files[2].read_text()
    fig = captured[0]
    assert fig._suptitle.get_text() == f"toy: R@1 {100 * r1:.1f}% over its 12 queries; 3 shown"
    assert fig.axes[1].get_title().startswith("rank 1: ")
