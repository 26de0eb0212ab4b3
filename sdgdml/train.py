"""One training run, ``python -m sdgdml.train`` (its arguments and what they write:
``train_args.py`` / ``--help``): train on the source domain, evaluate retrieval on the targets
at every checkpoint, record, checkpoint atomically, resume when restarted.

The trainer knows methods only through the algorithm interface (``algorithms/base.py``): it
builds the data streams the method declares (``NEEDS``), calls ``train_step``, asks for
``extra_metrics`` at each checkpoint; the protocol object (``protocols.py``) says what is
trained on and how it is evaluated."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, distributed, evaluation, hparams_registry, recipes, speed
from .atomic import DiskFullError
from .algorithms import (Algorithm, EvalContext, Schedule, UnknownAlgorithmError,
                         algorithm_class, components, create_algorithm, data_needs)
from .datasets import (DatasetError, create_dataset, format_split, get_dataset_class,
                       load_dataset_config, parse_split)
from .datasets import transforms as T
from .hparams_registry import Resolution, UnknownHparamError
from .locking import LockedError, RunLock
from .loggers import LoggerError, RunMonitor, check_loggers
from .networks import PretrainedWeightsError, check_pretrained, create_model
from .protocols import SDGDMLProtocol, make_protocol
from .records import (SCHEMA_VERSION, append_record, read_json, read_records,
                      truncate_records, write_json)
from .run_config import parse_with_config
from .runstate import (CheckpointError, NonFiniteLossError, atomic_save, check_finite_losses,
                       check_finite_state, check_resumable, checkpoint_identity, peak_memory_gb,
                       resume_state, rng_state, seed_everything, set_rng_state, tensor_shapes)
from .streams import TrainStreams, steps_per_epoch
from .train_args import build_parser, experiment_identity
from .validation import InvalidValueError, check_batch_fits, check_train_args, parse_hparams

log = logging.getLogger("sdgdml")
USER_ERRORS = (DatasetError, UnknownAlgorithmError, UnknownHparamError, PretrainedWeightsError,
               recipes.RecipeError,
               InvalidValueError, LockedError, CheckpointError, NonFiniteLossError,
               DiskFullError, LoggerError)


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
    """Refuse to resume a run folder that holds another experiment; the args of a run that
    never trained (no checkpoint, no record: it stopped while starting) are replaced."""
    recorded = read_json(out / "args.json")      # missing, or cut short by a kill: a new run
    if recorded is None:
        return
    old = experiment_identity(recorded)
    exp = experiment_identity(args)
    if old == exp:
        return
    if not (out / "checkpoint.pt").exists() and not read_records(out / "results.jsonl"):
        log.info("%s held a run that never trained (no checkpoint, no record): its args are "
                 "replaced", out)
        return
    diff = {k: (old.get(k), exp.get(k)) for k in set(old) | set(exp) if old.get(k) != exp.get(k)}
    raise InvalidValueError(f"{out} holds a run with other args (old, new): {diff}. "
                            f"Use another --output_dir, or delete that folder to start over")


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


def load_dataset(args):
    """The run's dataset, its data checked (a clear report before any model is built)."""
    dataset = create_dataset(
        args.dataset, args.data_dir, args.source, args.targets,
        config_file=args.dataset_config, skip_corrupt=args.skip_corrupt,
        trial_seed=args.trial_seed, protocol=args.protocol,
        label_noise=args.label_noise, val_protocol=args.val_protocol)
    dataset.validate()
    return dataset


