"""Typed recipe parsing: YAML -> nested dataclasses, with dotted CLI overrides and one error listing every problem.

Every field's help lives once, in ``metadata["help"]``; ``add_override_arguments`` turns the same fields into
``--section.field`` command-line options, so ``selfimprove run --help`` documents the whole recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from selfimprove.core.errors import UserError

NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def is_number(v) -> bool:
    """An int or float written as a number (YAML reads true as a bool, which Python counts as an int)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def option(default, help: str, *, ge=None, gt=None, le=None, lt=None):
    """A field of a typed config (a recipe section, a task's config, a study file): its default, its help (the one
    place it is documented) and, for numbers, its bounds."""
    meta = {"help": help, **{k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class ConfigError(UserError, ValueError):
    """A recipe problem; the message lists every problem found, each naming the field and the fix."""

    def __init__(self, problems: list[str], headline: str = "invalid recipe"):
        self.problems = problems
        super().__init__(f"{headline}:\n" + "\n".join(f"  - {p}" for p in problems))


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
        if value is None:  # a section left empty in the file (`model:`): its defaults
            value = {}
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
    if tp in (int, float) and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 and 2e2 as strings; YAML 1.2, Python and TRL users read numbers
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 2e2, 30.0
    if tp is bool and not isinstance(value, bool):
        problems.append(f"{where}: expected true or false, got {value!r}.")
        return None
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        problems.append(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}).")
        return None
    return value


def did_you_mean(key: str, names) -> str:
    """ " Did you mean 'x'?" for the closest known name, else the list of known names."""
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
            before = len(problems)
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}".lstrip("."), problems)
            if len(problems) > before and kwargs[f.name] is None:
                del kwargs[f.name]  # keep the default so later checks still run on a well-typed object
    obj = cls(**kwargs)
    bad = bounds_problems(obj, where)
    problems.extend(bad)
    check = getattr(obj, "check", None)
    if check is not None and not bad:  # a check may divide by a count that is out of range
        problems.extend(f"{where}.{p}".lstrip(".") for p in check())
    return obj


_BOUNDS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


def bounds_problems(obj, where: str) -> list[str]:
    """Numeric fields outside the bounds in their metadata (``ge``, ``gt``, ``le``, ``lt``)."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        bounds = [(sign, ok, f.metadata[k]) for k, (sign, ok) in _BOUNDS.items() if k in f.metadata]
        if not all(ok(value, b) for _, ok, b in bounds):
            need = " and ".join(f"{sign} {b}" for sign, _, b in bounds)
            out.append(f"{where}.{f.name}={value!r} must be {need}. {f.metadata.get('help', '')}".lstrip("."))
    return out


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
        spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])  # --a_b and --a-b, as HfArgumentParser
        group.add_argument(
            *spellings,
            dest=f"override:{name}",
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"{f.metadata.get('help', '')} [{_type_name(tp)}; default: {default}]",
        )


def collect_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The ``--a.b VALUE`` options given on the command line, as {dotted name: parsed YAML value}."""
    return {
        k.split(":", 1)[1]: parse_yaml(v, f"--{k.split(':', 1)[1]} {v}") if v.strip() else v
        for k, v in vars(namespace).items()
        if k.startswith("override:")
    }  # '' stays '', not YAML's null


def _section(cls, name: str):
    """The dataclass type of field ``name`` of ``cls`` (a recipe section), else None (a value, even a mapping)."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    tp = typing.get_type_hints(cls).get(name)
    return tp if tp is not None and dataclasses.is_dataclass(tp) else None


def apply_overrides(data: dict, overrides: dict[str, Any], cls: type | None = None) -> dict:
    """Set each dotted key in a nested mapping (in place) and return it. With ``cls`` (the dataclass ``data``
    describes), a mapping given for a section is merged into it (``select: {budget: 3}`` changes only the budget);
    anything else, a mapping-valued field such as ``filter.min_scores`` included, replaces what was there."""
    for dotted, value in overrides.items():
        node, node_cls = data, cls
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            if node.get(p) is None:  # absent, or `model:` left empty in the file: a section of defaults
                node[p] = {}
            elif not isinstance(node[p], dict):
                where = ".".join(parents[: i + 1])
                raise ConfigError([f"{where}: is {node[p]!r}, not a section, so {dotted} cannot be set in it."])
            node = node[p]
            node_cls = _section(node_cls, p)
        section = _section(node_cls, leaf)
        if section is not None and isinstance(value, dict) and isinstance(node.get(leaf), dict):
            apply_overrides(node[leaf], value, section)
        else:
            node[leaf] = value
    return data


def load_overlay(path: str, cls: type | None = None, seen: tuple = ()) -> dict:
    """A YAML file; one with ``base: OTHER.yaml`` (relative to it) is that file with this one's keys applied over it
    as overrides (sections of ``cls`` merge, dotted keys allowed), so a variant recipe states only what differs."""
    data = load_yaml(path)
    if not isinstance(data, dict) or "base" not in data:
        return data
    base = data.pop("base")
    target = Path(path).parent / str(base)
    if not isinstance(base, str) or not target.is_file():
        raise ConfigError(
            [f"{path}: base: {base!r} is not a file. Name the recipe this one overlays, relative to {path}."]
        )
    if target.resolve() in seen:
        raise ConfigError([f"{path}: base: {base!r} leads back to itself ({' -> '.join(map(str, seen))})."])
    return apply_overrides(load_overlay(str(target), cls, (*seen, Path(path).resolve())), data, cls)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping key given twice (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str):
    """YAML text as Python values; a syntax error or a duplicate key is a ConfigError naming the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([f"{where}: not valid YAML{at}: {problem}. Fix the file."]) from None


def load_yaml(path: str) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such recipe file. Give the path of a recipe YAML (see recipes/)."]) from None
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text ({err.reason} at byte {err.start}). Save it as UTF-8."]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path} is a folder: give the path of a recipe YAML file."]) from None
    data = parse_yaml(text, path)
    if data is None:
        raise ConfigError(
            [
                f"{path} is empty: a recipe names at least its task and output_dir (see recipes/). "
                "The engine does not run a default job for an empty file."
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: a recipe must be a YAML mapping of sections, got {type(data).__name__}."])
    return data


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def reference_markdown(cls: type, title: str, intro: str) -> str:
    """A Markdown reference of every field of a nested dataclass: one table per section, in declaration order, with
    type, default and help (the same help ``--help`` prints)."""
    sections: dict[str, list[str]] = {}
    todo = [(cls, "")]
    while todo:
        node, prefix = todo.pop(0)
        for name, f, tp in iter_fields(node, prefix):
            section = name.rsplit(".", 1)[0] if "." in name else "(top level)"
            cell = f.metadata.get("help", "").replace("|", "\\|")
            kind = _type_name(tp).replace("|", "\\|")
            sections.setdefault(section, []).append(f"| `{name}` | {kind} | `{_default_text(f)}` | {cell} |")
            items = get_args(tp) if get_origin(tp) is list else ()
            if items and dataclasses.is_dataclass(items[0]):  # a list of records: each item's fields
                todo.append((items[0], f"{name}[]."))
    out = [f"# {title}", "", intro, ""]
    for section, rows in sections.items():
        out += [f"## {section}", "", "| field | type | default | what it does |", "|---|---|---|---|", *rows, ""]
    return "\n".join(out)
