"""What an evaluation writes besides its table, for ``python -m sdgdml.evaluate`` (or any
caller holding a dataset's evaluations and their embeddings):

- ``export``: each image set's embeddings (``<split>.npy``, split order) with a CSV of its
  images (path or in-memory id, domain, label, class name), and each evaluation's per-query
  top-K ranking (``<evaluation>_top<K>.csv``);
- ``write_figures``: a retrieval gallery per target evaluation, the embedding map of a seeded
  sample of every domain's seen- and unseen-class images (the unseen ones also by class), and
  the training curves of a run's records (``sdgdml.figures``; each a PDF and a PNG).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from . import evaluation, figures
from .datasets import ucdr
from .datasets.samples import Split


def file_stem(name: str) -> str:
    """A split or evaluation name as a file name (``sketch->mnist_test`` ->
    ``sketch_to_mnist_test``)."""
    return name.replace("->", "_to_").replace("/", "_")


def _image_rows(split: Split, class_names) -> list[dict]:
    return [{"index": i, "image": split.samples.describe(int(j)), "domain": split.samples.domain,
             "label": int(y), "class": class_names[int(y)] if 0 <= y < len(class_names) else ""}
            for i, (j, y) in enumerate(zip(split.indices, split.labels))]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def export(out_dir: str | Path, evals, embeddings: dict, class_names, top_k: int = 10,
           chunk_size: int = 1024) -> list[Path]:
    """Write each image set's embeddings (.npy) and images (.csv), and each evaluation's
    per-query top-K ranking (.csv); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    splits = {s.name: s for ev in evals for s in (ev.query, ev.gallery) if s is not None}
    for name, split in splits.items():
        np.save(out / f"{file_stem(name)}.npy", embeddings[name].numpy())
        _write_csv(out / f"{file_stem(name)}.csv", _image_rows(split, class_names))
        written += [out / f"{file_stem(name)}.npy", out / f"{file_stem(name)}.csv"]
    for ev in evals:
        gallery = ev.gallery or ev.query
        sims, idx = evaluation.ranking(
            embeddings[ev.query.name], None if ev.gallery is None else embeddings[gallery.name],
            top_k, chunk_size)
        rows = [{"query": q, "query_image": ev.query.samples.describe(int(ev.query.indices[q])),
                 "query_label": int(ev.query.labels[q]), "rank": r + 1, "gallery": int(g),
                 "gallery_image": gallery.samples.describe(int(gallery.indices[g])),
                 "gallery_label": int(gallery.labels[g]), "similarity": float(sims[q, r]),
                 "correct": int(gallery.labels[g] == ev.query.labels[q])}
                for q in range(len(idx)) for r, g in enumerate(idx[q].tolist())]
        path = out / f"{file_stem(ev.name)}_top{idx.shape[1]}.csv"
        _write_csv(path, rows)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- figures
def map_sample(dataset, max_points: int, seed: int = 0) -> list[tuple[Split, bool]]:
    """[(split, seen)]: per domain (source, then targets), at most ``max_points`` seen-class and
    as many unseen-class images, a seeded sample (the embedding map's points)."""
    rng = np.random.default_rng(seed)
    out = []
    for domain in [dataset.source, *dataset.targets]:
        for seen, classes in ((True, dataset.seen_classes), (False, dataset.unseen_classes)):
            view = ucdr.domain_view(dataset, domain, classes, f"{domain}_map", labelled=True)
            keep = np.sort(rng.permutation(len(view))[:max_points])
            out.append((Split(view.name, view.samples, view.indices[keep], view.labels[keep]),
                        seen))
    return out


def is_target_evaluation(ev, dataset) -> bool:
    """True for the evaluations of target domains (not the source's val/test splits)."""
    return not ev.name.startswith(f"{dataset.source}_")


def write_figures(out_dir, dataset, evals, embeddings, embed_fn, transform, records=(),
                  gallery_queries: int = 8, gallery_k: int = 5, map_points: int = 300,
                  map_method: str = "auto", seed: int = 0, device="cpu") -> list[Path]:
    """A retrieval gallery per target evaluation (``gallery_queries`` queries, top
    ``gallery_k``), the embedding map (``map_sample``, embedded with ``embed_fn``) and the
    training curves (when ``records`` are given) in ``out_dir``; returns the files written."""

    out = Path(out_dir)
    files = []
    for ev in evals:
        if not is_target_evaluation(ev, dataset):
            continue
        gallery_emb = None if ev.gallery is None else embeddings[ev.gallery.name]
        files += figures.retrieval_gallery(
            ev.query, embeddings[ev.query.name], ev.gallery, gallery_emb,
            out / f"gallery_{file_stem(ev.name)}", dataset.CLASSES, gallery_queries, gallery_k,
            seed, title=f"{dataset.NAME} {ev.name}")
    points = map_sample(dataset, map_points, seed)
    emb = [evaluation.embed_split(embed_fn, split, transform, 256, 0, device)
           for split, _ in points]
    files += figures.embedding_map(
        torch.cat(emb).numpy(), [s.samples.domain for s, _ in points for _ in range(len(s))],
        np.concatenate([np.full(len(s), seen) for s, seen in points]),
        out / "embedding_map.png", map_method, seed,
        title=f"{dataset.NAME}: source {dataset.source}, targets {', '.join(dataset.targets)}",
        labels=np.concatenate([s.labels for s, _ in points]), class_names=dataset.CLASSES)
    if records:       # the targets' chance level: their unseen classes
        files += figures.training_curves(records, out / "training_curves.png",
                                         num_classes=len(dataset.unseen_classes))
    return files
