"""Typed recipe parsing: YAML -> nested dataclasses, with dotted CLI overrides and one error listing every problem.

Every field's help lives once, in ``metadata["help"]``; ``add_override_arguments`` turns the same fields into
``--section.field`` command-line options, so ``selfimprove run --help`` documents the whole recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A recipe problem; the message lists every problem found, each naming the field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid recipe:\n" + "\n".join(f"  - {p}" for p in problems))


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value (or None after recording a problem)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _coerce(value, arg, where, trial)
            if not trial:
                return out
        problems.append(f"{where}: expected {_type_name(tp)}, got {value!r}. Set it to a value of that type.")
        return None
    if origin is Literal:
        if value not in get_args(tp):
            problems.append(f"{where}: {value!r} is not one of {_type_name(tp)}. Pick one of those.")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}.")
            return None
        return build(tp, value, where, problems)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}. Write it as [a, b] in YAML.")
            return None
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}.")
            return None
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        problems.append(f"{where}: expected true or false, got {value!r}.")
        return None
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        problems.append(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}).")
        return None
    return value


def did_you_mean(key: str, names) -> str:
    """" Did you mean 'x'?" for the closest known name, else the list of known names."""
    import difflib

    close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(sorted(names))}."


def build(cls: type, data: dict, where: str, problems: list[str]):
    """Construct dataclass ``cls`` from a mapping, recording unknown keys and type errors in ``problems``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    renamed = getattr(cls, "RENAMED", {})  # old key -> new key
    for key in data:
        if key in renamed:
            problems.append(f"{where}.{key} was renamed {where}.{renamed[key]}: rename the key.".lstrip("."))
        elif key not in names:
            problems.append(f"{where}.{key}: unknown key.{did_you_mean(str(key), names)}".lstrip("."))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}".lstrip("."), problems)
            if kwargs[f.name] is None and data[f.name] is not None:
                del kwargs[f.name]  # keep the default so later checks still run on a well-typed object
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        problems.extend(f"{where}.{p}".lstrip(".") for p in check())
    return obj


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted name, field, type) for every leaf field of a nested dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


def add_override_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--a.b.c VALUE`` option per recipe field; values are read as YAML scalars."""
    group = parser.add_argument_group("recipe overrides (any recipe field, VALUE read as YAML)")
    for name, f, tp in iter_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(see recipe)"
        group.add_argument(
            f"--{name}", dest=f"override:{name}", default=argparse.SUPPRESS, metavar="VALUE",
            help=f"{f.metadata.get('help', '')} [{_type_name(tp)}; default: {default}]",
        )


def collect_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The ``--a.b VALUE`` options given on the command line, as {dotted name: parsed YAML value}."""
    return {k.split(":", 1)[1]: yaml.safe_load(v) for k, v in vars(namespace).items() if k.startswith("override:")}


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set each dotted key in a nested mapping (in place) and return it."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p), dict) or p not in node else node[p]
        node[leaf] = value
    return data


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def load_yaml(path: str) -> dict:
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: a recipe must be a YAML mapping of sections, got {type(data).__name__}."])
    return data
