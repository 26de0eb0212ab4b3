"""One run kept as a file: ``python -m sdgdml.train --config run.yaml [--flags ...]``.

The YAML file maps flag names (without the dashes: ``steps``, ``output_dir``, ``targets``) to
values; flags given on the command line override it; a key that is no flag is an error (with
the closest flag names). ``hparams`` may be a mapping (it is passed on as JSON). Values are
checked like the command line's: a flag's type and choices, lists for list flags, true/false
for switches. The file is read with ``yaml.safe_load``: it cannot run code.

    # run.yaml
    split: "PACS:photo->art_painting,cartoon,sketch"
    algorithm: ProxyAnchor+SEE
    hparams: {lr: 0.0001, batch_size: 64}
    steps: 2000
    output_dir: runs/pacs_see
"""
from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

import yaml

CONFIG_FLAG = "--config"
CONFIG_HELP = ("YAML file of flag values (keys = flag names without dashes); flags given on "
               "the command line override it")


class ConfigError(ValueError):
    """A config file that cannot be used: unreadable, unknown keys, wrong values."""


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions
            if a.option_strings and a.dest not in ("help", "config")}


def read_config(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {CONFIG_FLAG} {path}: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of flag names to values, got "
                          f"{type(data).__name__}")
    if "\\u0000" in json.dumps(data, default=str):    # no command line can hold one
        raise ConfigError(f"{path} holds a NUL character")
    return data


def _convert(path, key: str, value, action: argparse.Action):
    """``value`` as the parser would produce it from the command line."""
    def fail(why):
        raise ConfigError(f"{path}: {key}: {why}")

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}")
        return value
    if action.nargs == "?" and isinstance(value, bool):     # compile: true -> --compile
        return action.const if value else action.default
    if key == "hparams" and isinstance(value, dict):
        return json.dumps(value)
    is_list = action.nargs in ("*", "+") or isinstance(action.nargs, int)
    if is_list and not isinstance(value, list):
        value = [value]
    if not is_list and isinstance(value, (list, dict)):
        fail(f"expected one value, got {value!r}")
    items = value if is_list else [value]
    if action.nargs == "+" and not items:
        fail("expected at least one value")
    out = []
    for item in items:
        if action.type is int and isinstance(item, (float, bool)):
            fail(f"expected an integer, got {item!r}")
        if item is not None and action.type is not None:
            try:
                item = action.type(item)
            except (TypeError, ValueError):
                fail(f"invalid {getattr(action.type, '__name__', 'value')}: {item!r}")
        elif item is not None and not isinstance(item, str):
            item = str(item)
        if action.choices is not None and item not in action.choices:
            fail(f"{item!r} is not one of {', '.join(map(str, action.choices))}")
        out.append(item)
    return out if is_list else out[0]


def config_defaults(path: str | Path, parser: argparse.ArgumentParser) -> dict:
    """The file's values, checked and converted, keyed by the parser's ``dest`` names."""
    actions = _actions(parser)
    data = read_config(path)
    unknown = [k for k in data if k not in actions]
    if unknown:
        hints = {k: difflib.get_close_matches(str(k), actions, n=1) for k in unknown}
        said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
                         for k, h in hints.items())
        raise ConfigError(f"{path}: unknown keys {said}; the keys are the flags of "
                          f"{parser.prog} without dashes (--help lists them)")
    return {k: _convert(path, k, v, actions[k]) for k, v in data.items()}


def parse_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` with the values of its ``--config`` file as defaults (flags override
    them). A config error exits with one line, ``error: ...``, status 1."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(CONFIG_FLAG, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            values = config_defaults(known.config, parser)
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
        for action in parser._actions:          # a required flag the file gives is given
            if action.dest in values:
                action.required = False
        parser.set_defaults(**values)
    return parser.parse_args(argv)
