"""Checks of a training run's user-facing values, made before any folder, log or model exists:
each failure is one :class:`InvalidValueError` line saying what is wrong and what is allowed.

Hparam rule (values given with ``--hparams`` or a sweep, checked against the registry's
defaults): a value has its default's kind (a bool for a bool, an integer for an int, a finite
number for a float, a string for a string; a default of None accepts anything); a number
whose default is >= 0 must be >= 0; an integer whose default is >= 1 (a size or a count: batch
size, embedding size, centres, ...) must be >= 1, except a duration (a name ending in ``_epochs``,
``_steps`` or ``_every``), where 0 switches the phase off (``warmup_epochs: 0``: no warm-up); a
learning rate or temperature must be > 0.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .suggest import did_you_mean

# torch and .evaluation (which imports torch, ~2 s) are imported where they are used: the
# collect CLI (collect_results.py) needs only check_output_dir and InvalidValueError

SEED_LIMIT = 2 ** 32          # NumPy's seeds are 32-bit


class InvalidValueError(ValueError):
    """A user-given value that cannot run."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidValueError(message)


def check_train_args(args) -> dict:
    """:func:`check_ranges`, then ``--hparams`` (returned parsed: a JSON object), the device,
    the output folder and the local files named. Creates nothing."""
    check_ranges(args)
    check_device(args.device)
    _require(bool(args.output_dir.strip()), "--output_dir is empty: name the run folder")
    check_output_dir(Path(args.output_dir))
    if args.pretrained_file:
        _require(Path(args.pretrained_file).is_file(),
                 f"--pretrained_file not found: {args.pretrained_file}")
    return parse_hparams(args.hparams)


def check_ranges(args) -> None:
    """The numeric flags' ranges and the metric names: what a sweep checks for every run
    before launching (the device and paths are the machine's, checked where the run starts)."""
    for name in ("trial_seed", "hparams_seed", "seed"):
        value = getattr(args, name)
        _require(value is None or 0 <= value < SEED_LIMIT,
                 f"--{name} must be in [0, 2**32), got {value}")
    _require(args.steps is None or args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
    _require(args.epochs is None or (math.isfinite(args.epochs) and args.epochs > 0),
             f"--epochs must be > 0, got {args.epochs}")
    for name in ("checkpoint_freq", "eval_batch_size", "eval_chunk_size"):
        value = getattr(args, name)
        _require(value is None or value >= 1, f"--{name} must be >= 1, got {value}")
    _require(args.open_max_clusters >= 1,
             f"--open_max_clusters must be >= 1, got {args.open_max_clusters}")
    for name in ("num_workers", "open_clusters", "ucdr_min_images", "ucdr_num_classes"):
        _require(getattr(args, name) is None or getattr(args, name) >= 0, f"--{name} must be >= 0, got {getattr(args, name)}")
    _require(0 <= args.label_noise < 1, f"--label_noise must be in [0, 1), got {args.label_noise}")
    for name in ("ucdr_partial_fraction", "ucdr_shared_fraction"):
        value = getattr(args, name)
        _require(0 < value < 1, f"--{name} must be in (0, 1), got {value}")
    _require(math.isfinite(args.log_interval) and args.log_interval > 0,
             f"--log_interval must be > 0 seconds, got {args.log_interval}")
    _require(-1 <= args.open_threshold <= 1,
             f"--open_threshold is a cosine similarity, in [-1, 1]; got {args.open_threshold}")
    from . import evaluation

    for flag in ("metrics", "ucdr_metrics"):
        try:
            evaluation.check_metrics(getattr(args, flag))
        except ValueError as e:
            raise InvalidValueError(f"--{flag}: {e}") from None


def parse_hparams(text: str | None, flag: str = "--hparams") -> dict:
    """``--hparams`` (or ``--sweep_hparams``): a JSON object of values ({} when not given)."""
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidValueError(f"{flag} is not valid JSON ({e}): {text}") from None
    _require(isinstance(overrides, dict),
             f"{flag} must be a JSON object such as '{{\"lr\": 3e-4}}', got {text}")
    return overrides


def check_device(name: str) -> None:
    """``auto``, ``cpu`` or a device this machine has."""
    if name == "auto":
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidValueError(f"--device {name!r} is not a device (auto, cpu, cuda, "
                                f"cuda:1, ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        _require(count > 0, f"--device {name}: no CUDA device is available here (use --device "
                            f"cpu or auto)")
        _require(device.index is None or device.index < count,
                 f"--device {name}: this machine has {count} CUDA device(s)")
    elif device.type not in ("cpu", "mps"):
        raise InvalidValueError(f"--device {name!r}: only auto, cpu and cuda[:N] are supported")


def check_output_dir(path: Path, flag: str = "--output_dir") -> None:
    """A folder, or a path whose nearest existing parent is a folder this process may write
    (a read-only mount refuses even root)."""
    _require(not path.exists() or path.is_dir(), f"{flag} {path} exists and is not a folder")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    _require(existing.is_dir(), f"{flag} {path}: {existing} is not a folder")
    _require(os.access(existing, os.W_OK | os.X_OK),
             f"{flag} {path}: {existing} is not writable")


def _kind_ok(value, default) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
    return isinstance(value, type(default))


DURATIONS = ("_epochs", "_steps", "_every")     # integer hparams where 0 means "off"
INT_LIMIT = 2 ** 31          # sizes and counts torch can hold as a dimension


def check_hparams(overrides: dict, defaults: dict, choices: dict | None = None) -> None:
    """Each override has its default's kind and lies in its range (the module's rule); one
    with declared ``choices`` ({name: allowed values}) is one of them."""
    for name, value in overrides.items():
        if name not in defaults:
            continue                    # unknown names: the registry's own error lists them
        _require(not (isinstance(value, float) and not math.isfinite(value)),
                 f"hparam {name}={json.dumps(value)}: expected a finite number")
        default = defaults[name]
        allowed = (choices or {}).get(name)
        if allowed is not None:
            if value not in allowed:    # the hint only then: it ranks every choice (difflib)
                raise InvalidValueError(f"hparam {name}={json.dumps(value)} is not one of its "
                                        f"choices{did_you_mean(str(value), map(str, allowed))}"
                                        f"{_listed(allowed)}")
            continue
        _require(_kind_ok(value, default),
                 f"hparam {name}={json.dumps(value)}: expected "
                 f"{'a finite number' if isinstance(default, float) else type(default).__name__}"
                 f" like its default {json.dumps(default)}")
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        if isinstance(default, int):
            _require(abs(value) < INT_LIMIT, f"hparam {name}={value} is out of range (an "
                                             f"integer hparam is below 2**31)")
        if name == "lr" or name.endswith(("_lr", "temperature")):
            _require(value > 0, f"hparam {name} must be > 0, got {value}")
        if isinstance(default, int) and default >= 1 and not name.endswith(DURATIONS):
            _require(value >= 1, f"hparam {name} must be >= 1, got {value}")
        if default >= 0:
            _require(value >= 0, f"hparam {name} must be >= 0, got {value}")


def _listed(allowed, limit: int = 12) -> str:
    return (f"; known: {', '.join(map(str, allowed))}" if len(allowed) <= limit
            else f" ({len(allowed)} known)")


def check_batch_fits(batch_size: int, n_images: int, what: str) -> None:
    """A training batch no larger than the images it is drawn from."""
    _require(batch_size <= n_images, f"hparam batch_size={batch_size} is larger than the "
                                     f"{n_images} training images of {what}")
