"""One training run, ``python -m sdgdml.train`` (its arguments and what they write:
``train_args.py`` / ``--help``): train on the source domain, evaluate retrieval on the targets
at every checkpoint, record, checkpoint atomically, resume when restarted."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from tqdm import tqdm

from . import __version__, evaluation, hparams_registry
from .algorithms import (Schedule, UnknownAlgorithmError, algorithm_class, create_algorithm,
                         parse_algorithm)
from .datasets import (DatasetError, ImageDataset, create_dataset, format_split,
                       get_dataset_class, load_dataset_config, parse_split, ucdr)
from .datasets import transforms as T
from .datasets.samplers import StepBatchSampler
from .hparams_registry import UnknownHparamError
from .networks import PretrainedWeightsError, create_model
from .records import (SCHEMA_VERSION, append_record, read_json, read_records,
                      truncate_records, write_json)
from .train_args import build_parser, experiment_identity
from .runstate import atomic_save, peak_memory_gb, rng_state, seed_everything, set_rng_state

log = logging.getLogger("sdgdml")
USER_ERRORS = (DatasetError, UnknownAlgorithmError, UnknownHparamError, PretrainedWeightsError)

def _setup_logging(out: Path, quiet: bool) -> None:
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        if isinstance(h, logging.FileHandler):
            h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    file_handler = logging.FileHandler(out / "out.txt")
    file_handler.setFormatter(fmt)
    log.addHandler(file_handler)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    log.addHandler(console)
    log.propagate = False


def _check_same_experiment(out: Path, args: dict) -> None:
    """Refuse to resume a run folder that holds another experiment."""
    recorded = read_json(out / "args.json")      # missing, or cut short by a kill: a new run
    if recorded is None:
        return
    old = experiment_identity(recorded)
    exp = experiment_identity(args)
    if old != exp:
        diff = {k: (old.get(k), exp.get(k)) for k in set(old) | set(exp) if old.get(k) != exp.get(k)}
        raise SystemExit(f"{out} holds a run with other args (old, new): {diff}. "
                         f"Use another --output_dir, or delete that folder to start over.")


def _batch_sampler(n, batch_size, seed, total_steps, start, hparams, labels):
    """The training batches (class-balanced ones need labels: label-free runs get random)."""
    return StepBatchSampler(n, batch_size, seed, total_steps, start,
                            mode=hparams["sampler"] if labels is not None else "random",
                            labels=labels, m=hparams["samples_per_class"])


def _train_loader(split, transform, batch_size, seed, schedule, start, hparams, num_workers,
                  device, labels):
    sampler = _batch_sampler(len(split), batch_size, seed, schedule.total_steps, start, hparams,
                             labels)
    return torch.utils.data.DataLoader(
        ImageDataset(split, transform), batch_sampler=sampler, num_workers=num_workers,
        pin_memory=device.type == "cuda", generator=torch.Generator(),
        persistent_workers=num_workers > 0)


def _check_has_proxies(algorithm, name: str) -> None:
    loss = getattr(algorithm, "loss", None)
    if loss is None or loss.proxies() is None:
        raise UnknownAlgorithmError(f"--proxy_alignment needs an algorithm with proxies; "
                                    f"{name} has none")


def _proxy_w2(algorithm, train_split, transform, args, device) -> float:
    """PFML Sec. 4.4: proxies vs the training split's embeddings (eval transform)."""
    emb = evaluation.embed_split(algorithm.embed, train_split, transform, args.eval_batch_size,
                                 args.num_workers, device)
    with torch.no_grad():
        proxies, proxy_labels = algorithm.loss.proxies()
    return evaluation.proxy_alignment(proxies.cpu(), proxy_labels.cpu(), emb,
                                      train_split.labels)


def _summary_table(records: list[dict], dataset, metric: str = "recall@1") -> str:
    first, last = records[0], records[-1]
    rows = []
    keys = [k for k in last if k.endswith(f"_test_{metric}")
            and not k.startswith(f"{dataset.source}_test")]
    for key in keys:
        rows.append([key[: -len(f"_{metric}")], first.get(key, float("nan")) * 100,
                     last[key] * 100])
    if rows:
        rows.append(["average (targets)", np.mean([r[1] for r in rows]),
                     np.mean([r[2] for r in rows])])
    for key in (f"{dataset.source}_val_{metric}", f"{dataset.source}_test_{metric}"):
        if key in last:
            rows.append([key[: -len(f"_{metric}")] + " (source)",
                         first.get(key, float("nan")) * 100, last[key] * 100])
    head = [f"split ({metric}, %)", f"step {first['step']}", f"step {last['step']}"]
    return tabulate(rows, headers=head, floatfmt=".2f")


def _ucdr_table(records: list[dict]) -> str:
    first, last = records[0], records[-1]
    ends = ("_map@all", "_open_acc", "_shared_accept", "_open_auroc")
    keys = [k for k in last if k.endswith(ends)]
    rows = [[k, first.get(k, float("nan")) * 100, last[k] * 100] for k in sorted(keys)]
    return tabulate(rows, headers=["UCDR metric (%)", f"step {first['step']}",
                                   f"step {last['step']}"], floatfmt=".2f")


