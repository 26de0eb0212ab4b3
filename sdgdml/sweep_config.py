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
``reported`` holds the published numbers the sweep reproduces (``sdgdml.reported``; read by
``collect_results.py --reported``, never by a run).

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
             "n_trials", "trial_seeds", "hparams", "hparam_ranges", "train_args", "reported")


MAX_RUNS = 10_000      # a larger sweep needs --max_runs (its sweep.json grows ~1 KiB a run)


class SweepError(ValueError):
    """A sweep definition that cannot be run (unknown name, bad value, ...); ``problems``:
    each one (the message lists them all)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]

    @classmethod
    def of(cls, problems: list[str], where: str = "the sweep") -> "SweepError":
        """One error for every problem found (duplicates once)."""
        problems = list(dict.fromkeys(problems))
        if len(problems) == 1:
            return cls(problems[0])
        return cls(f"{where} cannot run ({len(problems)} problem(s)):\n  - "
                   + "\n  - ".join(problems), problems)


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
        for key in ("hparams", "hparam_ranges"):
            if not isinstance(entry.get(key) or {}, dict):
                raise SweepError(f"algorithm entry {entry['name']!r}: {key} is a mapping, got "
                                 f"{entry[key]!r}")
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
    """Read a sweep file (YAML), every field's type checked (all problems at once); names are
    validated later by :func:`validate`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {', '.join(FILE_KEYS)}")
    if "\\u0000" in json.dumps(data, default=str):    # no command line can hold one
        raise SweepError(f"{path} holds a NUL character")
    problems = []

    def field_of(key, kind, what, default):
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{path}: {key} is {what}, got {value!r}")
            return default
        return value
    unknown = set(map(str, data)) - set(FILE_KEYS)
    if unknown:
        problems.append(f"{path}: unknown keys {sorted(unknown)}; known: {', '.join(FILE_KEYS)}")
    from .reported import ReportedError, parse as parse_reported

    try:     # the paper's numbers (collect_results.py --reported); not part of any run
        parse_reported(data.get("reported"), f"{path}: reported")
    except ReportedError as e:
        problems.append(str(e))
    splits = [*field_of("splits", list, "a list of splits", []),
              *field_of("datasets", list, "a list of datasets", [])]
    train_args = field_of("train_args", dict, "a mapping of train flags to values", {})
    algorithms = []
    for entry in field_of("algorithms", list, "a list of algorithms", []):
        try:
            algorithms.append(_algorithm_entry(entry))
        except SweepError as e:
            problems.append(f"{path}: {e}")
    counts, seeds = {}, None
    for key in ("n_hparams", "n_trials"):
        try:
            counts[key] = _count(data, key, path)
        except SweepError as e:
            problems.append(str(e))
    try:
        seeds = _seed_list(data, path)
    except SweepError as e:
        problems.append(str(e))
    d = SweepDefinition(
        splits=[str(s) for s in splits], algorithms=algorithms,
        n_hparams=counts.get("n_hparams", 1), n_trials=counts.get("n_trials", 1),
        hparams=dict(field_of("hparams", dict, "a mapping of hparam names to values", {})),
        hparam_ranges=dict(field_of("hparam_ranges", dict,
                                    "a mapping of hparam names to ranges", {})),
        train_args=_train_args_from_mapping(train_args),
        name=str(field_of("name", (str, int, float), "a name", path.stem)),
        trial_seeds=seeds)
    field_of("description", str, "a text", "")
    if problems:
        raise SweepError.of(problems, str(path))
    return d


def _seed_list(data: dict, path) -> list[int] | None:
    seeds = data.get("trial_seeds")
    if seeds is None:
        return None
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise SweepError(f"{path}: trial_seeds is a non-empty list of integers, got {seeds!r}")
    return seeds


def from_cli(args) -> SweepDefinition:
    """The definition given by ``launch`` flags (``--config`` file values, then flags); every
    problem of the file and the flags at once (:class:`SweepError`)."""
    d, problems = read_cli(args)
    if problems:
        raise SweepError.of(problems)
    return d


def read_cli(args) -> tuple[SweepDefinition, list[str]]:
    """:func:`from_cli`'s definition (what could be read) and its problems."""
    from .validation import parse_hparams

    problems = []
    try:
        d = from_file(args.config) if args.config else SweepDefinition(splits=[], algorithms=[])
    except SweepError as e:
        problems, d = e.problems, SweepDefinition(splits=[], algorithms=[])
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
            d.hparams = {**d.hparams, **parse_hparams(args.hparams)}
        except ValueError as e:
            problems.append(str(e))
    if args.train_args:         # --train_args overrides the file's values of the same flags
        try:
            d.train_args = merge_flags(d.train_args + shlex.split(args.train_args))
        except ValueError as e:            # shlex: "No closing quotation"
            problems.append(f"--train_args {args.train_args!r} cannot be split into flags "
                            f"({e}; quote as in a shell)")
    return d, problems


