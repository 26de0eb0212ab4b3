"""Figures of what a run learned (matplotlib, object-oriented API: no pyplot state, no display).

- ``retrieval_gallery``: queries, each followed by its top-K retrieved images (rank 1..K)
  framed green (same class) or red (another class), titled with the split's R@1 over all its
  queries; a PNG/PDF and a small self-contained HTML page (images inline as data URIs, a link
  to the PNG beside it). Queries are a seeded, class-balanced choice (``choose_queries``), the
  same on every call.
- ``embedding_map``: a 2-D projection of embeddings (UMAP when ``umap-learn`` is installed,
  else t-SNE from scikit-learn), coloured by domain, by seen/unseen class and (given the
  labels) the unseen classes by class; the title names the point count.
- ``training_curves``: losses, learning rates (log scale) and a metric (in %, with its chance
  level) over the steps of ``results.jsonl``.
- ``example_grid``: example images of a dataset, one row per domain (e.g. GlyphsDG's figure in
  the README).
- ``grouped_bars`` / ``line_curves``: mean ± standard error bars and curves (``collect_results.py
  --plots``), in %, with a chance line.

Ready for a paper: every figure is written twice, a vector PDF and a ``PNG_DPI`` PNG; axes are
labelled with their units, legends sit outside the data. Each function takes arrays, records
or splits and a path, and returns the files it wrote (PNG first).
"""
from __future__ import annotations

import base64
import html
import importlib.util
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .evaluation import ranking

CORRECT, WRONG, QUERY = "#1a9850", "#d73027", "#4d4d4d"
METRIC_SUFFIXES = ("_nmi", "_ami", "_open_acc", "_shared_accept", "_open_hmean", "_open_auroc",
                 "_proxy_w2")
NOT_LOSSES = ("step", "epoch", "step_time", "eval_time", "mem_gb", "schema_version")
PNG_DPI = 200
CHANCE_STYLE = {"color": "0.4", "linestyle": ":", "linewidth": 1.2}
PERCENT_METRICS = ("recall@", "class_recall@", "precision@", "map@")


def is_percent(metric: str) -> bool:
    """Whether ``metric`` is a fraction shown in % (recall, precision, mAP, NMI, accuracies)."""
    return metric.startswith(PERCENT_METRICS) or metric in ("nmi", "ami") or "acc" in metric


def chance_level(metric: str, num_classes: int) -> float | None:
    """The expected value of ``metric`` for a random ranking over ``num_classes`` balanced
    classes, as a fraction: R@K = 1 - (1 - 1/C)^K; P@K, MAP@R, mAP@all about 1/C; None for
    other metrics."""
    if num_classes < 1:
        return None
    name, _, k = metric.partition("@")
    if name in ("recall", "class_recall") and k.isdigit():
        return 1 - (1 - 1 / num_classes) ** int(k)
    if name in ("precision", "map"):
        return 1 / num_classes
    return None


def _legend_outside(ax, **kwargs) -> None:
    """The legend right of the axes, never over the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  fontsize=kwargs.pop("fontsize", 7), **kwargs)


# ---------------------------------------------------------------------------- examples
def example_grid(rows: dict[str, list], path: str | Path, title: str = "",
                 column_names: list[str] | None = None) -> list[Path]:
    """A grid of images: one row per name of ``rows`` ({row name: [uint8 HxWx3 image, ...]}),
    the row name on its left, ``column_names`` (e.g. the class of each column) on top."""
    n_cols = max(len(images) for images in rows.values())
    fig = Figure(figsize=(0.55 * n_cols + 1.0, 0.6 * len(rows) + 0.5), dpi=100)
    axes = np.asarray(fig.subplots(len(rows), n_cols, squeeze=False))
    for r, (name, images) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    for c, name in enumerate(column_names or []):
        axes[0, c].set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------- galleries
def choose_queries(labels, n: int, seed: int = 0) -> list[int]:
    """``n`` query indices, one class after another (sorted class ids, round robin), each
    class's queries in a seeded random order: deterministic and covering many classes."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    per_class = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen = []
    while len(chosen) < min(n, len(labels)):
        for queue in per_class:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    return chosen


def _image(split, i: int):
    return split.samples.load(int(split.indices[i]))


