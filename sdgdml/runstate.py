"""What a run needs to stop and resume exactly: seeding, RNG states, atomic checkpoint files
loaded without running code, and the peak memory recorded with each checkpoint."""
from __future__ import annotations

import math
import pickle
import random
import re
import resource
import time
import zipfile
from pathlib import Path

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


def resume_state(path: Path, device, discard_bad: bool, log) -> dict | None:
    """The checkpoint a restarted run resumes from (None: none, start from scratch). One that
    cannot be loaded stops the run (:class:`CheckpointError`), or with ``discard_bad``
    (``--discard_bad_checkpoint``) is set aside and the run starts over."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, device)
    except CheckpointError as e:
        if not discard_bad:
            raise CheckpointError(f"{e}; --discard_bad_checkpoint sets it aside and starts the "
                                  f"run over") from None
        log.warning("%s; set aside as %s, the run starts over", e, set_aside(path))
        return None


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite."""


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
