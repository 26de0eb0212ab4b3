"""What is registered, listed from the registries themselves (``timm.list_models()`` style):

    python -m sdgdml.list algorithms          # every algorithm name you can train
    python -m sdgdml.list losses | plugins | launchers | metrics
    python -m sdgdml.list datasets [NAME]     # domains, classes and every single-source split
    python -m sdgdml.list recipes [NAME]      # every value a recipe sets, and its source
    python -m sdgdml.list hparams ProxyAnchor+SEE [--dataset DigitsDG]
    python -m sdgdml.list --json hparams SoftTriple

Output is Markdown (GitHub tables: paste it into an issue or a README) or, with ``--json``,
the same rows as JSON. Each subject is a function returning rows (a list of dicts) computed
from the registries (``sdgdml.algorithms``, ``sdgdml.datasets.DATASETS``,
``sdgdml.recipes.RECIPES``, ``sdgdml.launchers.LAUNCHERS``, the hparam declarations and the
metric definitions of ``sdgdml.evaluation``), so a newly registered component is listed without
touching this file.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Callable

from tabulate import tabulate

from .suggest import did_you_mean


class ListError(ValueError):
    """An unknown subject or name."""


_NOT_AN_END = ("Eq", "al", "e.g", "i.e", "Sec", "Fig", "Alg", "vs", "cf")
MAX_TEXT = 150


def first_sentence(obj) -> str:
    """The first sentence of a docstring (of ``obj``, else of its module), on one line."""
    doc = getattr(obj, "__doc__", None) or ""
    if (not doc.strip() or "module docstring" in doc) and hasattr(obj, "__module__"):
        doc = sys.modules[obj.__module__].__doc__ or doc
    return sentence(doc)


def sentence(text: str) -> str:
    """The first sentence of ``text`` on one line (a period after an abbreviation such as
    "Eq." or "et al." ends none), at most ``MAX_TEXT`` characters."""
    text = " ".join(text.split())
    for m in re.finditer(r"(\w*)[.!?](?=\s+[A-Z(`]|$)", text):
        if m.group(1) not in _NOT_AN_END:
            text = text[: m.end()]
            break
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1].rsplit(" ", 1)[0] + " …"


# ----------------------------------------------------------------------------- algorithms
def algorithms() -> list[dict]:
    """Every trainable name: base losses, plug-in shorthands, standalone algorithms."""
    from .algorithms import data_needs, registry

    rows = []
    for kind in ("loss", "plugin", "algorithm"):
        for name in registry.names(kind):
            c = registry.component(kind, name)
            if kind == "plugin" and not c.default_base:
                continue
            rows.append({"name": name,
                         "kind": {"loss": "base loss", "algorithm": "standalone"}.get(
                             kind, f"= {c.default_base}+{name}"),
                         "needs": data_needs(name).describe(),
                         "description": first_sentence(c.cls)})
    return rows


def losses() -> list[dict]:
    from .algorithms import registry

    return [{"name": n, "proxies": bool(getattr(registry.component("loss", n).cls,
                                                "HAS_PROXIES", False)),
             "description": first_sentence(registry.component("loss", n).cls)}
            for n in registry.names("loss")]


def plugins() -> list[dict]:
    """Plug-ins, appended to a base loss with '+' (``ProxyAnchor+SEE``)."""
    from .algorithms import registry

    return [{"name": n, "example": f"{c.default_base or 'ProxyAnchor'}+{n}",
             "stands alone as": f"{n} = {c.default_base}+{n}" if c.default_base else "",
             "description": first_sentence(c.cls)}
            for n in registry.names("plugin") for c in [registry.component("plugin", n)]]


def algorithm_names() -> list[str]:
    return [r["name"] for r in algorithms()]


# ----------------------------------------------------------------------------- hparams
def hparams(algorithm: str, dataset: str = "DigitsDG") -> list[dict]:
    """Every hparam of ``algorithm`` on ``dataset`` (``hparams_registry.hparam_specs``):
    default, random-search distribution, allowed values, one-line meaning."""
    from .hparams_registry import hparam_specs

    check_algorithm(algorithm)
    check_dataset(dataset)
    rows = []
    for name, spec in hparam_specs(algorithm, dataset).items():
        sampler = str(spec.sampler)
        rows.append({"hparam": name, "default": spec.default,
                     "random search": "— (fixed)" if sampler.startswith("fixed") else sampler,
                     "choices": _choices(spec.choices), "meaning": spec.help or ""})
    return rows


def _choices(choices, shown: int = 6) -> str:
    if not choices:
        return ""
    text = ", ".join(map(str, choices[:shown]))
    return text + (f", … ({len(choices)} in all)" if len(choices) > shown else "")


# ----------------------------------------------------------------------------- datasets
def datasets(name: str | None = None) -> list[dict]:
    """One row per dataset (all registered ones), or per split of dataset ``name``."""
    from .datasets import DATASETS, format_split

    if name:
        cls = DATASETS[check_dataset(name)]
        default = cls.default_split()
        return [{"split": format_split(cls.NAME, s, t),
                 "default": "yes" if (s, t) == default else ""}
                for s, t in cls.single_source_splits()]
    rows = []
    for n, cls in DATASETS.items():
        seen = len(cls.seen_class_ids()) if cls.CLASSES else 0
        rows.append({"dataset": n, "domains": ", ".join(cls.DOMAINS),
                     "default source": cls.DEFAULT_SOURCE,
                     "classes (seen / unseen)": f"{len(cls.CLASSES)} ({seen} / "
                                                f"{len(cls.CLASSES) - seen})",
                     "protocol": cls.DEFAULT_PROTOCOL,
                     "needs --data_dir": "yes" if cls.NEEDS_DATA_DIR else "no (embedded)",
                     "splits": len(cls.single_source_splits())})
    return rows


# ----------------------------------------------------------------------------- recipes
def recipes(name: str | None = None) -> list[dict]:
    """One row per value a recipe sets (all recipes, or ``name``'s), with its source."""
    from .recipes import RECIPES

    names = [check_name(name, RECIPES, "recipe")] if name else list(RECIPES)
    rows = []
    for r in (RECIPES[n] for n in names):
        values = [("", k, v) for k, v in r.hparams.items()]
        values += [(d, k, v) for d, over in r.per_dataset.items() for k, v in over.items()]
        if r.epochs is not None:
            values.append(("", "epochs (run length)", r.epochs))
        if getattr(r, "global_batch_size", None):
            values.append(("", "global batch (over all processes)", r.global_batch_size))
        rows += [{"recipe": r.name, "dataset": d or "all", "setting": k, "value": v,
                  "source": r.source} for d, k, v in values]
    return rows


def recipe_notes(name: str | None = None) -> list[str]:
    """What each recipe reproduces of its source, and what the source leaves open (our
    defaults stay)."""
    from .recipes import RECIPES

    notes = []
    for n, r in RECIPES.items():
        if not name or n == name:
            if getattr(r, "reproduces", ""):
                notes.append(f"{n}: reproduces: {r.reproduces}")
            if r.unknown:
                notes.append(f"{n}: not in the source: {r.unknown}")
    return notes


# ----------------------------------------------------------------------------- the rest
def launchers() -> list[dict]:
    from .launchers import LAUNCHERS

    doc = sys.modules[LAUNCHERS[next(iter(LAUNCHERS))].__module__].__doc__ or ""
    bullets = _doc_bullets(doc)
    return [{"launcher": n, "description": bullets.get(n) or first_sentence(cls)}
            for n, cls in LAUNCHERS.items()]


def metrics() -> list[dict]:
    """The metrics ``--metrics`` accepts, from ``sdgdml.evaluation``'s definitions."""
    from . import evaluation

    bullets = _doc_bullets(evaluation.__doc__ or "")
    rows = [{"metric": n, "meaning": text} for n, text in bullets.items()]
    return rows


def _doc_bullets(doc: str) -> dict[str, str]:
    """{name: first sentence} of the ``- ``name``: text`` bullets of a docstring."""
    out = {}
    for m in re.finditer(r"^- ((?:``[^`]+``(?:, )?)+): (.+?)(?=^- |^\S|\n\n|\Z)", doc,
                         re.M | re.S):
        text = " ".join(m.group(2).split())
        for name in re.findall(r"``([^`]+)``", m.group(1)):
            out[name] = sentence(text.split("; ")[0]).rstrip(";.")
    return out


# ----------------------------------------------------------------------------- checks
def check_name(name: str, known, what: str) -> str:
    if name not in known:
        raise ListError(f"unknown {what} {name!r}{did_you_mean(name, known)}; known: "
                        f"{', '.join(known)}")
    return name


def check_dataset(name: str) -> str:
    from .datasets import DATASETS

    return check_name(name, list(DATASETS), "dataset")


def check_algorithm(name: str) -> str:
    from .algorithms import UnknownAlgorithmError, components

    try:
        components(name)
    except UnknownAlgorithmError as e:
        raise ListError(str(e)) from None
    return name


SUBJECTS: dict[str, tuple[Callable, str]] = {
    "algorithms": (algorithms, "every trainable name (compose more: Base+Plugin+...)"),
    "losses": (losses, "base losses"),
    "plugins": (plugins, "plug-ins, appended with '+'"),
    "datasets": (datasets, "datasets; NAME: its single-source splits"),
    "recipes": (recipes, "official recipes: every value set, and its source; NAME: one"),
    "hparams": (hparams, "ALGORITHM's hparams: default, random-search range, meaning"),
    "launchers": (launchers, "how sweeps run their jobs (--launcher)"),
    "metrics": (metrics, "metrics of --metrics / --ucdr_metrics"),
}


# ----------------------------------------------------------------------------- output
def markdown(rows: list[dict]) -> str:
    """A GitHub table of ``rows``; columns empty in every row are left out."""
    if not rows:
        return "(none)\n"
    columns = [c for c in rows[0] if any(_fmt(r.get(c, "")) for r in rows)]
    return tabulate([[_fmt(r.get(c, "")) for c in columns] for r in rows], headers=columns,
                    tablefmt="github", disable_numparse=True) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("|", "\\|")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sdgdml.list", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("subject", help="; ".join(f"{k}: {v[1]}" for k, v in SUBJECTS.items()))
    p.add_argument("name", nargs="?", default=None,
                   help="hparams: the algorithm (required); datasets, recipes: one of them")
    p.add_argument("--dataset", default="DigitsDG",
                   help="hparams: the dataset whose defaults to show (default DigitsDG; image "
                        "datasets have ResNet-50-sized defaults)")
    p.add_argument("--json", action="store_true", help="JSON rows instead of Markdown")
    return p


def render(subject: str, name: str | None = None, dataset: str = "DigitsDG",
           as_json: bool = False) -> str:
    """What ``python -m sdgdml.list SUBJECT [NAME]`` prints."""
    fn = SUBJECTS[check_name(subject, list(SUBJECTS), "subject")][0]
    if subject == "hparams":
        if not name:
            raise ListError(f"hparams needs an algorithm, e.g. python -m sdgdml.list hparams "
                            f"ProxyAnchor+SEE; known: {', '.join(algorithm_names())}")
        rows = fn(name, dataset)
    elif subject in ("datasets", "recipes"):
        rows = fn(name)
    elif name:
        raise ListError(f"{subject} takes no name (got {name!r})")
    else:
        rows = fn()
    if as_json:
        return json.dumps(rows, indent=1, default=str) + "\n"
    title = f"## {subject}" + (f": {name}" if name else "") + (
        f" on {dataset}" if subject == "hparams" else "")
    text = f"{title}\n\n{markdown(rows)}"
    if subject == "recipes":
        text += "".join(f"\n- {n}" for n in recipe_notes(name)) + "\n"
    if subject == "algorithms":
        text += ("\nCompose a base loss with plug-ins: `Base+Plugin[+Plugin...]` (e.g. "
                 "ProxyAnchor+SEE); `python -m sdgdml.list plugins`.\n")
    return text


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.write(render(args.subject, args.name, args.dataset, args.json))
    except ListError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
