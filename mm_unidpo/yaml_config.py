"""YAML config files read into dataclasses: the one YAML reader of the package and the one loader that
`mm-unidpo train` (train/config.py) and `mm-unidpo iterate` (onpolicy/iterate.py) build their configs with.

    raw = read_yaml_file(path)                                 # a mapping; syntax errors name file and line
    section = from_dict(GenerateConfig, raw["generate"], source=str(path), section="generate")

`from_dict` checks every key against the dataclass: an unknown key, or a value whose type does not fit
the field's annotation (a string where a number belongs, a number for a flag), is a `ConfigError` naming
the file and the key; a field whose type is a dataclass takes a mapping, checked the same way.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot run: the message names the file or the key and what is wrong."""


# ---- reading YAML ---------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, with two surprises removed: `2e-5` (no dot) is a float, not the
    string "2e-5", and only true/false are booleans (`save_strategy: no` stays the string "no")."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """A YAML document (see `_Loader` for the two ways it differs from `yaml.safe_load`)."""
    return yaml.load(text, Loader=_Loader)


def read_yaml_file(path: str | Path, *, what: str = "a config") -> dict[str, Any]:
    """The mapping in a YAML file (an empty file: {}). A missing file is a FileNotFoundError; bytes that are
    not UTF-8, a syntax error (with its line and column) or a document that is not a mapping are a
    `ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: byte {error.start} is not UTF-8: save the config as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of sections")
    return raw


# ---- mappings to dataclasses ----------------------------------------------------------------------------


def from_dict(cls: type[T], values: Any, *, source: str, section: str | None = None) -> T:
    """A `cls` (a dataclass) from a mapping, every key and value checked (see the module doc).

    `source` names the file (or what the mapping came from) and `section` the dotted path of the mapping
    in it, so an error reads "<source>: unknown key(s) ['data.trian']" or "<source>: lora.r must be an
    integer, got 'eight' (str)". Unset fields keep their defaults."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: section {section!r} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        named = [f"{section}.{key}" for key in unknown] if section else unknown
        takes = f"{section} takes" if section else "it takes"
        raise ConfigError(f"{source}: unknown key(s) {named}; {takes} {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{section}.{name}" if section else name
        expected = hints[name]
        if dataclasses.is_dataclass(expected) and isinstance(expected, type):
            out[name] = from_dict(expected, value, source=source, section=key)
            continue
        if not matches(value, expected):
            raise ConfigError(f"{source}: {type_error(key, value, expected)}")
        out[name] = value
    return cls(**out)


def check_types(section: str, values: Any) -> None:
    """Every field of the dataclass instance `values` fits its annotation, else a `ConfigError` naming
    `section.field` (for a config changed after it was loaded)."""
    hints = typing.get_type_hints(type(values))
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        if not matches(value, hints[f.name]):
            raise type_error(f"{section}.{f.name}", value, hints[f.name])


def matches(value: Any, expected: Any) -> bool:
    """Whether `value` fits the annotation `expected` (bool is not a number; an int is a float)."""
    if expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True  # an annotation we do not check (e.g. an enum or a library type)


def describe(expected: Any) -> str:
    """An annotation in words: "an integer or null"."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in typing.get_args(expected))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "text", type(None): "null"}
    if expected in names:
        return names[expected]
    if origin in (list, tuple):
        return f"a list of {describe(typing.get_args(expected)[0])}"
    return getattr(expected, "__name__", str(expected))


def type_error(key: str, value: Any, expected: Any) -> ConfigError:
    """The error for `key` holding `value` where `expected` belongs."""
    quoted = " (quoted in the YAML? write numbers without quotes)" if isinstance(value, str) and _numeric(value) else ""
    return ConfigError(f"{key} must be {describe(expected)}, got {value!r} ({type(value).__name__}){quoted}")


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