def _prepare(args) -> tuple[Resolution, object, SDGDMLProtocol]:
    """Every check that needs no run folder (values, names, hparams, data, protocol, batch
    size), before anything is created: (the resolved hparams and their origins, dataset,
    protocol)."""
    overrides = check_train_args(args)
    check_loggers(args.logger)
    speed.check_compile_backend(args.compile)
    resolve_split(args)
    needs = data_needs(args.algorithm)      # a bad name fails before anything is loaded
    resolved = hparams_registry.resolve_hparams(
        args.algorithm, args.dataset, args.hparams_seed, args.recipe,
        parse_hparams(args.sweep_hparams, "--sweep_hparams"), overrides,
        _scale_to_processes(args), distributed.world_size())
    hparams = resolved.values
    check_pretrained(hparams, args.pretrained_file)
    try:
        algorithm_class(args.algorithm).check_options(args, hparams)
    except ValueError as e:             # a component's own hparam rule (``check_hparams``)
        raise InvalidValueError(str(e)) from None
    dataset = load_dataset(args)
    protocol = make_protocol(args, dataset)
    protocol.check(needs)
    source, _ = protocol.training_views(needs)
    if distributed.world_size() > 1:
        args.global_batch_size = hparams["batch_size"] * distributed.world_size()
    check_batch_fits(hparams["batch_size"] * distributed.world_size(), len(source),
                     format_split(args.dataset, dataset.source, []))
    if args.num_workers is None:          # recorded as resolved
        args.num_workers = speed.default_num_workers(speed.has_files(dataset))
    return resolved, dataset, protocol


def _scale_to_processes(args) -> float:
    """Several processes (``distributed``): record the world size and the lr factor
    (``--lr_scaling``) in args, as part of the experiment (a run resumes only with as many
    processes), and return the factor (the last hparam source); one process: 1."""
    world = distributed.world_size()
    if world == 1:
        return 1
    parts = [algorithm_class(args.algorithm), *(c.cls for c in components(args.algorithm))]
    single = [p for p in parts if not p.MULTI_PROCESS]
    if single:
        raise UnknownAlgorithmError(f"{args.algorithm} does not train across processes yet "
                                    f"({single[-1].__name__}: "
                                    f"{single[-1].SINGLE_PROCESS_REASON}): run it on one GPU")
    args.world_size = world
    args.lr_scale = world if args.lr_scaling == "linear" else 1
    return args.lr_scale


def _log_hparams(resolved: Resolution, recipe: str | None) -> None:
    """The values, where those not at their declared default came from, and the recipe keys
    that apply to none of this algorithm's hparams."""
    log.info("hparams: %s", json.dumps(resolved.values, sort_keys=True))
    for origin, names in resolved.by_origin().items():
        log.info("hparams from %s: %s", origin, ", ".join(names))
    if resolved.ignored:
        log.warning("--recipe %s: %s apply to none of this algorithm's hparams (not used)",
                    recipe, ", ".join(sorted(resolved.ignored)))


