"""Hyperparameters: defaults and seeded random-search samples per (algorithm, dataset).

Each hparam has a default and a random distribution. A random sample draws each hparam from its
own RNG seeded by a hash of (algorithm, dataset, hparams_seed, name): adding an hparam never
changes the others, and two algorithms' same-named hparams are not tied (DomainBed's hash left
the algorithm out). ``hparams_seed == 0`` means the defaults. A JSON ``--hparams`` override is
applied last.

Names of loss hparams carry their component's prefix (``pa_``, ``st_``, ...), so that
compositions such as ``SoftTriple+SEE+PFML`` never collide.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np

from .algorithms import ALGORITHMS, parse_algorithm

SMALL_IMAGE_DATASETS = {"DigitsDG"}

HparamFn = Callable[[str, Any, Callable[[np.random.RandomState], Any]], None]


class UnknownHparamError(ValueError):
    pass


def seed_hash(*args) -> int:
    """A stable 31-bit integer from any printable arguments."""
    return int(hashlib.md5(repr(args).encode()).hexdigest(), 16) % (2 ** 31)


def _fixed(value):
    return lambda r: value


def _log_uniform(lo: float, hi: float):
    return lambda r: float(10 ** r.uniform(lo, hi))


def _uniform(lo: float, hi: float):
    return lambda r: float(r.uniform(lo, hi))


PAIR_BASED_LOSSES = {"MultiSimilarity"}    # these need class-balanced batches


def _common(hp: HparamFn, small: bool, base: str) -> None:
    """Network and optimisation, shared by every algorithm."""
    hp("backbone", "digits_cnn" if small else "resnet50.tv_in1k", _fixed(None))
    hp("pretrained", not small, _fixed(None))
    hp("embed_dim", 64 if small else 512, _fixed(None))
    hp("freeze_bn", not small, _fixed(None))
    hp("image_size", 32 if small else 224, _fixed(None))
    hp("normalization", "imagenet", _fixed(None))    # or "timm": the backbone's data config
    hp("optimizer", "adamw", _fixed(None))
    hp("lr_schedule", "cosine", _fixed(None))
    hp("lr", 1e-3 if small else 1e-4, _log_uniform(-3.5, -2.5) if small else _log_uniform(-5, -3.5))
    hp("weight_decay", 1e-4, _log_uniform(-6, -3))
    hp("batch_size", 64, lambda r: int(2 ** r.uniform(5, 7)))
    hp("sampler", "m_per_class" if base in PAIR_BASED_LOSSES else "random", _fixed(None))
    hp("samples_per_class", 4, _fixed(None))
    if base in ALGORITHMS:        # standalone algorithms (UEM): no proxies, no warm-up
        return
    hp("warmup_epochs", 0 if small else 1, _fixed(None))
    if base not in PAIR_BASED_LOSSES:     # the loss's own parameters (proxies) train faster
        hp("proxy_lr_mult", 100.0, _log_uniform(1, 3))


# Loss-specific hparams; defaults are each paper's (or pml's) recommended values.
def _proxy_anchor(hp: HparamFn, small: bool) -> None:
    hp("pa_margin", 0.1, _uniform(0.0, 0.3))
    hp("pa_alpha", 32.0, lambda r: float(2 ** r.uniform(3, 6)))


def _proxy_nca(hp: HparamFn, small: bool) -> None:
    hp("pnca_scale", 9.0, _log_uniform(0, 1.5))


def _norm_softmax(hp: HparamFn, small: bool) -> None:
    hp("nsm_temperature", 0.05, _log_uniform(-2, -0.5))


def _soft_triple(hp: HparamFn, small: bool) -> None:
    hp("st_centers", 10, lambda r: int(r.choice([2, 5, 10])))
    hp("st_lambda", 20.0, _uniform(5, 30))
    hp("st_gamma", 0.1, _log_uniform(-2, -0.5))
    hp("st_margin", 0.01, _uniform(0.0, 0.1))


def _arcface(hp: HparamFn, small: bool) -> None:
    hp("arc_margin_deg", 28.6, _uniform(10, 40))
    hp("arc_scale", 64.0, _uniform(16, 64))


def _cosface(hp: HparamFn, small: bool) -> None:
    hp("cos_margin", 0.35, _uniform(0.1, 0.5))
    hp("cos_scale", 64.0, _uniform(16, 64))


def _multi_similarity(hp: HparamFn, small: bool) -> None:
    hp("ms_alpha", 2.0, _uniform(1, 4))
    hp("ms_beta", 50.0, _uniform(20, 60))
    hp("ms_base", 0.5, _uniform(0.3, 0.7))
    hp("ms_epsilon", 0.1, _uniform(0.05, 0.2))


def _see(hp: HparamFn, small: bool) -> None:
    """SEE (Le & Woo): n_aug, lambda and the curriculum are not given in the extended
    abstract; n_aug = 3 is its Fig. 1. The curriculum expands the top fraction of the batch
    (smallest distance to the proxy), growing linearly over epochs from start to end."""
    hp("see_n_aug", 3, lambda r: int(r.choice([1, 2, 3, 4, 6, 8])))
    hp("see_lambda", 0.5, _log_uniform(-1.5, 0.5))
    hp("see_topk_start", 0.25, _uniform(0.0, 0.5))
    hp("see_topk_end", 1.0, _uniform(0.5, 1.0))


def _pfml(hp: HparamFn, small: bool) -> None:
    """PFML (Bhatnagar & Ahuja, Sec. 4.1/4.5): delta in [0.1, 0.35], alpha in [0, 6] with
    3-6 best (alpha = 0 gives no force, so the search starts at 1), M = 15 (CUB, Cars).
    ``pfml_m`` is used by standalone PFML, ``pfml_weight`` by the Base+PFML plug-in;
    ``pfml_delta_rep`` None means equal to ``pfml_delta`` (Fig. 3(d) ablation otherwise)."""
    hp("pfml_m", 15, lambda r: int(r.choice([2, 5, 10, 15, 30])))
    hp("pfml_delta", 0.2, _uniform(0.1, 0.35))
    hp("pfml_delta_rep", None, _fixed(None))
    hp("pfml_alpha", 4.0, _uniform(1, 6))
    hp("pfml_weight", 1.0, _log_uniform(-1.5, 0.5))


def _choice(*options):
    return lambda r: options[int(r.randint(len(options)))]


def _centerpolar(hp: HparamFn, small: bool) -> None:
    """CenterPolar's open design choices (see algorithms/centerpolar.py for what each means)."""
    hp("cp_expand", 1.0, _uniform(0.25, 2.0))                 # C3E max strength s_max
    hp("cp_expand_schedule", "linear", _choice("constant", "linear", "cosine"))
    hp("cp_adaptive", True, _choice(True, False))             # delta in class radii (else radians)
    hp("cp_expand_jitter", 0.5, _uniform(0.0, 1.0))
    hp("cp_max_angle_deg", 90.0, _uniform(45.0, 120.0))
    hp("cp_expand_weight", 1.0, _log_uniform(-1, 0.3))
    hp("cp_detach_expanded", False, _choice(False, True))
    hp("cp_momentum", 0.9, _uniform(0.0, 0.99))               # centroid EMA (0: batch centroids)
    hp("cp_c4_weight", 1.0, _log_uniform(-1, 0.5))
    hp("cp_c4_on_expanded", True, _choice(True, False))
    hp("cp_separation", "margin", _choice("margin", "softmax"))
    hp("cp_sep_weight", 1.0, _log_uniform(-1, 0.5))
    hp("cp_margin", 1.2, _uniform(0.8, 1.5))                  # distance between unit centroids
    hp("cp_scale", 16.0, _uniform(8.0, 32.0))                 # centroid softmax scale


