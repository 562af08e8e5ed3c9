"""The generic checker: a nested mapping -> schema dataclasses, each value checked against its field.

The first problem is one sentence naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from jaxdqn.errors import ConfigError


def _describe_allowed(f: dataclasses.Field, kind: type) -> str:
    meta = f.metadata
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"{noun} in {'(' if meta.get('low_open') else '['}{low}, {high}]"
    if low is not None:
        return f"{noun} {'>' if meta.get('low_open') else '>='} {low}"
    return noun


def _check_scalar(value: Any, kind: type, f: dataclasses.Field, key: str) -> Any:
    allowed = _describe_allowed(f, kind)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"config key '{key}': got {value!r} ({type(value).__name__}); allowed: {allowed}")
    if kind is float and not math.isfinite(value):  # nan passes every range comparison
        raise ConfigError(f"config key '{key}': got {value!r}; allowed: a finite number ({allowed})")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"config key '{key}': got {value!r}; allowed: {allowed}")
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    if too_low or (high is not None and value > high):
        raise ConfigError(f"config key '{key}': got {value!r}; allowed: {allowed}")
    return value


def build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"config key '{where}{unknown[0]}': unknown key; allowed keys here: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _convert(hints[name], value, fields[name], key)
    return cls(**values)


def _convert(kind, value, f: dataclasses.Field, key: str):
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return build(kind, value, key)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': got {value!r}; allowed: a list")
        if dataclasses.is_dataclass(item_kind):
            return tuple(build(item_kind, v, f"{key}[{i}]") for i, v in enumerate(value))
        return tuple(_check_scalar(v, item_kind, f, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': got {value!r}; allowed: a mapping")
        _check_finite_entries(value, key)
        return dict(value)
    return _check_scalar(value, kind, f, key)


def _check_finite_entries(mapping: dict, key: str) -> None:
    """Free-form mappings (env params) get no per-key range, but nan and inf are never meant."""
    for name, value in mapping.items():
        if isinstance(value, dict):
            _check_finite_entries(value, f"{key}.{name}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}.{name}': got {value!r}; allowed: a finite number")
