"""What a sweep is: its definition (from the command line or a YAML file under ``sweeps/``),
validated against the registries, and expanded into one training job per run.

A definition names **splits** (``Dataset``, ``Dataset:source``, ``Dataset:source->t1,t2`` or
``Dataset:*`` for every single-source split), **algorithms** (any registered name or
composition, optionally with per-algorithm hparams), ``n_hparams`` (hparams seeds
``0 .. n_hparams-1``; seed 0 = the registry's defaults) and ``n_trials`` (trial seeds
``0 .. n_trials-1``, or the explicit list ``trial_seeds``, e.g. UEM's [2024, 2025, 2026]).
Every trial of an hparams seed uses the *same* hparams: a sample depends
on (algorithm, dataset, hparams_seed) only, never on the trial.

Hparams: ``hparams`` fixes values for every run and ``hparam_ranges`` replaces the registry's
random distribution of a hparam for seeds > 0, in ``sdgdml.search_space``'s vocabulary (bounds
are values, never exponents), e.g. ``{lr: {log_uniform: [1.0e-5, 1.0e-3]}, batch_size:
{choice: [32, 64]}, pa_margin: {uniform: [0, 0.3]}}``. Both reach the run as
``--sweep_hparams``, recorded with the origin ``sweep`` (``hparams_registry``).
``train_args`` holds any other ``python -m sdgdml.train`` flag (``steps``, ``protocol``, ...).

A run's folder is ``<output_dir>/<md5 of its experiment identity>``: the train args that
differ from their defaults, machine paths and speed knobs (``flags.MACHINE_ARGS``) left out,
so moving the data never renames a run, nor does a later release adding a train flag.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .flags import SWEEP_OWNED
from .search_space import from_spec

# every key a sweep file may hold (anything else is a typo and an error)
FILE_KEYS = ("name", "description", "splits", "datasets", "algorithms", "n_hparams",
             "n_trials", "trial_seeds", "hparams", "hparam_ranges", "train_args")


class SweepError(ValueError):
    """A sweep definition that cannot be run (unknown name, bad value, ...)."""


@dataclass
class SweepDefinition:
    splits: list[str]
    algorithms: list[dict]          # {"name", "label", "hparams": {}, "hparam_ranges": {}}
    n_hparams: int = 1
    n_trials: int = 1
    hparams: dict = field(default_factory=dict)
    hparam_ranges: dict = field(default_factory=dict)
    train_args: list[str] = field(default_factory=list)
    name: str | None = None
    trial_seeds: list[int] | None = None     # explicit trial seeds instead of range(n_trials)

    def to_dict(self) -> dict:
        return {"name": self.name, "splits": self.splits, "algorithms": self.algorithms,
                "n_hparams": self.n_hparams, "n_trials": self.n_trials,
                "hparams": self.hparams, "hparam_ranges": self.hparam_ranges,
                "train_args": self.train_args,
                **({"trial_seeds": self.trial_seeds} if self.trial_seeds else {})}


@dataclass(frozen=True)
class Job:
    """One training run of a sweep."""

    run_id: str                  # md5 of the experiment identity = the run folder's name
    argv: tuple[str, ...]        # `python -m sdgdml.train` arguments (incl. --output_dir)
    info: dict                   # dataset, source, targets, algorithm, hparams_seed, trial_seed

    @property
    def run_dir(self) -> Path:
        return Path(self.argv[self.argv.index("--output_dir") + 1])


# ----------------------------------------------------------------------------- reading
def _algorithm_entry(entry: Any) -> dict:
    """A name, or {name, label, hparams, hparam_ranges}; ``label`` (default: the name) is the
    row of the results tables, e.g. for ablations of one algorithm."""
    if isinstance(entry, str):
        return {"name": entry, "label": entry, "hparams": {}, "hparam_ranges": {}}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        extra = set(entry) - {"name", "label", "hparams", "hparam_ranges"}
        if extra:
            raise SweepError(f"algorithm entry {entry['name']!r}: unknown keys {sorted(extra)}; "
                             f"known: name, label, hparams, hparam_ranges")
        return {"name": entry["name"], "label": str(entry.get("label") or entry["name"]),
                "hparams": dict(entry.get("hparams") or {}),
                "hparam_ranges": dict(entry.get("hparam_ranges") or {})}
    raise SweepError(f"an algorithm is a name or {{name:, label:, hparams:, hparam_ranges:}}, "
                     f"got {entry!r}")


def _train_args_from_mapping(mapping: dict) -> list[str]:
    argv = []
    for key, value in mapping.items():
        flag = f"--{key}"
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _count(data: dict, key: str, path: Path) -> int:
    value = data.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{path}: {key} must be an integer >= 1, got {value!r}")
    return value


def from_file(path: str | Path) -> SweepDefinition:
    """Read a sweep file (YAML); names are validated later by :func:`validate`."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise SweepError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {', '.join(FILE_KEYS)}")
    unknown = set(data) - set(FILE_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; known: {', '.join(FILE_KEYS)}")
    splits = list(data.get("splits") or []) + list(data.get("datasets") or [])
    train_args = data.get("train_args") or {}
    if not isinstance(train_args, dict):
        raise SweepError(f"{path}: train_args is a mapping of train flags to values")
    return SweepDefinition(
        splits=[str(s) for s in splits],
        algorithms=[_algorithm_entry(a) for a in data.get("algorithms") or []],
        n_hparams=_count(data, "n_hparams", path), n_trials=_count(data, "n_trials", path),
        hparams=dict(data.get("hparams") or {}),
        hparam_ranges=dict(data.get("hparam_ranges") or {}),
        train_args=_train_args_from_mapping(train_args),
        name=data.get("name") or path.stem, trial_seeds=_seed_list(data, path))


def _seed_list(data: dict, path) -> list[int] | None:
    seeds = data.get("trial_seeds")
    if seeds is None:
        return None
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise SweepError(f"{path}: trial_seeds is a non-empty list of integers, got {seeds!r}")
    return seeds


def from_cli(args) -> SweepDefinition:
    """The definition given by ``launch`` flags (``--config`` file values, then flags)."""
    d = from_file(args.config) if args.config else SweepDefinition(splits=[], algorithms=[])
    if args.datasets or args.splits:
        d.splits = list(args.splits or []) + list(args.datasets or [])
    if args.algorithms:
        d.algorithms = [_algorithm_entry(a) for a in args.algorithms]
    if args.n_hparams is not None:
        d.n_hparams = args.n_hparams
    if args.n_trials is not None:
        d.n_trials = args.n_trials
    if args.hparams:
        try:
            d.hparams = {**d.hparams, **json.loads(args.hparams)}
        except json.JSONDecodeError as e:
            raise SweepError(f"--hparams is not valid JSON ({e}): {args.hparams}") from e
    if args.train_args:
        d.train_args = d.train_args + shlex.split(args.train_args)
    return d


# ----------------------------------------------------------------------------- validation
def parse_split(spec: str) -> list[tuple[str, str, list[str]]]:
    """``Dataset[:source[->t1,t2]]`` or ``Dataset:*`` -> [(dataset, source, targets)], with
    the dataset registry's split syntax and defaults made explicit (so that spelling a split
    differently never changes a run's identity)."""
    from .datasets import DatasetError, get_dataset_class, parse_split as registry_split
    from .datasets import single_source_splits

    name, _, rest = spec.partition(":")
    try:
        specs = single_source_splits(name.strip()) if rest.strip() == "*" else [spec]
        out = []
        for one in specs:
            dataset, source, targets = registry_split(one)
            source, targets = get_dataset_class(dataset).default_split(source, targets)
            if source in targets:
                raise DatasetError(f"the source {source!r} is also a target")
            out.append((dataset, source, targets))
    except DatasetError as e:
        raise SweepError(f"split {spec!r}: {e}") from None
    return out


def _check_ranges(ranges: dict, where: str) -> None:
    for name, spec in ranges.items():
        try:
            from_spec(spec)
        except ValueError as e:
            raise SweepError(f"{where}: range of {name!r} {e}") from None


def _check_train_args(argv: list[str]) -> None:
    from .train_args import build_parser
    from .validation import InvalidValueError, check_ranges

    parser = build_parser()
    known = sorted(a.dest for a in parser._actions if a.dest != "help")
    owned = [a for a in argv if a.startswith("--") and a[2:].split("=")[0] in SWEEP_OWNED]
    if owned:
        raise SweepError(f"train_args {owned} are set by the sweep for each run; use splits, "
                         f"algorithms, hparams, n_hparams and n_trials instead")
    try:
        args, unknown = parser.parse_known_args(argv + ["--output_dir", "x"])
    except SystemExit:
        raise SweepError(f"invalid train_args {argv} (see python -m sdgdml.train --help)") from None
    if unknown:
        raise SweepError(f"unknown train_args {unknown}; known train flags: "
                         f"{', '.join(k for k in known if k not in SWEEP_OWNED)}")
    try:
        check_ranges(args)
    except InvalidValueError as e:
        raise SweepError(f"train_args: {e}") from None


def validate(d: SweepDefinition) -> list[tuple[str, str, list[str]]]:
    """Check every name against the registries; all problems are reported at once, each with
    the known names. Returns the expanded splits."""
    from .algorithms import UnknownAlgorithmError, parse_algorithm

    if not d.splits:
        raise SweepError("the sweep has no datasets/splits (--datasets, --splits or `splits:`)")
    if not d.algorithms:
        raise SweepError("the sweep has no algorithms (--algorithms or `algorithms:`)")
    if d.n_hparams < 1 or d.n_trials < 1:
        raise SweepError("n_hparams and n_trials must be >= 1")
    from .datasets import DATASETS

    errors, splits, algorithms = [], [], []
    for spec in d.splits:
        try:
            splits += parse_split(spec)
        except SweepError as e:
            errors.append(str(e))
    datasets = sorted({spec.partition(":")[0].strip() for spec in d.splits} & set(DATASETS))
    for a in d.algorithms:
        try:
            parse_algorithm(a["name"])
            algorithms.append(a)
        except UnknownAlgorithmError as e:
            errors.append(str(e))
    labels = [a["label"] for a in d.algorithms]
    if len(set(labels)) != len(labels):
        errors.append(f"two algorithm entries share a label ({labels}): give each a distinct "
                      f"`label:` (the row name in the results tables)")
    for check in (lambda: _check_ranges(d.hparam_ranges, "hparam_ranges"),
                  *(lambda a=a: _check_ranges(a["hparam_ranges"], f"algorithm {a['name']}")
                    for a in d.algorithms),
                  lambda: _check_train_args(d.train_args)):
        try:
            check()
        except SweepError as e:
            errors.append(str(e))
    for dataset in datasets:
        for a in algorithms:
            errors += _hparam_problems(d, a, dataset)
    if errors:
        errors = list(dict.fromkeys(errors))
        where = f"sweep {d.name!r}" if d.name else "the sweep"
        raise SweepError(f"{where} cannot run ({len(errors)} problem(s)):\n  - "
                         + "\n  - ".join(errors))
    return splits


def _hparam_problems(d: SweepDefinition, algorithm: dict, dataset: str) -> list[str]:
    """Unknown names (with a did-you-mean), and fixed values or ``choice`` options outside
    their hparam's kind, range or choices (``validation.check_hparams``)."""
    from .hparams_registry import hparam_specs
    from .suggest import did_you_mean
    from .validation import InvalidValueError, check_hparams

    specs = hparam_specs(algorithm["name"], dataset)
    fixed = {**d.hparams, **algorithm["hparams"]}
    ranges = {**d.hparam_ranges, **algorithm["hparam_ranges"]}
    problems = [f"unknown hparam {name!r} for {algorithm['name']} on {dataset}"
                f"{did_you_mean(name, specs)}; known: {', '.join(sorted(specs))}"
                for name in [*fixed, *ranges] if name not in specs]
    values = [{k: v} for k, v in fixed.items() if k in specs]
    values += [{k: option} for k, spec in ranges.items() if k in specs and isinstance(spec, dict)
               and isinstance(spec.get("choice"), list) for option in spec["choice"]]
    for given in values:
        (name, _), = given.items()
        try:
            check_hparams(given, {name: specs[name].default},
                          {name: specs[name].choices} if specs[name].choices_from else None)
        except InvalidValueError as e:
            problems.append(f"algorithm {algorithm['name']}: {e}")
    return problems


# ----------------------------------------------------------------------------- expansion
def run_hparams(d: SweepDefinition, algorithm: dict, dataset: str, hparams_seed: int) -> dict:
    """The hparam values a run gets from the sweep (``--sweep_hparams``): fixed values, then
    (seeds > 0) values drawn from this sweep's ranges, each from its own RNG seeded like the
    registry's (algorithm, dataset, seed, name)."""
    from .hparams_registry import seed_hash

    out = {**d.hparams, **algorithm["hparams"]}
    if hparams_seed > 0:
        ranges = {**d.hparam_ranges, **algorithm["hparam_ranges"]}
        for name, spec in sorted(ranges.items()):
            rng = np.random.RandomState(seed_hash("sweep", algorithm["name"], dataset,
                                                  hparams_seed, name))
            out[name] = from_spec(spec)(rng)
    return out


def run_id(identity: dict) -> str:
    return hashlib.md5(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def make_jobs(d: SweepDefinition, output_dir: str | Path, machine_argv=()) -> list[Job]:
    """Every run of the sweep (validated; duplicates removed), in a stable order."""
    from .train_args import build_parser, experiment_identity

    splits = validate(d)
    parser = build_parser()
    output_dir = Path(output_dir).resolve()
    jobs, seen = [], set()
    for dataset, source, targets in splits:
        for algorithm in d.algorithms:
            for hseed in range(d.n_hparams):
                overrides = run_hparams(d, algorithm, dataset, hseed)
                for trial in d.trial_seeds or range(d.n_trials):
                    argv = ["--dataset", dataset, "--source", source, "--targets", *targets,
                            "--algorithm", algorithm["name"], "--hparams_seed", str(hseed),
                            "--trial_seed", str(trial), *d.train_args]
                    if overrides:
                        argv += ["--sweep_hparams", json.dumps(overrides, sort_keys=True)]
                    argv += list(machine_argv)
                    args = parser.parse_args(argv + ["--output_dir", "."])
                    rid = run_id(experiment_identity(args))
                    if rid in seen:
                        continue
                    seen.add(rid)
                    info = {"dataset": dataset, "source": source, "targets": targets,
                            "algorithm": algorithm["name"], "label": algorithm["label"],
                            "hparams_seed": hseed, "trial_seed": trial}
                    jobs.append(Job(rid, tuple(argv + ["--output_dir", str(output_dir / rid)]),
                                    info))
    return jobs