def _uem(hp: HparamFn, small: bool) -> None:
    """UEM's choices where the slides are silent (see algorithms/uem.py); the four switches
    uem_proto_mix / uem_sel / uem_spda / uem_sn2m are the slides' ablations."""
    hp("uem_temperature", 0.1, _log_uniform(-1.5, -0.5))
    hp("uem_proto_temperature", 0.1, _log_uniform(-1.5, -0.5))
    hp("uem_num_prototypes", 0, _fixed(None))            # 0: the dataset's number of classes
    hp("uem_queue_size", 0, _fixed(None))                # 0: one source epoch of samples
    hp("uem_cluster_every", 1.0, _choice(0.5, 1.0, 2.0))  # epochs between k-means runs
    hp("uem_kmeans_iters", 20, _fixed(None))
    hp("uem_kmeans_backend", "torch", _fixed(None))      # torch | sklearn
    hp("uem_proto_mix", True, _fixed(None))              # False: "w/o P.M." (no L_PNCE)
    hp("uem_sel", True, _fixed(None))                    # False: "w/o SEL"
    hp("uem_sel_weight", 1.0, _log_uniform(-1, 0.5))
    hp("uem_spda", True, _fixed(None))                   # False: "w/o SPDA"
    hp("uem_spda_weight", 0.1, _log_uniform(-2, 0))
    hp("uem_disc_hidden", 256, _fixed(None))
    hp("uem_disc_lr_mult", 1.0, _log_uniform(-0.5, 1))
    hp("uem_sn2m", True, _fixed(None))                   # False: "w/o SN2M"
    hp("uem_sn2m_mode", "switch", _fixed(None))          # switch | instance | prototype
    hp("uem_sn2m_weight", 1.0, _log_uniform(-1, 0.5))
    hp("uem_sn2m_threshold", 0.5, _uniform(0.0, 0.8))
    hp("uem_stage2_start", 0.5, _uniform(0.2, 0.7))      # fraction of training
    hp("uem_crop_scale", 0.6 if small else 0.2, _uniform(0.2, 0.8))
    hp("uem_color_jitter", 0.4, _uniform(0.0, 0.6))
    hp("uem_flip", not small, _fixed(None))              # a flipped digit is another glyph


