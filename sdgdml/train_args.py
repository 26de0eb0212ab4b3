"""The arguments of one training run: the command-line parser, and which arguments name an
experiment (its identity: what a sweep hashes and what a resumed run must match; the roles of
the flags are in ``flags.py``)."""
from __future__ import annotations

import argparse
import functools

from . import evaluation
from .datasets import DATASETS, ucdr
from .flags import FLAG_ROLES, MACHINE_ARGS
from .loggers import LOGGERS
from .progress import LOG_INTERVAL_S
from .recipes import RECIPES
from .run_config import CONFIG_FLAG, CONFIG_HELP

DESCRIPTION = """Train one SDG-DML model on a source domain and evaluate retrieval on the target domains.

    python -m sdgdml.train --dataset DigitsDG --source mnist --algorithm ProxyAnchor \\
        --output_dir runs/demo

Writes to ``--output_dir``: ``args.json``, ``hparams.json``, ``results.jsonl`` (one JSON line
per checkpoint: step, epoch, losses, step time, memory and every split's metrics under flat
keys ``<split>_<metric>``, the lr of each optimizer group), ``out.txt`` (the log),
``checkpoint.pt`` while running (atomic; a restarted run resumes from it) and ``done`` at the
end. Every value is checked before the folder is created (bad input: one ``error:`` line, exit
code 1); ``.lock`` is held by the process training the run: a second one on the same folder
stops without writing.
"""


def algorithm_help() -> str:
    """--algorithm's help, from the registry: every name and how to compose them."""
    from .algorithms import registry

    shorthand = [n for n in registry.names("plugin") if registry.component("plugin", n).default_base]
    return (f"base loss ({', '.join(registry.names('loss'))}), optionally with '+Plugin's "
            f"({', '.join(registry.names('plugin'))}; e.g. ProxyAnchor+SEE); a plug-in alone "
            f"({', '.join(shorthand)}); or a standalone algorithm "
            f"({', '.join(registry.names('algorithm'))}). Details: python -m sdgdml.list "
            f"algorithms; hparams: python -m sdgdml.list hparams NAME")


