"""Frozen-dataclass schemas for recipes: type checks with the recipe's dotted names, and building a dataclass tree
from a YAML mapping that rejects unknown keys with the allowed names. Used by every stage package's config."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _matches(tp, value) -> bool:
    """Whether `value` has type `tp` (bool is not an int; an int is a float; a list may stand for a tuple)."""
    if _is_union(tp):
        return any(_matches(a, value) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return isinstance(value, (list, tuple)) and all(_matches(item, v) for v in value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def _describe(tp) -> str:
    if _is_union(tp):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of strings" if typing.get_args(tp)[0] is str else "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _shown(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)  # tuples came from YAML lists


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_types(obj, section: str, expected: dict[str, str] | None = None) -> None:
    """ValueError naming the first field of dataclass `obj` whose value has the wrong type."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = _hints(type(obj))[f.name]
        if not _matches(tp, value):
            dotted = f"{section}.{f.name}" if section else f.name
            raise ValueError(f"{dotted} must be {(expected or {}).get(dotted, _describe(tp))}; got {_shown(value)}")


def build(cls, data, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys with their dotted name."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'recipe'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ValueError(f"unknown key '{dotted}'; allowed: {', '.join(names)}")
        kwargs[key] = _convert(hints[key], value, dotted)
    return cls(**kwargs)


def _convert(tp, value, where: str):
    if _is_union(tp):
        if value is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return build(tp, value or {}, where)
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    return value  # anything else is type-checked by the dataclass (_check_types)
