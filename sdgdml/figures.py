"""Figures of what a run learned (matplotlib, object-oriented API: no pyplot state, no display).

- ``retrieval_gallery``: queries, each followed by its top-K retrieved images framed green
  (same class) or red (another class); a PNG and a small self-contained HTML page (images
  inline as data URIs, a link to the PNG beside it). Queries are a seeded, class-balanced
  choice (``choose_queries``), the same on every call.
- ``embedding_map``: a 2-D projection of embeddings (UMAP when ``umap-learn`` is installed,
  else t-SNE from scikit-learn), coloured by domain and by seen/unseen class.
- ``training_curves``: losses, learning rates and a metric over the steps of ``results.jsonl``.
- ``grouped_bars`` / ``line_curves``: mean ± standard error bars and curves (``collect_results.py
  --plots``).

Each function takes arrays, records or splits and a path, and returns the files it wrote.
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return [path]


def _gallery_png(rows, query, target, path, class_names, title):
    k = max(len(r) for _, r in rows)
    fig = Figure(figsize=(1.25 * (k + 1), 1.4 * len(rows) + 0.4), dpi=72)
    axes = fig.subplots(len(rows), k + 1, squeeze=False)
    for row, (q, results) in zip(axes, rows):
        cells = [(query, q, QUERY, f"query: {_class_name(class_names, query.labels[q])}")]
        cells += [(target, g, CORRECT if ok else WRONG,
                   f"{_class_name(class_names, target.labels[g])} {s:.3f}")
                  for g, s, ok in results]
        for ax in row:
            ax.set_axis_off()
        for ax, (split, i, colour, text) in zip(row, cells):
            ax.set_axis_on()
            ax.imshow(np.asarray(_image(split, i)))
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4 if colour != QUERY else 2)
            ax.set_title(text, fontsize=7, color=colour)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)[0]


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

    body = []
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


def retrieval_gallery(query, query_emb, gallery, gallery_emb, out_stem: str | Path,
                      class_names=(), n_queries: int = 8, k: int = 5, seed: int = 0,
                      title: str = "") -> list[Path]:
    """``<out_stem>.png`` and ``<out_stem>.html``: ``n_queries`` queries of the ``query`` split
    (``choose_queries``), each with its ``k`` nearest items of ``gallery`` (None: the other
    queries, leave-one-out). ``*_emb``: the splits' L2-normalised embeddings, in split
    order."""
    out_stem = Path(out_stem)
    rows = _gallery_rows(query, query_emb, gallery, gallery_emb, n_queries, k, seed)
    target = query if gallery is None else gallery
    png = _gallery_png(rows, query, target, out_stem.with_suffix(".png"), class_names, title)
    page = _gallery_html(rows, query, target, out_stem.with_suffix(".html"), png.name,
                         class_names, title)
    return [png, page]


# ----------------------------------------------------------------------------- embedding map
def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates and the method's name: ``umap`` (umap-learn), ``tsne``
    (scikit-learn, PCA initialisation, perplexity min(30, (n - 1) / 3)) or ``auto``."""
    if method == "auto":
        method = "umap" if umap_available() else "tsne"
    if method == "umap":
        if not umap_available():
            raise ValueError("--map_method umap needs umap-learn (pip install umap-learn)")
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "UMAP"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    return tsne.fit_transform(np.asarray(x, np.float32)), "t-SNE"


def embedding_map(embeddings, domains, seen, path: str | Path, method: str = "auto",
                  seed: int = 0, title: str = "") -> list[Path]:
    """A PNG of two panels over the same 2-D projection of ``embeddings``: points coloured by
    ``domains`` (one name per point), and by ``seen`` (True: a seen/training class)."""
    x = np.asarray(embeddings, np.float32)
    domains, seen = np.asarray(domains), np.asarray(seen, bool)
    xy, name = project_2d(x, method, seed)
    fig = Figure(figsize=(11, 5), dpi=72)
    by_domain, by_class = fig.subplots(1, 2)
    for i, d in enumerate(dict.fromkeys(domains)):
        m = domains == d
        by_domain.scatter(xy[m, 0], xy[m, 1], s=5, color=f"C{i % 10}", label=str(d), alpha=0.7)
    for flag, colour, label in ((True, "#4575b4", "seen classes"),
                                (False, "#f46d43", "unseen classes")):
        m = seen == flag
        if m.any():
            by_class.scatter(xy[m, 0], xy[m, 1], s=5, color=colour, label=label, alpha=0.7)
    for ax, sub in ((by_domain, "by domain"), (by_class, "by seen / unseen class")):
        ax.set_title(f"{name}, {sub}", fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(fontsize=8, markerscale=3, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- curves and bars
def _is_metric(key: str) -> bool:
    return "@" in key or key.endswith(METRIC_SUFFIXES)


def training_curves(records: list[dict], path: str | Path, metric: str = "recall@1"
                    ) -> list[Path]:
    """A PNG of a run's records over steps: the training losses (every loss term), the
    learning rates (keys ``lr*``, where recorded) and every split's ``metric``."""
    if not records:
        raise ValueError("no records to plot")
    numeric = {k for r in records for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    losses = sorted(k for k in numeric if k not in NOT_LOSSES and not k.startswith("lr")
                    and not _is_metric(k))
    lrs = sorted(k for k in numeric if k.startswith("lr"))
    metrics = sorted(k for k in numeric if k.endswith(f"_{metric}"))
    panels = [("loss", losses), ("learning rate", lrs), (metric, metrics)]
    panels = [(name, keys) for name, keys in panels if keys]
    fig = Figure(figsize=(5 * len(panels), 4), dpi=72)
    for ax, (name, keys) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            style = "--" if key.endswith(f"_val_{metric}") else "-"   # source validation
            ax.plot(*zip(*pts), style, marker="o", markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def grouped_bars(values: dict[str, list[tuple[float, float]]], columns: list[str],
                 path: str | Path, title: str = "", ylabel: str = "") -> list[Path]:
    """One group of bars per column, one bar per series (``values``: {series: [(mean, standard
    error), ...] per column}); error bars = ± one standard error (nan: none)."""
    n = max(len(values), 1)
    width = 0.8 / n
    fig = Figure(figsize=(max(6.0, 0.9 * len(columns) * max(1, n / 3)), 4), dpi=72)
    ax = fig.subplots()
    x = np.arange(len(columns))
    for i, (label, cells) in enumerate(values.items()):
        means = [m for m, _ in cells]
        errs = [0.0 if se != se else se for _, se in cells]
        ax.bar(x + (i - (n - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=label)
    ax.set_xticks(x, columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def line_curves(series: dict[str, tuple], path: str | Path, title: str = "",
                xlabel: str = "step", ylabel: str = "") -> list[Path]:
    """One line per series (``series``: {label: (x, mean, standard error)}), the standard
    error as a shaded band."""
    fig = Figure(figsize=(6, 4), dpi=72)
    ax = fig.subplots()
    for label, (x, mean, se) in series.items():
        x, mean, se = (np.asarray(v, float) for v in (x, mean, se))
        ax.plot(x, mean, marker="o", markersize=3, label=label)
        ok = ~np.isnan(se)
        ax.fill_between(x[ok], (mean - se)[ok], (mean + se)[ok], alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)