@dataclass
class Run:
    """Everything one training run is made of, built by :func:`_build`."""

    args: argparse.Namespace
    out: Path
    hparams: dict
    dataset: object
    protocol: SDGDMLProtocol
    train_split: object
    algorithm: Algorithm
    schedule: Schedule
    eval_tf: object
    device: torch.device
    seed: int
    freq: int
    identity: dict                        # what its checkpoints are of (``runstate``)
    monitor: RunMonitor | None = None     # progress and live loggers, once the start is known
    hparam_origins: dict | None = None    # where each hparam's value came from
    saved_step: int | None = None         # the step of the last (finite) checkpoint
    training_views: dict = field(default_factory=dict)   # {domain: Split}

    def embed_training_images(self) -> dict[str, torch.Tensor]:
        """Every training image of every domain the method trains on, embedded (``start``)."""
        a, alg = self.args, self.algorithm
        return {d: evaluation.embed_split(alg.embed, view, self.eval_tf, a.eval_batch_size,
                                          a.num_workers, self.device)
                for d, view in self.training_views.items()}

    def evaluate(self) -> dict[str, float]:
        a, alg = self.args, self.algorithm
        metrics = self.protocol.evaluate(alg.embed, self.eval_tf, self.device)
        ctx = EvalContext(self.train_split, lambda split: evaluation.embed_split(
            alg.embed, split, self.eval_tf, a.eval_batch_size, a.num_workers, self.device), a)
        return {**metrics, **alg.extra_metrics(ctx)}

    def checkpoint(self, step: int, logged: dict) -> None:
        """Evaluate, record, and save the checkpoint: only of a finite state (else the run
        stops, the last finite checkpoint kept)."""
        check_finite_state(self.algorithm.state_dict(), step, self.out / "checkpoint.pt",
                           self.saved_step)
        t0 = time.time()
        metrics = self.evaluate()
        record = {"step": step, "epoch": step / self.schedule.steps_per_epoch,
                  **{k: float(np.mean(v)) for k, v in logged.items()},
                  **self.monitor.learning_rates(), "eval_time": time.time() - t0,
                  "mem_gb": peak_memory_gb(self.device),
                  **metrics, "args": vars(self.args), "hparams": self.hparams,
                  "hparam_origins": self.hparam_origins,
                  "schema_version": SCHEMA_VERSION, "sdgdml_version": __version__}
        append_record(self.out / "results.jsonl", record)
        self.monitor.after_checkpoint(step, metrics, {k: record[k] for k in ("eval_time",
                                                                          "mem_gb")})
        atomic_save({"algorithm": self.algorithm.state_dict(), "rng": rng_state(), "step": step,
                     "identity": self.identity}, self.out / "checkpoint.pt")
        self.saved_step = step
        shown = {k: v for k, v in metrics.items()
                 if k.endswith(("recall@1", "map@all", "open_acc", "open_auroc", "detect_acc"))}
        log.info("step %d | %s (%%)", step,                # in %, as in every table and plot
                 " ".join(f"{k}={100 * v:.2f}" for k, v in shown.items()))