def _check_ucdr_args(args) -> None:
    if not args.ucdr:
        return
    if algorithm_class(args.algorithm).USES_LABELS:
        raise ucdr.ProtocolError(
            f"--ucdr protocols are unsupervised: {args.algorithm} trains on labels; use an "
            f"algorithm without labels (UEM)")
    if args.protocol is not None:
        raise ucdr.ProtocolError("--protocol (SDG-DML splits) and --ucdr exclude each other")


def _ucdr_setup(args, dataset):
    """(source view, {target: view}, eval splits) of a UCDR protocol run."""
    protocol = ucdr.make_protocol(dataset, args.ucdr, args.trial_seed,
                                  args.ucdr_partial_fraction, args.ucdr_shared_fraction)
    log.info("%s", protocol.describe())
    views = ucdr.train_views(dataset, protocol)
    targets = {t: views[t] for t in dataset.targets}
    return views[dataset.source], targets, ucdr.eval_splits(dataset, protocol)


def resolve_split(args: argparse.Namespace) -> None:
    """Expand ``--split`` into ``dataset``/``source``/``targets`` and make the default source
    and targets explicit (in place; ``split`` becomes None): an experiment has one identity,
    and its records name its source, however it was spelled. A user dataset adds the hash of
    its config's definition (``dataset_definition``): editing its classes is another
    experiment."""
    load_dataset_config(args.data_dir, args.dataset_config)    # a split may name a user dataset
    if args.split:
        name, source, targets = parse_split(args.split)
        if args.source or args.targets or args.dataset not in ("DigitsDG", name):
            raise DatasetError(f"--split {args.split!r} already names the dataset, source and "
                               f"targets: drop --dataset/--source/--targets")
        args.dataset, args.source, args.targets, args.split = name, source, targets, None
    cls = get_dataset_class(args.dataset)
    args.source, args.targets = cls.default_split(args.source, args.targets)
    if cls.DEFINITION:                  # a user dataset: its config's classes, split, ...
        args.dataset_definition = cls.DEFINITION    # are part of the experiment