def merge_flags(argv: list[str]) -> list[str]:
    """``argv`` with each ``--flag`` once: a later occurrence's values replace an earlier
    one's, in the earlier one's place (what argparse would use, printed once)."""
    groups: dict[str, list[str]] = {}
    for token in argv:
        if token.startswith("--"):
            key = token.split("=", 1)[0]
            groups[key] = [token]
            current = groups[key]
        elif groups:
            current.append(token)
        else:
            groups.setdefault("", []).append(token)
    return [t for g in groups.values() for t in g]


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
    from . import hparams_registry
    from .algorithms import UnknownAlgorithmError, parse_algorithm
    from .suggest import did_you_mean

    from .datasets import DATASETS
    from .validation import SEED_LIMIT

    errors, splits, algorithms = [], [], []
    if not d.splits:
        errors.append("the sweep has no datasets/splits (--datasets, --splits or `splits:`)")
    if not d.algorithms:
        errors.append("the sweep has no algorithms (--algorithms or `algorithms:`)")
    if not 1 <= d.n_hparams < SEED_LIMIT or not 1 <= d.n_trials < SEED_LIMIT:
        errors.append(f"n_hparams and n_trials must be in [1, 2**32), got {d.n_hparams} and "
                      f"{d.n_trials}")
    if d.trial_seeds and not all(0 <= t < SEED_LIMIT for t in d.trial_seeds):
        errors.append(f"trial_seeds must be in [0, 2**32), got {d.trial_seeds}")
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
            known = hparams_registry.hparam_specs(a["name"], dataset)
            for name in [*d.hparams, *d.hparam_ranges, *a["hparams"], *a["hparam_ranges"]]:
                if name not in known:
                    errors.append(f"unknown hparam {name!r} for {a['name']} on {dataset}"
                                  f"{did_you_mean(name, known)}; known: {', '.join(sorted(known))}")
            errors += _value_problems(d, a, known, f"{a['name']} on {dataset}")
    if errors:
        raise SweepError.of(errors, f"sweep {d.name!r}" if d.name else "the sweep")
    return splits


def _value_problems(d: SweepDefinition, algorithm: dict, specs: dict, where: str
                    ) -> list[str]:
    """The fixed hparams and every range's bounds and choices that a run of ``algorithm``
    would refuse (``validation.check_hparams``: kind, range, allowed values; ``specs``:
    ``hparams_registry.hparam_specs``)."""
    from .validation import InvalidValueError, check_hparams

    values = [(name, v) for name, v in {**d.hparams, **algorithm["hparams"]}.items()]
    for name, spec in {**d.hparam_ranges, **algorithm["hparam_ranges"]}.items():
        try:
            from_spec(spec)             # a malformed range is reported by _check_ranges
        except ValueError:
            continue
        values += [(name, v) for v in next(iter(spec.values()))]   # bounds or choices
    problems = []
    for name, value in values:
        if name not in specs:
            continue                    # reported as unknown
        spec = specs[name]
        try:
            check_hparams({name: value}, {name: spec.default},
                          {name: spec.choices} if spec.choices_from is not None else None)
        except InvalidValueError as e:
            problems.append(f"{where}: {e}")
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


def make_jobs(d: SweepDefinition, output_dir: str | Path, machine_argv=(),
              max_runs: int = MAX_RUNS) -> list[Job]:
    """Every run of the sweep (validated; duplicates removed), in a stable order; a sweep of
    more than ``max_runs`` runs is refused before it is expanded (with its size)."""
    splits = validate(d)
    trials = d.trial_seeds or range(d.n_trials)
    count = len(splits) * len(d.algorithms) * d.n_hparams * len(trials)
    expanded = _expand(d, splits, trials, Path(output_dir).resolve(), list(machine_argv))
    if count > max_runs:
        first = next(expanded)
        size = count * len(json.dumps({**first.info, "argv": first.argv})) / 2 ** 20
        raise SweepError(f"the sweep has {count:,} runs, more than --max_runs {max_runs:,}: "
                         f"its sweep.json would take about {size:,.0f} MiB (and its launch "
                         f"several times that in memory); raise --max_runs to launch it")
    jobs, seen = [], set()
    for job in expanded:
        if job.run_id not in seen:
            seen.add(job.run_id)
            jobs.append(job)
    return jobs


def _expand(d: SweepDefinition, splits, trials, output_dir: Path, machine_argv: list[str]):
    """Each run's Job, duplicates included."""
    from .train_args import build_parser, experiment_identity

    parser = build_parser()
    for dataset, source, targets in splits:
        for algorithm in d.algorithms:
            for hseed in range(d.n_hparams):
                overrides = run_hparams(d, algorithm, dataset, hseed)
                for trial in trials:
                    argv = ["--dataset", dataset, "--source", source, "--targets", *targets,
                            "--algorithm", algorithm["name"], "--hparams_seed", str(hseed),
                            "--trial_seed", str(trial), *d.train_args]
                    if overrides:
                        argv += ["--sweep_hparams", json.dumps(overrides, sort_keys=True)]
                    argv = merge_flags(argv + list(machine_argv))
                    rid = run_id(experiment_identity(parser.parse_args(argv + ["--output_dir",
                                                                               "."])))
                    info = {"dataset": dataset, "source": source, "targets": targets,
                            "algorithm": algorithm["name"], "label": algorithm["label"],
                            "hparams_seed": hseed, "trial_seed": trial}
                    yield Job(rid, tuple(argv + ["--output_dir", str(output_dir / rid)]), info)
