"""Evaluate a run's network again, ``python -m sdgdml.evaluate RUN_DIR`` (flags: ``--help``).

The run folder's ``args.json`` and ``hparams.json`` rebuild the network (``create_model``) and
its ``model.pt`` (``--save_model``) or ``checkpoint.pt`` (``--keep_checkpoint``, or a run still
going) gives the weights, loaded with ``torch.load(weights_only=True)``: a weights file never
executes code. The evaluation defaults to the run's own settings (dataset, split, protocol,
metrics, trial seed, ``--precision`` autocast, ``--jpeg_draft`` decoding), so it reproduces
the run's last record; any of the data settings can be changed:
another target domain, ``--protocol cross``, a UCDR protocol (``--ucdr open``), other metrics.

Optional outputs (written by ``exports.py``): ``--export DIR`` (each evaluated image set's
embeddings as ``<split>.npy`` and ``<split>.csv`` of image/domain/label/class, and
``<evaluation>_top<K>.csv``, each query's K nearest gallery items), ``--figures DIR`` (a
retrieval gallery per target evaluation, an embedding map, the run's training curves) and
``--output FILE`` (the metrics as JSON).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

from . import evaluation, exports, speed
from .datasets import ucdr
from .datasets import transforms as T
from .networks import EmbeddingNet, create_model
from .protocols import make_protocol
from .records import read_json, read_records
from .train import USER_ERRORS, load_dataset, resolve_split
from .train_args import build_parser as train_parser

WEIGHT_FILES = ("model.pt", "checkpoint.pt")


class EvaluationError(ValueError):
    """A run folder or weights file cannot be evaluated (one clear line for the user)."""


# ----------------------------------------------------------------------------- the run
def load_run(run_dir: str | Path) -> tuple[argparse.Namespace, dict]:
    """(the run's arguments, its resolved hparams) from ``args.json`` / ``hparams.json``."""
    run = Path(run_dir)
    if not run.is_dir():
        raise EvaluationError(f"run folder not found: {run}")
    found = {name: read_json(run / name) for name in ("args.json", "hparams.json")}
    for name, data in found.items():
        if not isinstance(data, dict):
            raise EvaluationError(f"{run / name} is missing or not a JSON object: is {run} a "
                                  f"run folder (python -m sdgdml.train --output_dir ...)?")
    # flags added after the run was made take their defaults
    defaults = vars(train_parser().parse_args(["--output_dir", str(run)]))
    return argparse.Namespace(**{**defaults, **found["args.json"]}), found["hparams.json"]


def weights_file(run_dir: str | Path, weights: str | None = None) -> Path:
    """``weights`` (a path, or a file name inside the run folder), else the run's ``model.pt``,
    else its ``checkpoint.pt``."""
    run = Path(run_dir)
    if weights:
        path = Path(weights) if Path(weights).exists() else run / weights
        if not path.is_file():
            raise EvaluationError(f"weights file not found: {weights}")
        return path
    for name in WEIGHT_FILES:
        if (run / name).is_file():
            return run / name
    raise EvaluationError(f"{run} holds neither model.pt nor checkpoint.pt: train with "
                          f"--save_model or --keep_checkpoint to evaluate it later")


def _numpy_array_globals() -> list:
    """What a checkpoint's NumPy RNG state needs from the unpickler: arrays and dtypes only."""
    return [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def network_state(path: Path) -> dict[str, torch.Tensor]:
    """The network's state dict from ``model.pt`` (the network's own state dict) or from
    ``checkpoint.pt`` (the algorithm's, whose ``modules`` hold the network under
    ``network.``)."""
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:      # not a torch file, truncated, or holding code to execute
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvaluationError(f"{path} is not a readable weights file ({reason[:200]})") from e
    if isinstance(state, dict) and isinstance(state.get("algorithm"), dict):
        modules = state["algorithm"].get("modules", {})
        state = {k[len("network."):]: v for k, v in modules.items()
                 if k.startswith("network.")}
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvaluationError(f"{path} holds no network weights (neither a model.pt nor a "
                              f"checkpoint.pt of sdgdml.train)")
    return state


def load_network(run_dir: str | Path, hparams: dict, weights: str | None = None
                 ) -> EmbeddingNet:
    """The run's network with its trained weights, in eval mode, on the CPU."""
    path = weights_file(run_dir, weights)
    state = network_state(path)
    network = create_model({**hparams, "pretrained": False})   # the weights replace them all
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise EvaluationError(f"{path} does not fit the network of {run_dir}'s hparams.json "
                              f"({hparams.get('backbone')}, embed_dim "
                              f"{hparams.get('embed_dim')}): {first}") from e
    return network.eval()


# ----------------------------------------------------------------------------- settings
OVERRIDES = ("split", "source", "targets", "protocol", "val_protocol", "ucdr",
             "ucdr_partial_fraction", "ucdr_shared_fraction", "ucdr_min_images",
             "ucdr_num_classes", "metrics", "ucdr_metrics", "open_rule", "open_threshold",
             "open_clusters", "open_max_clusters", "trial_seed", "data_dir",
             "dataset_config", "num_workers", "eval_batch_size", "eval_chunk_size")


def settings(run_args: argparse.Namespace, cli: argparse.Namespace) -> argparse.Namespace:
    """The run's arguments with the evaluation's overrides (None: keep the run's)."""
    args = argparse.Namespace(**vars(run_args))
    given = {k: getattr(cli, k) for k in OVERRIDES if getattr(cli, k, None) is not None}
    if "split" in given:            # a new split names dataset, source and targets anew
        args.dataset, args.source, args.targets = given["split"].partition(":")[0], None, None
    elif "source" in given and "targets" not in given:
        args.targets = None         # another source: every other domain unless named
    if "protocol" in given:
        args.ucdr = None
    if "ucdr" in given:
        args.protocol = None
    for k, v in given.items():
        setattr(args, k, v)
    resolve_split(args)
    return args


def embed_function(network: EmbeddingNet, precision: str = "fp32", device="cpu"):
    """The run's ``Algorithm.embed``: eval mode, no grad, under the run's ``--precision``
    autocast, L2-normalised in fp32 (bit-identical)."""
    autocast = speed.Precision(precision, device).autocast

    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        with autocast():
            z = network(x)
        return F.normalize(z.float(), dim=1)
    return embed


def precision(args: argparse.Namespace) -> str:
    """The run's ``--precision`` (fp32 for runs older than the flag)."""
    return getattr(args, "precision", None) or "fp32"


def run_evaluation(network, args, hparams, device="cpu"):
    """(metrics, {split name: embeddings}, dataset, evaluations, eval transform)."""
    dataset = load_dataset(args)
    if getattr(args, "jpeg_draft", False):      # decode as the run did
        speed.enable_jpeg_draft(dataset, hparams["image_size"])
    protocol = make_protocol(args, dataset)
    transform = dataset.eval_transform(hparams["image_size"], T.data_config(hparams))
    embeddings: dict[str, torch.Tensor] = {}
    embed = embed_function(network.to(device), precision(args), device)
    metrics = protocol.evaluate(embed, transform, device, embeddings)
    return metrics, embeddings, dataset, protocol.eval_splits(), transform


def metrics_table(metrics: dict[str, float], evals) -> str:
    """Rows = evaluations (in order), columns = metrics, in %."""
    names = [ev.name for ev in evals]
    columns = []
    for key in metrics:         # the longest evaluation name the key starts with
        name = max((n for n in names if key.startswith(f"{n}_")), key=len)
        metric = key[len(name) + 1:]
        if metric not in columns:
            columns.append(metric)
    rows = [[n, *(100 * metrics[f"{n}_{m}"] if f"{n}_{m}" in metrics else None
                  for m in columns)] for n in names]
    return tabulate(rows, headers=["split (%)", *columns], floatfmt=".2f", missingval="-")


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdgdml.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    a("run_dir", help="a run folder of sdgdml.train (args.json, hparams.json and a weights file)")
    a("--weights", default=None,
      help="weights file (a path, or a name inside the run folder); default: model.pt, else "
           "checkpoint.pt")
    a("--split", default=None, help="another dataset/source/targets, 'PACS:photo->sketch' "
      "(default: the run's)")
    a("--source", default=None, help="another source domain (its val/test splits)")
    a("--targets", nargs="+", default=None, help="other target domains (default: the run's)")
    a("--protocol", choices=("within", "cross", "both"), default=None,
      help="target evaluation protocol (default: the run's); replaces a run's --ucdr")
    a("--val_protocol", choices=("images", "classes", "official"), default=None,
      help="source validation split (default: the run's)")
    a("--ucdr", choices=ucdr.KINDS, default=None,
      help="evaluate under a UCDR protocol (UEM's closed/partial/open) instead")
    a("--ucdr_partial_fraction", type=float, default=None, help="as in sdgdml.train")
    a("--ucdr_shared_fraction", type=float, default=None, help="as in sdgdml.train")
    a("--ucdr_min_images", type=int, default=None, help="as in sdgdml.train")
    a("--ucdr_num_classes", type=int, default=None, help="as in sdgdml.train")
    a("--metrics", nargs="+", default=None,
      help=f"{evaluation.METRIC_NAMES} (default: the run's)")
    a("--ucdr_metrics", nargs="+", default=None, help="metrics of UCDR evaluations")
    a("--open_rule", choices=evaluation.OPEN_RULES, default=None, help="as in sdgdml.train")
    a("--open_threshold", type=float, default=None, help="as in sdgdml.train")
    a("--open_clusters", type=int, default=None, help="as in sdgdml.train")
    a("--open_max_clusters", type=int, default=None, help="as in sdgdml.train")
    a("--trial_seed", type=int, default=None,
      help="trial seed of the source validation split and UCDR class subsets (default: run's)")
    a("--data_dir", default=None, help="datasets folder (default: the run's)")
    a("--dataset_config", default=None, help="dataset config YAML (default: the run's)")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    a("--num_workers", type=int, default=None, help="data-loading worker processes")
    a("--eval_batch_size", type=int, default=None,
      help="batch size when embedding (default: the run's, which reproduces its numbers)")
    a("--eval_chunk_size", type=int, default=None, help="query rows per k-NN chunk")
    a("--output", default=None, help="also write the metrics to this JSON file")
    a("--export", default=None, metavar="DIR",
      help="write embeddings (.npy) with their images' paths/labels/domains (.csv) and each "
           "evaluation's per-query top-K ranking (.csv) to DIR")
    a("--top_k", type=int, default=10, help="ranking length of --export")
    a("--figures", default=None, metavar="DIR",
      help="write a retrieval gallery per target evaluation (PDF + 200 dpi PNG + HTML), an "
           "embedding map and the run's training curves (PDF + PNG) to DIR")
    a("--gallery_queries", type=int, default=8, help="queries per gallery (seeded choice)")
    a("--gallery_k", type=int, default=5, help="retrieved images shown per query")
    a("--map_points", type=int, default=300,
      help="embedding map: at most this many images per domain and seen/unseen group")
    a("--map_method", choices=("auto", "tsne", "umap"), default="auto",
      help="embedding map projection: auto = UMAP if umap-learn is installed, else t-SNE")
    a("--seed", type=int, default=0, help="seed of the gallery queries and the map's sample")
    return p


def _check_cli(cli: argparse.Namespace) -> None:
    """Bad numbers and paths are refused before anything is loaded or written."""
    from .validation import SEED_LIMIT, check_output_dir

    def at_least(names, low):
        for name in names:
            value = getattr(cli, name)
            if value is not None and not value >= low:
                raise EvaluationError(f"--{name} must be at least {low}, got {value}")
    at_least(("top_k", "gallery_queries", "gallery_k", "map_points", "eval_batch_size",
              "eval_chunk_size", "open_max_clusters"), 1)
    at_least(("num_workers", "ucdr_min_images", "ucdr_num_classes", "open_clusters", "seed",
              "trial_seed"), 0)
    for name in ("seed", "trial_seed"):
        if (getattr(cli, name) or 0) >= SEED_LIMIT:
            raise EvaluationError(f"--{name} must be in [0, 2**32), got {getattr(cli, name)}")
    for name in ("ucdr_partial_fraction", "ucdr_shared_fraction"):
        if getattr(cli, name) is not None and not 0 < getattr(cli, name) < 1:
            raise EvaluationError(f"--{name} must be in (0, 1), got {getattr(cli, name)}")
    if cli.open_threshold is not None and not -1 <= cli.open_threshold <= 1:
        raise EvaluationError(f"--open_threshold is a cosine similarity, in [-1, 1]; got "
                              f"{cli.open_threshold}")
    if cli.output is not None:
        out = Path(cli.output).absolute()
        if not cli.output.strip() or out.is_dir() or not out.parent.is_dir():
            raise EvaluationError(f"--output {cli.output!r} must name a file in an existing "
                                  f"folder")
        check_output_dir(out.parent, "--output")
    for flag in ("export", "figures"):
        if getattr(cli, flag) is not None:
            if not getattr(cli, flag).strip():
                raise EvaluationError(f"--{flag} is empty: name a folder")
            check_output_dir(Path(getattr(cli, flag)), f"--{flag}")
    evaluation.check_metrics(cli.metrics or [])
    evaluation.check_metrics(cli.ucdr_metrics or [])


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise EvaluationError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, ...)") \
            from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {name}: CUDA is not available here")
    return device


