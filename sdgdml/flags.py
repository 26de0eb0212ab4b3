"""The roles of ``python -m sdgdml.train``'s flags, one table (the parser refuses a flag
missing here):

- ``EXPERIMENT``: part of the experiment's identity (what a sweep hashes into the run id, what a
  resumed run must match), the same within one results table (``--steps``, ``--protocol``);
- ``CELL``: part of the identity, and what varies between the cells of one results table
  (dataset, split, algorithm, hparams, seeds);
- ``MACHINE``: where things are and how fast they run; never part of the identity;
- ``SWEEP``: set by ``sdgdml.sweep`` for each run (a sweep file may not set it).

A light module (no torch): collect_results reads it too.
"""
from __future__ import annotations

EXPERIMENT, CELL, MACHINE, SWEEP = (frozenset({r}) for r in ("experiment", "cell", "machine",
                                                                "sweep"))

FLAG_ROLES: dict[str, frozenset] = {
    "dataset":               CELL | SWEEP,
    "split":                 CELL | SWEEP,
    "source":                CELL | SWEEP,
    "targets":               CELL | SWEEP,
    "data_dir":              MACHINE,
    "dataset_config":        MACHINE,
    "output_dir":            MACHINE | SWEEP,
    "algorithm":             CELL | SWEEP,
    "hparams":               CELL | SWEEP,
    "sweep_hparams":         CELL | SWEEP,
    "hparams_seed":          CELL | SWEEP,
    "trial_seed":            CELL | SWEEP,
    "seed":                  CELL,
    "epochs":                EXPERIMENT,
    "steps":                 EXPERIMENT,
    "recipe":                EXPERIMENT,
    "checkpoint_freq":       EXPERIMENT,
    "protocol":              EXPERIMENT,
    "val_protocol":          EXPERIMENT,
    "ucdr":                  EXPERIMENT,
    "ucdr_partial_fraction": EXPERIMENT,
    "ucdr_shared_fraction":  EXPERIMENT,
    "ucdr_min_images":       EXPERIMENT,
    "ucdr_num_classes":      EXPERIMENT,
    "ucdr_metrics":          EXPERIMENT,
    "open_rule":             EXPERIMENT,
    "open_threshold":        EXPERIMENT,
    "open_clusters":         EXPERIMENT,
    "open_max_clusters":     EXPERIMENT,
    "label_noise":           EXPERIMENT,
    "metrics":               EXPERIMENT,
    "proxy_alignment":       EXPERIMENT,
    "no_eval_at_start":      EXPERIMENT,
    "device":                MACHINE,
    "num_workers":           MACHINE,
    "skip_corrupt":          MACHINE,
    "eval_batch_size":       MACHINE,
    "eval_chunk_size":       MACHINE,
    "pretrained_file":       MACHINE,
    "keep_checkpoint":       MACHINE,
    "discard_bad_checkpoint": MACHINE,
    "save_model":            MACHINE,
    "quiet":                 MACHINE,
    "logger":                MACHINE,
    "log_interval":          MACHINE,
    "config":                MACHINE,
    "precision":             EXPERIMENT,    # bf16/fp16 change the numbers (sdgdml/speed.py)
    "jpeg_draft":            EXPERIMENT,    # decodes other pixels (slightly)
    "lr_scaling":            EXPERIMENT,
    "channels_last":         MACHINE,       # a memory layout: the same model
    "compile":               MACHINE,       # the same numbers up to float rounding
}

MACHINE_ARGS = tuple(k for k, r in FLAG_ROLES.items() if MACHINE <= r)
SWEEP_OWNED = tuple(k for k, r in FLAG_ROLES.items() if SWEEP <= r)
CELL_ARGS = tuple(k for k, r in FLAG_ROLES.items() if CELL <= r)
