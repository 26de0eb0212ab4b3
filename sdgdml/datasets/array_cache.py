"""The on-disk cache of the embedded datasets' generated arrays (DigitsDG, GlyphsDG).

An embedded dataset is generated deterministically from package data; generating it costs
seconds that every process would pay again (a sweep's runs, the workers of a distributed run).
Its arrays are kept as ``.npz`` files under ``$SDGDML_CACHE_DIR/<dataset>/<key>/``, where the key
hashes everything the arrays depend on (the generator's version and seed, the versions of the
libraries and the data files that made them), so a cache is never reused for other inputs. The
folder also holds that description as a JSON file. Files are written atomically; a cache that is
absent, unreadable or not writable only costs the generation time.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def cache_folder(dataset: str, provenance: dict) -> Path:
    """``<cache dir>/<dataset>/<16 hex digits of the provenance's hash>``."""
    from .files import cache_dir

    key = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / dataset / key


def _write(path: Path, arrays: Arrays, meta_path: Path, meta: dict) -> None:
    from ..atomic import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not meta_path.exists():
            atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
    except OSError as e:        # a read-only cache only costs time
        log.warning("cannot write the cache file %s: %s", path, e)


def cached_arrays(path: Path, make: Callable[[], Arrays], meta_name: str, meta: dict,
                  what: str) -> Arrays:
    """The arrays stored at ``path`` (an ``.npz``), else ``make()``'s, which are then stored there
    with ``meta`` written beside them as ``meta_name``. ``what`` names them in the log line."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError):
        pass                    # absent or unreadable: generate again
    log.info("%s: generating (once; cached in %s)", what, path.parent)
    arrays = make()
    _write(path, arrays, path.parent / meta_name, meta)
    return arrays