def _class_name(class_names, label: int) -> str:
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def _gallery_rows(query, query_emb, gallery, gallery_emb, n_queries, k, seed):
    """[(query index, [(gallery index, similarity, correct), ...]), ...]."""
    chosen = choose_queries(query.labels, n_queries, seed)
    if gallery is None:             # leave-one-out: rank against every other query
        sims, idx = ranking(query_emb, None, k)
        sims, idx, gallery = sims[chosen], idx[chosen], query
    else:
        sims, idx = ranking(query_emb[chosen], gallery_emb, k)
    return [(q, [(int(g), float(s), bool(gallery.labels[g] == query.labels[q]))
                 for g, s in zip(idx[r].tolist(), sims[r].tolist())])
            for r, q in enumerate(chosen)]


def _save(fig: Figure, path: str | Path) -> list[Path]:
    """``path`` as a ``PNG_DPI`` PNG and beside it the same figure as a vector PDF."""
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=PNG_DPI, bbox_inches="tight")
    fig.savefig(png.with_suffix(".pdf"), bbox_inches="tight")
    return [png, png.with_suffix(".pdf")]


def _gallery_png(rows, query, target, path, class_names, title):
    k = max(len(r) for _, r in rows)
    fig = Figure(figsize=(1.25 * (k + 1), 1.45 * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), k + 1, squeeze=False)
    for row, (q, results) in zip(axes, rows):
        cells = [(query, q, QUERY, f"query\n{_class_name(class_names, query.labels[q])}")]
        cells += [(target, g, CORRECT if ok else WRONG,
                   f"rank {rank}: {_class_name(class_names, target.labels[g])}\ncos {s:.3f}")
                  for rank, (g, s, ok) in enumerate(results, 1)]
        for ax in row:
            ax.set_axis_off()
        for ax, (split, i, colour, text) in zip(row, cells):
            ax.set_axis_on()
            ax.imshow(np.asarray(_image(split, i)), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4 if colour != QUERY else 2)
            ax.set_title(text, fontsize=6.5, color=colour)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _data_uri(image, max_side: int = 128) -> str:
    image = image.copy()
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _gallery_html(rows, query, target, path, png_name, class_names, title):
    def cell(split, i, colour, text):
        return (f'<td><img src="{_data_uri(_image(split, i))}" style="border:4px solid {colour}"'
                f' alt="{html.escape(text)}"><br>{html.escape(text)}</td>')

    k = max(len(r) for _, r in rows)
    body = ["<tr><th>query</th>" + "".join(f"<th>rank {r}</th>" for r in range(1, k + 1))
            + "</tr>"]
    for q, results in rows:
        cells = [cell(query, q, QUERY, f"query: {_class_name(class_names, query.labels[q])}")]
        cells += [cell(target, g, CORRECT if ok else WRONG,
                       f"{_class_name(class_names, target.labels[g])} ({s:.3f})")
                  for g, s, ok in results]
        body.append("<tr>" + "".join(cells) + "</tr>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td{{text-align:center;font-size:11px;padding:4px}}
img{{width:96px;height:96px;object-fit:contain;image-rendering:pixelated}}</style></head>
<body><h3>{html.escape(title)}</h3>
<p>Each row: a query (grey frame), then its nearest gallery images by cosine similarity
(green: same class, red: another class). <a href="{html.escape(png_name)}">PNG</a></p>
<table>
{chr(10).join(body)}
</table></body></html>
"""
    path.write_text(page)
    return path


def split_recall_at_1(query, query_emb, gallery, gallery_emb) -> float:
    """R@1 of the whole split: the fraction of its queries whose nearest gallery item (the
    nearest other query when ``gallery`` is None) has the query's class."""
    _, idx = ranking(query_emb, None if gallery is None else gallery_emb, 1)
    target = query if gallery is None else gallery
    nearest = np.asarray(target.labels)[np.asarray(idx)[:, 0]]
    return float(np.mean(nearest == np.asarray(query.labels)))


def retrieval_gallery(query, query_emb, gallery, gallery_emb, out_stem: str | Path,
                      class_names=(), n_queries: int = 8, k: int = 5, seed: int = 0,
                      title: str = "") -> list[Path]:
    """``<out_stem>.png`` / ``.pdf`` and ``<out_stem>.html``: ``n_queries`` queries of the
    ``query`` split (``choose_queries``), each with its ``k`` nearest items of ``gallery``
    (None: the other queries, leave-one-out), ranks 1..k; the title gives the split's R@1
    over all its queries (``split_recall_at_1``). ``*_emb``: the splits' L2-normalised
    embeddings, in split order."""
    out_stem = Path(out_stem)
    rows = _gallery_rows(query, query_emb, gallery, gallery_emb, n_queries, k, seed)
    target = query if gallery is None else gallery
    r1 = split_recall_at_1(query, query_emb, gallery, gallery_emb)
    title = (f"{title}: " if title else "") + (f"R@1 {100 * r1:.1f}% over its "
                                               f"{len(query.labels)} queries; {len(rows)} shown")
    png, pdf = _gallery_png(rows, query, target, out_stem.with_suffix(".png"), class_names,
                            title)
    page = _gallery_html(rows, query, target, out_stem.with_suffix(".html"), png.name,
                         class_names, title)
    return [png, pdf, page]


# ----------------------------------------------------------------------------- embedding map
def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


_TSNE_ONE_THREAD_BELOW = 5000


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates and the method's name: ``umap`` (umap-learn), ``tsne``
    (scikit-learn, PCA initialisation, perplexity min(30, (n - 1) / 3)) or ``auto``.

    t-SNE runs single-threaded below ``_TSNE_ONE_THREAD_BELOW`` points: for a few hundred
    points its OpenMP workers spend far more time waiting for each other (and, on a busy
    machine, for a core) than computing -- 45 points took 16 CPU-s with the default threads
    and 0.1 CPU-s with one, for the same embedding."""
    if method == "auto":
        method = "umap" if umap_available() else "tsne"
    if method == "umap":
        if not umap_available():
            raise ValueError("--map_method umap needs umap-learn (pip install umap-learn)")
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "UMAP"
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    threads = 1 if len(x) < _TSNE_ONE_THREAD_BELOW else None
    with threadpool_limits(limits=threads):
        return tsne.fit_transform(np.asarray(x, np.float32)), "t-SNE"


def embedding_map(embeddings, domains, seen, path: str | Path, method: str = "auto",
                  seed: int = 0, title: str = "", labels=None, class_names=()) -> list[Path]:
    """Panels over the same 2-D projection of ``embeddings``: points coloured by ``domains``
    (one name per point), by ``seen`` (True: a seen/training class) and, given ``labels``
    (class ids), the unseen-class points by class (named by ``class_names``). The title names
    the projection and the number of points."""
    x = np.asarray(embeddings, np.float32)
    domains, seen = np.asarray(domains), np.asarray(seen, bool)
    xy, name = project_2d(x, method, seed)
    by_label = labels is not None and (~seen).any()
    fig = Figure(figsize=(15.5 if by_label else 10.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 3 if by_label else 2)
    for i, d in enumerate(dict.fromkeys(domains)):
        m = domains == d
        axes[0].scatter(xy[m, 0], xy[m, 1], s=4, color=f"C{i % 10}", label=f"{d} ({m.sum()})",
                        alpha=0.7, linewidths=0)
    for flag, colour, text in ((True, "#4575b4", "seen classes"),
                               (False, "#f46d43", "unseen classes")):
        m = seen == flag
        if m.any():
            axes[1].scatter(xy[m, 0], xy[m, 1], s=4, color=colour, label=f"{text} ({m.sum()})",
                            alpha=0.7, linewidths=0)
    panels = [(axes[0], "by domain"), (axes[1], "by seen / unseen class")]
    if by_label:
        labels = np.asarray(labels)
        axes[2].scatter(xy[seen, 0], xy[seen, 1], s=3, color="0.85", linewidths=0,
                        label=f"seen classes ({seen.sum()})")
        cmap = _class_colours(np.unique(labels[~seen]))
        for c, colour in cmap.items():
            m = ~seen & (labels == c)
            axes[2].scatter(xy[m, 0], xy[m, 1], s=5, color=colour, alpha=0.8, linewidths=0,
                            label=_class_name(class_names, int(c)))
        panels.append((axes[2], "unseen classes by class"))
    for ax, sub in panels:
        ax.set_title(sub, fontsize=9)
        ax.set_xlabel(f"{name} 1 (no unit)", fontsize=8)
        ax.set_ylabel(f"{name} 2 (no unit)", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        n_items = len(ax.get_legend_handles_labels()[0])
        _legend_outside(ax, markerscale=3, fontsize=7 if n_items <= 12 else 5,
                        ncol=1 if n_items <= 20 else 2)
    fig.suptitle(f"{title}{': ' if title else ''}{name} of {len(x)} embeddings", fontsize=10)
    return _save(fig, path)


def _class_colours(classes) -> dict:
    """A distinct colour per class: tab10 / tab20, else samples of turbo."""
    from matplotlib import colormaps

    n = len(classes)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return {c: cmap(i if n <= 20 else i / max(n - 1, 1)) for i, c in enumerate(classes)}


# ----------------------------------------------------------------------------- curves and bars
def _is_metric(key: str) -> bool:
    return "@" in key or key.endswith(METRIC_SUFFIXES)


def training_curves(records: list[dict], path: str | Path, metric: str = "recall@1",
                    num_classes: int = 0) -> list[Path]:
    """A run's records over steps: the training losses (every loss term), the learning rates
    (keys ``lr*``, where recorded; log scale) and every split's ``metric`` (in % where it is a
    fraction, with the chance level of ``num_classes`` balanced classes when given)."""
    if not records:
        raise ValueError("no records to plot")
    numeric = {k for r in records for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    losses = sorted(k for k in numeric if k not in NOT_LOSSES and not k.startswith("lr")
                    and not _is_metric(k))
    lrs = sorted(k for k in numeric if k.startswith("lr"))
    metrics = sorted(k for k in numeric if k.endswith(f"_{metric}"))
    scale, unit = (100.0, " (%)") if is_percent(metric) else (1.0, "")
    panels = [("loss", "loss (value of the objective)", losses, 1.0),
              ("learning rate", "learning rate (log scale)", lrs, 1.0),
              (_metric_label(metric), f"{_metric_label(metric)}{unit}", metrics, scale)]
    panels = [p for p in panels if p[2]]
    fig = Figure(figsize=(5.2 * len(panels), 3.6), layout="constrained")
    for ax, (name, ylabel, keys, factor) in zip(
            fig.subplots(1, len(panels), squeeze=False)[0], panels):
        log_scale = name == "learning rate"
        for key in keys:      # a log scale leaves out lr 0 (the end of a cosine schedule)
            pts = [(r["step"], factor * r[key]) for r in records
                   if isinstance(r.get(key), (int, float)) and (r[key] > 0 or not log_scale)]
            style = "--" if key.endswith(f"_val_{metric}") else "-"   # source validation
            if pts:
                ax.plot(*zip(*pts), style, marker="o", markersize=3, label=key)
        if log_scale:
            ax.set_yscale("log")
        if keys is metrics:
            _chance_line(ax, chance_level(metric, num_classes), factor, num_classes)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=10)
        _legend_outside(ax)
    return _save(fig, path)


def _metric_label(metric: str) -> str:
    return metric.replace("recall@", "R@").replace("precision@", "P@").replace(
        "map@r", "MAP@R").replace("map@all", "mAP@All")


def _chance_line(ax, chance: float | None, scale: float, num_classes: int) -> None:
    if chance is not None:
        ax.axhline(scale * chance, **CHANCE_STYLE,
                   label=f"chance ({num_classes} unseen classes)" if num_classes else "chance")


def grouped_bars(values: dict[str, list[tuple[float, float]]], columns: list[str],
                 path: str | Path, title: str = "", ylabel: str = "",
                 chance: float | None = None, chance_label: str = "chance") -> list[Path]:
    """One group of bars per column, one bar per series (``values``: {series: [(mean, standard
    error), ...] per column}, in the unit of ``ylabel``); error bars = ± one standard error
    (nan: none); ``chance``: a dotted line at that value."""
    n = max(len(values), 1)
    width = 0.8 / n
    fig = Figure(figsize=(max(6.0, 0.9 * len(columns) * max(1, n / 3)), 4),
                 layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(columns))
    for i, (label, cells) in enumerate(values.items()):
        means = [m for m, _ in cells]
        errs = [0.0 if se != se else se for _, se in cells]
        ax.bar(x + (i - (n - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=label)
    if chance is not None:
        ax.axhline(chance, **CHANCE_STYLE, label=chance_label)
    ax.set_xticks(x, columns, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("target column")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    return _save(fig, path)


def line_curves(series: dict[str, tuple], path: str | Path, title: str = "",
                xlabel: str = "training step", ylabel: str = "",
                chance: float | None = None, chance_label: str = "chance") -> list[Path]:
    """One line per series (``series``: {label: (x, mean, standard error)}), the standard
    error as a shaded band; ``chance``: a dotted line at that value."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for label, (x, mean, se) in series.items():
        x, mean, se = (np.asarray(v, float) for v in (x, mean, se))
        ax.plot(x, mean, marker="o", markersize=3, label=label)
        ok = ~np.isnan(se)
        ax.fill_between(x[ok], (mean - se)[ok], (mean + se)[ok], alpha=0.2)
    if chance is not None:
        ax.axhline(chance, **CHANCE_STYLE, label=chance_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    return _save(fig, path)