def train(args: argparse.Namespace) -> list[dict]:
    """Run (or resume) one experiment; returns its records."""
    resolve_split(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out, args.quiet)
    _check_same_experiment(out, vars(args))
    if (out / "done").exists():
        log.info("%s is already done; nothing to do", out)
        return read_records(out / "results.jsonl")

    # validate everything cheap before building anything expensive
    parse_algorithm(args.algorithm)
    _check_ucdr_args(args)
    try:
        overrides = json.loads(args.hparams) if args.hparams else {}
    except json.JSONDecodeError as e:
        raise UnknownHparamError(f"--hparams is not valid JSON ({e}): {args.hparams}") from e
    hparams = hparams_registry.get_hparams(args.algorithm, args.dataset, args.hparams_seed,
                                           overrides)
    dataset = create_dataset(
        args.dataset, args.data_dir, args.source, args.targets,
        config_file=args.dataset_config, skip_corrupt=args.skip_corrupt,
        trial_seed=args.trial_seed, protocol=args.protocol,
        label_noise=args.label_noise, val_protocol=args.val_protocol)
    dataset.validate()      # missing or incomplete data: the check's report, before any model
    seed = args.trial_seed if args.seed is None else args.seed
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    write_json(out / "args.json", vars(args))
    write_json(out / "hparams.json", hparams)
    log.info("sdgdml %s | %s | %s | device %s", __version__, args.algorithm,
             format_split(args.dataset, dataset.source, dataset.targets), device)
    for domain, files in getattr(dataset, "skipped", {}).items():
        log.info("skipped %d corrupt image files of %s (--skip_corrupt)", len(files), domain)
    log.info("hparams: %s", json.dumps(hparams, sort_keys=True))

    cls = algorithm_class(args.algorithm)
    train_split = dataset.train_split()
    # what the algorithm trains on: labelled seen-class images, or the source without labels
    labels = train_split.labels if cls.USES_LABELS else None
    if args.ucdr:
        source_view, target_views, eval_splits = _ucdr_setup(args, dataset)
    else:
        # label-free methods get the same source images (seen classes, minus validation)
        source_view = train_split if cls.USES_LABELS else dataset.unlabeled(train_split)
        target_views = {t: dataset.unlabeled_split(t) for t in dataset.targets}
        eval_splits = dataset.eval_splits()
    image_size = hparams["image_size"]
    data_config = T.data_config(hparams)
    train_tf = dataset.train_transform(image_size, data_config)
    eval_tf = dataset.eval_transform(image_size, data_config)
    batch_size = hparams["batch_size"]
    steps_per_epoch = _batch_sampler(len(source_view), batch_size, seed, 1, 0, hparams,
                                     labels).steps_per_epoch
    epochs = args.epochs if args.epochs is not None else dataset.DEFAULT_EPOCHS
    total = args.steps if args.steps is not None else max(1, round(epochs * steps_per_epoch))
    schedule = Schedule(total, steps_per_epoch)
    freq = args.checkpoint_freq or max(1, total // 10)
    log.info("%d training images (%s), %d steps of batch %d (%.1f epochs), "
             "checkpoint every %d steps", len(source_view),
             f"{dataset.num_train_classes} seen classes" if labels is not None else "no labels",
             total, batch_size, schedule.total_epochs, freq)

    seed_everything(seed)
    network = create_model(hparams, args.pretrained_file)
    # supervised: the seen classes it is trained on; unsupervised: the dataset's class count
    # (UEM's default number of prototypes)
    num_classes = dataset.num_train_classes if cls.USES_LABELS else len(dataset.CLASSES)
    algorithm = create_algorithm(args.algorithm, network, num_classes, hparams,
                                 schedule).to(device)

    if args.proxy_alignment:
        _check_has_proxies(algorithm, args.algorithm)

    start = 0
    ckpt_path = out / "checkpoint.pt"
    resumed = ckpt_path.exists()
    if resumed:
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        algorithm.load_state_dict(state["algorithm"])
        set_rng_state(state["rng"])
        start = state["step"]
        dropped = truncate_records(out / "results.jsonl", start)
        log.info("resumed from %s at step %d (dropped %d later records)", ckpt_path, start,
                 dropped)
    else:
        truncate_records(out / "results.jsonl", -1)

    loaders = {"x": _train_loader(source_view, train_tf, batch_size, seed, schedule, start,
                                  hparams, args.num_workers, device, labels)}
    if cls.TRANSDUCTIVE:
        for i, t in enumerate(dataset.targets, 1):
            loaders[t] = _train_loader(target_views[t], train_tf, batch_size,
                                       seed + 7919 * i, schedule, start, hparams,
                                       args.num_workers, device, None)

    open_set = evaluation.OpenSetRule(args.open_rule, args.open_threshold, args.open_clusters,
                                      seed)

    def checkpoint(step: int, logged: dict) -> None:
        t0 = time.time()
        metrics = evaluation.evaluate(algorithm.embed, eval_splits, eval_tf, args.metrics,
                                      args.eval_batch_size, args.num_workers, device,
                                      args.eval_chunk_size, args.ucdr_metrics, open_set)
        if args.proxy_alignment:
            metrics[f"{train_split.name}_proxy_w2"] = _proxy_w2(
                algorithm, train_split, eval_tf, args, device)
        record = {"step": step, "epoch": step / steps_per_epoch,
                  **{k: float(np.mean(v)) for k, v in logged.items()},
                  "eval_time": time.time() - t0, "mem_gb": peak_memory_gb(device),
                  **metrics, "args": vars(args), "hparams": hparams,
                  "schema_version": SCHEMA_VERSION, "sdgdml_version": __version__}
        append_record(out / "results.jsonl", record)
        atomic_save({"algorithm": algorithm.state_dict(), "rng": rng_state(), "step": step},
                    ckpt_path)
        shown = {k: round(v, 4) for k, v in metrics.items()
                 if k.endswith(("recall@1", "map@all", "open_acc", "open_auroc"))}
        log.info("step %d | %s", step, " ".join(f"{k}={v}" for k, v in shown.items()))

    if not resumed and not args.no_eval_at_start:   # a checkpoint's record is already kept
        checkpoint(0, {})
    logged: dict[str, list[float]] = defaultdict(list)
    iterators = {k: iter(v) for k, v in loaders.items()}
    bar = tqdm(range(start, total), initial=start, total=total, desc="train",
               disable=args.quiet, mininterval=1 if sys.stderr.isatty() else 30)
    t_step = time.time()
    for step in bar:
        batch = {}
        for key, it in iterators.items():
            item = next(it)
            if key == "x":
                x, y = item if labels is not None else (item, None)
                batch["x"] = x.to(device, non_blocking=True)
                if y is not None:
                    batch["y"] = y.to(device, non_blocking=True)
            else:
                batch.setdefault("unlabeled", {})[key] = item.to(device, non_blocking=True)
        for k, v in algorithm.update(batch).items():
            logged[k].append(v)
        logged["step_time"].append(time.time() - t_step)
        bar.set_postfix(loss=f"{logged['loss'][-1]:.4f}" if logged.get("loss") else "")
        if (step + 1) % freq == 0 or step + 1 == total:
            checkpoint(step + 1, logged)
            logged = defaultdict(list)
        t_step = time.time()
    bar.close()

    records = read_records(out / "results.jsonl")
    if args.save_model:
        torch.save(algorithm.network.state_dict(), out / "model.pt")
    (out / "done").write_text("done\n")
    if not args.keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    table = _ucdr_table(records) if args.ucdr else _summary_table(records, dataset)
    log.info("done: %s\n%s", out, table)
    return records


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except USER_ERRORS as e:  # bad names, paths or hparams: a clear message, no traceback
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