# Every algorithm component (base loss, plug-in, standalone algorithm): name -> fn(hp, small).
# A component used both as a base and as a plug-in (PFML) declares all its hparams once.
COMPONENT_HPARAMS: dict[str, Callable[[HparamFn, bool], None]] = {
    "ProxyAnchor": _proxy_anchor,
    "ProxyNCA": _proxy_nca,
    "NormSoftmax": _norm_softmax,
    "SoftTriple": _soft_triple,
    "ArcFace": _arcface,
    "CosFace": _cosface,
    "MultiSimilarity": _multi_similarity,
    "SEE": _see,
    "PFML": _pfml,
    "CenterPolar": _centerpolar,
    "UEM": _uem,
}


def _space(algorithm: str, dataset: str) -> dict[str, tuple[Any, Callable]]:
    """name -> (default, random_fn) for every hparam of ``algorithm`` on ``dataset``."""
    space: dict[str, tuple[Any, Callable]] = {}

    def hp(name, default, random_fn):
        if name in space:
            raise KeyError(f"hparam {name!r} is declared twice for {algorithm}")
        space[name] = (default, random_fn)

    small = dataset in SMALL_IMAGE_DATASETS
    components = parse_algorithm(algorithm)
    _common(hp, small, components[0])
    for c in components:
        COMPONENT_HPARAMS[c](hp, small)
    return space


def default_hparams(algorithm: str, dataset: str) -> dict[str, Any]:
    return {k: d for k, (d, _) in _space(algorithm, dataset).items()}


def random_hparams(algorithm: str, dataset: str, seed: int) -> dict[str, Any]:
    out = {}
    for name, (default, random_fn) in _space(algorithm, dataset).items():
        value = random_fn(np.random.RandomState(seed_hash(algorithm, dataset, seed, name)))
        out[name] = default if value is None else value
    return out


def get_hparams(algorithm: str, dataset: str, hparams_seed: int = 0,
                overrides: dict | None = None) -> dict[str, Any]:
    """Defaults (seed 0) or a random sample, then ``overrides`` (unknown names are an error)."""
    hparams = (default_hparams(algorithm, dataset) if hparams_seed == 0
               else random_hparams(algorithm, dataset, hparams_seed))
    for k, v in (overrides or {}).items():
        if k not in hparams:
            raise UnknownHparamError(f"unknown hparam {k!r} for {algorithm} on {dataset}; "
                           f"known: {', '.join(sorted(hparams))}")
        hparams[k] = v
    return hparams