def evaluate_run(cli: argparse.Namespace) -> dict[str, float]:
    """Everything ``python -m sdgdml.evaluate`` does; returns the metrics."""
    _check_cli(cli)
    device = _device(cli.device)
    run_args, hparams = load_run(cli.run_dir)
    args = settings(run_args, cli)
    network = load_network(cli.run_dir, hparams, cli.weights)
    metrics, embeddings, dataset, evals, transform = run_evaluation(network, args, hparams,
                                                                    device)
    print(f"{cli.run_dir} ({args.algorithm}), {weights_file(cli.run_dir, cli.weights).name}, "
          f"{args.dataset}:{dataset.source}->{','.join(dataset.targets)}"
          f"{f' ucdr {args.ucdr}' if args.ucdr else f' protocol {dataset.protocol}'}")
    print(metrics_table(metrics, evals))
    if cli.output:
        Path(cli.output).write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    if cli.export:
        files = exports.export(cli.export, evals, embeddings, dataset.CLASSES, cli.top_k,
                               args.eval_chunk_size)
        print(f"exported {len(files)} files to {cli.export}")
    if cli.figures:
        files = exports.write_figures(
            cli.figures, dataset, evals, embeddings, embed_function(network, precision(args), device), transform,
            read_records(Path(cli.run_dir) / "results.jsonl"), cli.gallery_queries,
            cli.gallery_k, cli.map_points, cli.map_method, cli.seed, device)
        print(f"wrote {len(files)} figures to {cli.figures}")
    return metrics


def main(argv=None) -> None:
    cli = build_parser().parse_args(argv)
    try:
        evaluate_run(cli)
    except (ValueError, *USER_ERRORS) as e:   # files, names, metrics, protocol settings
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    sys.exit(main())