def _build(args, out: Path, resolved: Resolution, dataset, protocol: SDGDMLProtocol
           ) -> tuple[Run, TrainStreams, int | None]:
    """Write args/hparams (and their origins), build the algorithm and restore it from a
    checkpoint (its step, or None for a new run); the data streams start at that step."""
    hparams = resolved.values
    needs = data_needs(args.algorithm)
    seed = args.trial_seed if args.seed is None else args.seed
    device = distributed.process_device(args.device) or torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    world, main = distributed.world_size(), distributed.is_main()
    if main:
        write_json(out / "args.json", vars(args))
        write_json(out / "hparams.json", hparams)
        write_json(out / "hparam_origins.json", resolved.origins)
    log.info("sdgdml %s | %s | %s | device %s", __version__, args.algorithm,
             format_split(args.dataset, dataset.source, dataset.targets), device)
    for domain, files in getattr(dataset, "skipped", {}).items():
        log.info("skipped %d corrupt image files of %s (--skip_corrupt)", len(files), domain)
    _log_hparams(resolved, args.recipe)

    source, targets = protocol.training_views(needs)
    global_hp = {**hparams, "batch_size": hparams["batch_size"] * world}   # what is drawn
    per_epoch = steps_per_epoch(source, global_hp, seed)
    epochs = next(e for e in (args.epochs, recipes.recipe_epochs(args.recipe),
                              dataset.DEFAULT_EPOCHS) if e is not None)
    schedule = Schedule(args.steps if args.steps is not None
                        else max(1, round(epochs * per_epoch)), per_epoch)
    freq = args.checkpoint_freq or max(1, schedule.total_steps // 10)
    log.info("%d training images (%s), %d steps of batch %d (%.1f epochs), checkpoint every %d "
             "steps", len(source), f"{dataset.num_train_classes} seen classes" if needs.labels
             else "no labels", schedule.total_steps, hparams["batch_size"],
             schedule.total_epochs, freq)

    seed_everything(seed)
    # supervised: the seen classes; label-free: the dataset's class count (a method's default)
    num_classes = dataset.num_train_classes if needs.labels else len(dataset.CLASSES)
    sizes = {dataset.source: len(source), **{t: len(v) for t, v in targets.items()}}
    algorithm = create_algorithm(args.algorithm, create_model(hparams, args.pretrained_file),
                                 num_classes, hparams, schedule, sizes).to(device)
    speed.configure(algorithm, args.precision, args.channels_last, args.compile, device,
                    distributed.OverlappedAverage(algorithm) if world > 1 else None)
    image_size, data_config = hparams["image_size"], T.data_config(hparams)
    if args.jpeg_draft:
        speed.enable_jpeg_draft(dataset, image_size)
    identity = checkpoint_identity(experiment_identity(vars(args)), args.algorithm,
                                   schedule.total_steps)
    run = Run(args, out, hparams, dataset, protocol, dataset.train_split(), algorithm, schedule,
              dataset.eval_transform(image_size, data_config), device, seed, freq, identity,
              hparam_origins=resolved.origins)
    run.training_views = {dataset.source: source, **(targets if needs.unlabeled_targets else {})}
    if not main:                    # rank 0 may set a bad checkpoint aside first
        distributed.barrier()
    resumed_at = _restore(run)
    if main:
        distributed.barrier()
    distributed.broadcast_state(algorithm)
    streams = TrainStreams(needs, source, targets, dataset.train_transform(image_size, data_config),
                           global_hp, seed, schedule, resumed_at or 0, args.num_workers, device,
                           distributed.rank(), world)
    return run, streams, resumed_at


def _restore(run: Run) -> int | None:
    """Load the checkpoint if there is one (safely: ``runstate.resume_state``): its step
    (None for a new run)."""
    path, records = run.out / "checkpoint.pt", run.out / "results.jsonl"
    main = distributed.is_main()       # only rank 0 writes (``distributed``)
    shapes = tensor_shapes(run.algorithm.state_dict()["modules"])
    state = resume_state(path, run.device, run.args.discard_bad_checkpoint and main, log,
                         lambda s: check_resumable(s, path, run.identity, shapes,
                                                   lambda step: _record_identity(records, step),
                                                   run.algorithm.LAZY_STATE))
    if state is None:
        if main:
            truncate_records(run.out / "results.jsonl", -1)
        return None
    run.algorithm.load_state_dict(state["algorithm"])
    set_rng_state(state["rng"])
    run.saved_step = state["step"]
    if "identity" not in state:
        log.warning("%s has no identity (an older sdgdml's): resumed, as the record of its "
                    "step names this experiment", path)
    if not main:
        return state["step"]
    dropped = truncate_records(run.out / "results.jsonl", state["step"])
    log.info("resumed from %s at step %d (dropped %d later records)", path, state["step"],
             dropped)
    return state["step"]


def _record_identity(path: Path, step: int) -> dict | None:
    """The experiment identity of the record of ``step`` (None: no such record)."""
    with warnings.catch_warnings():     # a half-written line: reported when truncated
        warnings.simplefilter("ignore")
        found = [r for r in read_records(path) if r.get("step") == step]
    if not found:
        return None
    args = found[-1].get("args")
    return experiment_identity(args) if isinstance(args, dict) else {}


def _monitor(run: Run, start: int) -> RunMonitor:
    a, main = run.args, distributed.is_main()
    return RunMonitor(a.logger if main else [], run.out, {**vars(a), "hparams": run.hparams},
                      run.algorithm.optimizers, run.schedule.total_steps, start,
                      a.quiet or not main, a.log_interval)


def _train_loop(run: Run, streams: TrainStreams, start: int) -> None:
    """The steps. Their losses stay on the device and are read in batches (``RunMonitor``:
    at the progress interval and before every checkpoint), so the host never waits for the
    device inside a step; a NaN/inf loss found at a read stops the run before anything after
    it is checkpointed (the last good checkpoint stays)."""
    total = run.schedule.total_steps
    logged: dict[str, list[float]] = defaultdict(list)
    ckpt_path = run.out / "checkpoint.pt"
    saved = start if ckpt_path.exists() else None       # the last good checkpoint's step
    world, main = distributed.world_size(), distributed.is_main()
    distributed.sync_rng()          # after rank 0's step-0 evaluation
    t_step = time.time()
    for step in range(start, total):
        losses = run.algorithm.train_step(streams.next_batch())
        if world > 1:           # BatchNorm statistics: rank 0's; the batch the loss saw
            distributed.broadcast_state(run.algorithm, buffers_only=True)
            losses = {**losses, "loss_batch": distributed.last_gathered_rows}
        read = run.monitor.after_step(step + 1, losses, time.time() - t_step)
        checkpoint = (step + 1) % run.freq == 0 or step + 1 == total
        if checkpoint:
            read += run.monitor.read()
        for done, values in read:
            check_finite_losses(values, done, ckpt_path, saved)
            for k, v in values.items():
                logged[k].append(v)
        if checkpoint:
            if main:
                run.checkpoint(step + 1, logged)
            distributed.sync_rng()
            saved, logged = step + 1, defaultdict(list)
        t_step = time.time()


def train(args: argparse.Namespace) -> list[dict]:
    """Run (or resume) one experiment; returns its records. Every value is checked before
    the run folder exists; the run's lock (``locking.RunLock``) is held while it runs."""
    distributed.setup(args.device)        # several processes: join them (``distributed``)
    resolved, dataset, protocol = _prepare(args)
    out = Path(args.output_dir)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        with RunLock(out):
            records = _run(args, out, resolved, dataset, protocol)
    else:                                 # rank 0 holds the lock and writes
        records = _run(args, out, resolved, dataset, protocol)
    distributed.shutdown()
    return records


def _run(args, out: Path, resolved: Resolution, dataset, protocol: SDGDMLProtocol
         ) -> list[dict]:
    if not distributed.is_main():
        log.setLevel(logging.WARNING)
        return _train_run(args, out, resolved, dataset, protocol)
    _setup_logging(out, args.quiet)
    for tmp in out.glob("*.tmp"):        # a killed write's; no writer runs (the lock is ours)
        tmp.unlink()
        log.info("removed %s, left by an interrupted write", tmp)
    try:
        return _train_run(args, out, resolved, dataset, protocol)
    except USER_ERRORS as e:             # the message also goes to the run's log
        _log_error(out, f"error: {e}")
        raise


def _log_error(out: Path, line: str) -> None:
    """Append ``line`` to ``out.txt`` if the disk lets us (on a full disk it may not)."""
    try:
        with open(out / "out.txt", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    except OSError:
        pass


def _train_run(args, out: Path, resolved: Resolution, dataset, protocol: SDGDMLProtocol
               ) -> list[dict]:
    _check_same_experiment(out, vars(args))
    if (out / "done").exists():
        records = read_records(out / "results.jsonl")
        if not records:
            raise InvalidValueError(f"{out} is marked done but holds no record: delete "
                                    f"{out / 'done'} to train it again")
        log.info("%s is already done; nothing to do", out)
        return records
    run, streams, resumed_at = _build(args, out, resolved, dataset, protocol)
    run.monitor = _monitor(run, resumed_at or 0)
    try:
        if resumed_at is None:
            run.algorithm.start(run.embed_training_images)
        if resumed_at is None and not args.no_eval_at_start:   # a checkpoint's record is kept
            run.checkpoint(0, {})
        _train_loop(run, streams, resumed_at or 0)
    finally:
        run.monitor.close()
    if not distributed.is_main():
        return []
    records = read_records(out / "results.jsonl")
    if args.save_model:
        torch.save(run.algorithm.network.state_dict(), out / "model.pt")
    (out / "done").write_text("done\n")
    if not args.keep_checkpoint:
        (out / "checkpoint.pt").unlink(missing_ok=True)
    log.info("done: %s\n%s", out, run.protocol.summary(records))
    return records


def main(argv=None) -> None:
    args = parse_with_config(build_parser(), argv)
    try:
        train(args)
    except USER_ERRORS as e:  # bad names, paths or hparams: a clear message, no traceback
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
