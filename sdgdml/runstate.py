"""What a run needs to stop and resume exactly: seeding, RNG states, atomic checkpoint files
loaded without running code, the checks that a checkpoint is this run's (its identity) and
good (finite), and the peak memory recorded with each checkpoint.

A checkpoint holds ``algorithm`` (the algorithm's state), ``rng``, ``step`` and ``identity``:
the experiment's identity (``train_args.experiment_identity``, what ``args.json`` is compared
with), the algorithm's name and the run's total steps. A resumed run refuses one of another
experiment or algorithm, one whose tensors have other names or shapes than its own, a step that
is not an integer in [0, total], one past its end, and one without its step's record in
``results.jsonl`` (a checkpoint always follows its record). Older checkpoints (sdgdml 0.1.0
without identity) have none: they resume only when the record at their step names this experiment."""
from __future__ import annotations

import json
import math
import pickle
import random
import re
import resource
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import atomic_write


# what checkpoints written before 0.1.0 was safe-loaded hold beyond tensors: NumPy's RNG state as an ndarray
# (rebuilding a uint32 array runs no user code); newer checkpoints store it as a tensor
LEGACY_SAFE_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                       type(np.dtype(np.uint32))]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely (corrupt, foreign or holding code)."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG's state (saved in checkpoints, so a resumed run draws what an
    uninterrupted one would), as tensors, numbers and tuples only: what
    ``torch.load(weights_only=True)`` reads without unpickling any class."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill never leaves half a file,
    a failure (full disk: ``atomic.DiskFullError``) leaves no temporary file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path, device) -> dict:
    """A checkpoint, read with ``weights_only=True``: tensors, containers and numbers only,
    so a planted or foreign ``checkpoint.pt`` cannot run code. Raises
    :class:`CheckpointError` saying why it cannot be used."""
    try:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:          # a class/function outside the allow-list
        found = re.search(r"(?:unsupported GLOBAL|but got) (\S+)", str(e))
        raise CheckpointError(f"{path} holds objects a checkpoint never contains"
                              f"{' (' + found.group(1).strip('<>') + ')' if found else ''} and "
                              f"was not loaded (nothing in it ran)") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or not {"algorithm", "rng", "step"} <= set(state):
        raise CheckpointError(f"{path} is not an sdgdml checkpoint (no algorithm/rng/step)")
    return state