def build_parser() -> argparse.ArgumentParser:
    """The parser (every flag has its role in ``flags.FLAG_ROLES``)."""
    p = argparse.ArgumentParser(
        prog="python -m sdgdml.train", description=DESCRIPTION, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)

    def a(flag: str, **kwargs):
        if flag[2:] not in FLAG_ROLES:
            raise KeyError(f"train flag {flag} has no role in sdgdml/flags.py")
        p.add_argument(flag, **kwargs)
    a("--dataset", default="DigitsDG", help=f"registered dataset: {', '.join(sorted(DATASETS))} "
      f"(or one registered in --dataset_config); domains and splits: python -m sdgdml.list "
      f"datasets NAME")
    a("--split", default=None,
      help="dataset, source and targets in one: 'PACS:photo->art_painting,cartoon,sketch' "
           "(replaces --dataset/--source/--targets; list them: python -m sdgdml.datasets splits "
           "NAME)")
    a("--source", default=None, help="source (training) domain; default: the dataset's")
    a("--targets", nargs="*", default=None,
      help="target domains to evaluate on; default: every domain except the source")
    a("--data_dir", default=None, help="folder holding the datasets (not needed for DigitsDG "
      "and GlyphsDG); check it with: python -m sdgdml.datasets check --data_dir DIR")
    a("--dataset_config", default=None,
      help="YAML file registering image-folder datasets and/or their locations (default: "
           "<data_dir>/sdgdml_datasets.yaml if present)")
    a("--output_dir", required=True, help="run folder for records, log and checkpoint")
    a("--algorithm", default="ProxyAnchor", help=algorithm_help())
    a("--hparams", default=None,
      help="JSON dict overriding hyperparameters, applied last (after --recipe and a sweep's "
           "values); every hparam's origin is written to hparam_origins.json; each "
           "algorithm's hparams: python -m sdgdml.list hparams NAME")
    a("--sweep_hparams", default=None,
      help="JSON dict of the values a sweep fixes or draws for this run (set by sdgdml.sweep; "
           "recorded with origin 'sweep'; --hparams still wins)")
    a("--hparams_seed", type=int, default=0,
      help="0: default hparams; >0: a random sample from each hparam's declared distribution")
    a("--trial_seed", type=int, default=0,
      help="trial seed: the source train/validation split (and the default --seed)")
    a("--seed", type=int, default=None, help="training seed (init, batches, augmentation)")
    a("--epochs", type=float, default=None, help="length of training in epochs of the source "
      "training split; default: the dataset's DEFAULT_EPOCHS")
    a("--steps", type=int, default=None, help="length of training in steps (overrides --epochs)")
    a("--recipe", choices=sorted(RECIPES), default=None,
      help="a paper's official training setting as hparam defaults (and run length in epochs "
           "unless --epochs/--steps, and a global batch split over the processes); explicit "
           "--hparams still win (sdgdml/recipes.py: each recipe's source, what it reproduces "
           "and what it leaves open)")
    a("--checkpoint_freq", type=int, default=None,
      help="evaluate, record and checkpoint every N steps; default: about 10 per run")
    a("--protocol", choices=("within", "cross", "both"), default=None,
      help="within: leave-one-out retrieval inside each target domain; cross: target queries "
           "against the source's unseen-class gallery; default: the dataset's")
    a("--val_protocol", choices=("images", "classes", "official"), default=None,
      help="source validation split for model selection: held-out images of the seen classes, "
           "held-out seen classes, or the official test list; default: the dataset's")
    a("--ucdr", choices=ucdr.KINDS, default=None,
      help="universal unsupervised cross-domain retrieval protocol (UEM's): closed, partial "
           "(query classes a random subset of the gallery's) or open (each side also holds "
           "private classes). The source is the query domain, the targets the galleries; an "
           "unsupervised algorithm trains on both without labels. Replaces --protocol")
    a("--ucdr_partial_fraction", type=float, default=0.5,
      help="partial: fraction of the classes the query domain holds (drawn with trial_seed)")
    a("--ucdr_shared_fraction", type=float, default=0.5,
      help="open: fraction of the query's classes the gallery holds (UEM: half; drawn with "
           "trial_seed); the others are query-private")
    a("--ucdr_min_images", type=int, default=0,
      help="restrict the protocol to one class set for the whole dataset: the classes with "
           "more than N training images in every domain of the dataset (UEM's DomainNet-7, "
           "after UCDIR: 200; `python -m sdgdml.datasets check` prints DomainNet's)")
    a("--ucdr_num_classes", type=int, default=0,
      help="and to the N such classes with the largest smallest count (DomainNet-7: 7; "
           "0: all)")
    a("--ucdr_metrics", nargs="+", default=list(evaluation.UCDR_METRICS),
      help="retrieval metrics of UCDR splits (over shared-class queries)")
    a("--open_rule", choices=evaluation.OPEN_RULES, default="threshold",
      help="open set: reject a query (return null) when its best cosine to the gallery "
           "(threshold) or to the gallery's k-means prototypes (prototype) is below "
           "--open_threshold; detector: UEM's App. B.1 private-query detector (Elbow + "
           "K-Means of both domains, translate and merge, Eq. 25-27), for any method")
    a("--open_threshold", type=float, default=0.5, help="cosine similarity of the open rule")
    a("--open_clusters", type=int, default=0,
      help="prototype rule: number of gallery clusters (0: the gallery's number of classes); "
           "detector: clusters per domain (0: the Elbow estimate)")
    a("--open_max_clusters", type=int, default=30,
      help="detector with --open_clusters 0: the Elbow's largest candidate k")
    a("--label_noise", type=float, default=0.0,
      help="fraction of training labels replaced by another seen class (seeded by trial_seed)")
    a("--metrics", nargs="+", default=list(evaluation.DEFAULT_METRICS),
      help=evaluation.METRIC_NAMES)
    a("--proxy_alignment", action="store_true",
      help="also record, at every checkpoint, the proxy-data alignment of PFML Sec. 4.4 / "
           "Table 3 (mean over classes of the W2 distance between a class's proxies and the "
           "training embeddings closest to them) as <source>_train_proxy_w2; needs proxies")
    a("--no_eval_at_start", action="store_true", help="skip the step-0 (untrained) evaluation")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    a("--num_workers", type=int, default=None,
      help="data-loading worker processes; default: 0 for in-memory datasets (DigitsDG), else "
           "the CPUs the job has minus one ($SLURM_CPUS_PER_TASK, else the process's CPU "
           "affinity); workers persist and prefetch, batches go to pinned memory on GPUs")
    a("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
      help="the network's forward under autocast in bf16 or fp16 (fp16 with a gradient "
           "scaler); losses, proxies, normalisation and k-NN scores stay fp32; evaluation "
           "embeds in the same precision. Part of the experiment")
    a("--channels_last", action="store_true",
      help="channels-last memory layout for the network (faster convolutions on GPUs with "
           "bf16/fp16)")
    a("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
      help="torch.compile the network (in place: checkpoints unchanged; the losses stay "
           "eager, see sdgdml/speed.py) with BACKEND (default inductor; aot_eager traces "
           "without generating code); where compiling is unavailable one line says why and "
           "the run stays eager")
    a("--jpeg_draft", action="store_true",
      help="decode JPEG files at a reduced size (1/2, 1/4, 1/8; Pillow's draft mode) when "
           "their short side stays >= 2 x image_size: much faster decoding of large photos, "
           "crops barely change (README 'Speed'). Part of the experiment")
    a("--lr_scaling", choices=("none", "linear"), default="none",
      help="several processes (torchrun / --gpus_per_node N): keep the lr (none) or multiply "
           "it by N, the global batch being B x N (linear); recorded as lr_scale")
    a("--skip_corrupt", action="store_true",
      help="leave out image files that do not decode (decodes every image once, then cached; "
           "the count is logged); default: stop with an error naming the file")
    a("--eval_batch_size", type=int, default=256, help="batch size when embedding eval splits")
    a("--eval_chunk_size", type=int, default=1024, help="query rows per k-NN chunk")
    a("--pretrained_file", default=None,
      help="local weights (.safetensors/.pth) for the backbone, for machines without internet")
    a("--discard_bad_checkpoint", action="store_true",
      help="a checkpoint.pt that cannot be loaded safely (corrupt, foreign, or holding "
           "anything but tensors and numbers) is renamed checkpoint.pt.bad-<time> and the run "
           "starts over (default: stop with an error naming it)")
    a("--keep_checkpoint", action="store_true",
      help="keep checkpoint.pt after the run is done (default: delete it)")
    a("--save_model", action="store_true", help="save the final network weights to model.pt")
    a("--quiet", action="store_true", help="no progress output")
    a("--logger", nargs="*", choices=LOGGERS, default=[],
      help="live logging of the losses, the lr of each optimizer group and the step time (every "
           "step) and of every split's metrics (every checkpoint): tensorboard (event files in "
           "<output_dir>/tensorboard), wandb (optional package; offline unless WANDB_MODE says "
           "otherwise)")
    a("--log_interval", type=float, default=LOG_INTERVAL_S,
      help="seconds between progress lines when stderr is not a terminal (a Slurm log); a "
           "terminal gets a progress bar. Each line's loss= is the mean over the steps since "
           "the previous line; the losses are read from the device only then and at "
           "checkpoints (a NaN/inf loss found there stops the run)")
    a(CONFIG_FLAG, default=None, metavar="FILE", help=CONFIG_HELP)
    return p


def experiment_identity(args: argparse.Namespace | dict) -> dict:
    """The experiment args that differ from their defaults: what names a run (a sweep hashes
    it). A flag added later with a default leaves every existing run's identity unchanged."""
    defaults = _default_args()
    items = args.items() if isinstance(args, dict) else vars(args).items()
    return {k: v for k, v in sorted(items)
            if k not in MACHINE_ARGS and defaults.get(k) != v}


@functools.lru_cache(maxsize=1)
def _default_args() -> dict:
    return vars(build_parser().parse_args(["--output_dir", "."]))