def resume_state(path: Path, device, discard_bad: bool, log,
                 check: Callable[[dict], None] = lambda state: None) -> dict | None:
    """The checkpoint a restarted run resumes from (None: none, start from scratch). One that
    cannot be loaded, or that ``check`` refuses (:func:`check_resumable`), stops the run
    (:class:`CheckpointError`), or with ``discard_bad`` (``--discard_bad_checkpoint``) is set
    aside and the run starts over."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, device)
        check(state)
        return state
    except CheckpointError as e:
        if not discard_bad:
            raise CheckpointError(f"{e}; --discard_bad_checkpoint sets it aside and starts the "
                                  f"run over") from None
        log.warning("%s; set aside as %s, the run starts over", e, set_aside(path))
        return None


def checkpoint_identity(experiment: dict, algorithm: str, total_steps: int) -> dict:
    """What a checkpoint is a checkpoint of (saved with it; JSON values only, so that
    ``weights_only`` loading reads it and it compares equal to ``args.json``'s)."""
    return {"experiment": json.loads(json.dumps(experiment)), "algorithm": algorithm,
            "total_steps": total_steps}


def tensor_shapes(modules: dict) -> dict[str, list[int]]:
    """name -> shape of a module state dict's tensors."""
    return {k: list(v.shape) for k, v in modules.items() if isinstance(v, torch.Tensor)}


def _differences(old: dict, new: dict, n: int = 3) -> str:
    """``key: A there, B here`` for up to n keys whose values differ (missing: default)."""
    def show(d, k):
        return json.dumps(d[k]) if k in d else "default"
    keys = sorted(k for k in set(old) | set(new) if old.get(k, show) != new.get(k, show))
    shown = ", ".join(f"{k}: {show(old, k)} there, {show(new, k)} here" for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_resumable(state: dict, path: Path, expected: dict, shapes: dict[str, list[int]],
                    record_identity: Callable[[int], dict | None],
                    lazy: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointError` unless ``state`` is a checkpoint of this run: its
    identity is ``expected`` (:func:`checkpoint_identity`), its module tensors have
    ``shapes``, its step is an integer in [0, total] and the run's ``results.jsonl`` holds the
    record of that step (``record_identity(step)``: that record's experiment identity, None
    without one); without an identity (an older checkpoint), that record must name this
    experiment. Tensors under a ``lazy`` prefix (``Algorithm.LAZY_STATE``: state created on
    first use or resized during training, which the algorithm's ``load_state_dict`` rebuilds)
    are left out of the shape comparison."""
    step, identity = state["step"], state.get("identity")
    total = expected["total_steps"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path} has a malformed step ({step!r}; a step is an integer "
                              f">= 0)")
    if identity is not None:
        if not isinstance(identity, dict) or identity.get("algorithm") != expected["algorithm"]:
            what = identity.get("algorithm") if isinstance(identity, dict) else identity
            raise CheckpointError(f"{path} is a checkpoint of {what!r}, not of this run's "
                                  f"{expected['algorithm']}")
        if identity.get("experiment") != expected["experiment"]:
            found = identity.get("experiment")
            diff = _differences(found if isinstance(found, dict) else {}, expected["experiment"])
            raise CheckpointError(f"{path} is a checkpoint of another experiment ({diff})")
    modules = state["algorithm"].get("modules") if isinstance(state["algorithm"], dict) else None
    def fixed(d):       # the tensors whose names and shapes a run fixes from its start
        return {k: v for k, v in d.items() if not (lazy and k.startswith(lazy))}
    found = tensor_shapes(modules) if isinstance(modules, dict) else {}
    found, shapes = fixed(found), fixed(shapes)
    if not isinstance(modules, dict) or found != shapes:
        raise CheckpointError(f"{path} does not fit this run's {expected['algorithm']} "
                              f"(tensors {_differences(found, shapes)})")
    if step > total:
        raise CheckpointError(f"{path} is at step {step}, past the end of this run "
                              f"({total} steps)")
    recorded = record_identity(step)
    if recorded is None:
        raise CheckpointError(f"{path} is at step {step} but results.jsonl holds no record of "
                              f"step {step}: it was not written by this run")
    if identity is None and json.loads(json.dumps(recorded)) != expected["experiment"]:
        raise CheckpointError(f"{path} has no identity (an older sdgdml's) and the record of "
                              f"its step {step} is of another experiment")


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite."""


def check_finite_state(state: dict, step: int, last_checkpoint: Path,
                       last_step: int | None) -> None:
    """Refuse to checkpoint a state holding NaN/inf (parameters, buffers such as BatchNorm's
    running statistics, optimizer moments): the run stops and the last good checkpoint stays
    as it is."""
    bad = [name for name, t in _tensors(state) if t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteLossError(
            f"the model's state is not finite at step {step} ({', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}): training stopped; "
            f"{_kept(last_checkpoint, last_step)}. A lower lr or another seed may help")


def _tensors(obj, prefix: str = ""):
    """(dotted name, tensor) of every tensor in nested dicts/lists."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def _kept(last_checkpoint: Path, last_step: int | None) -> str:
    return (f"the last finite checkpoint ({last_checkpoint}, step {last_step}) is kept"
            if last_step is not None else "no checkpoint was written yet")


def check_finite_losses(losses: dict[str, float], step: int, last_checkpoint: Path,
                        last_step: int | None) -> None:
    """Stop the run at the first NaN/inf loss (before it is checkpointed): the last good
    checkpoint stays as it is."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        kept = (f"the last good checkpoint ({last_checkpoint}, step {last_step}) is kept"
                if last_step is not None else "no checkpoint was written yet")
        raise NonFiniteLossError(
            f"{', '.join(f'{k} is {v}' for k, v in bad.items())} at step {step}: training "
            f"stopped; {kept}. A lower lr or another seed may help")


def set_aside(path: Path) -> Path:
    """Rename a checkpoint that cannot be used to ``<name>.bad-<time>`` (kept for a look,
    out of the way of a fresh start); returns the new path."""
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    return aside


def peak_memory_gb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
