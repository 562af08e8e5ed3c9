"""Configs as YAML: reading a file, ``KEY=VALUE`` overrides on the raw mapping (so they get the file's checks), and writing one back."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from jaxdqn.config.rules import from_dict
from jaxdqn.config.schema import Config
from jaxdqn.errors import ConfigError


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. dqn.gamma=0.95")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Sets ``a.b.c=value`` (list items by index: ``tasks.0.env_id=...``) in a nested mapping."""
    data = yaml.safe_load(yaml.safe_dump(data or {}))  # deep copy through plain types
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not an index of the list")
                node = node[int(part)]
            else:
                if part == "tasks" and "tasks" not in node:
                    node["tasks"] = [{}]
                node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: {last!r} is not an index of the list")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file; a missing, unreadable, empty or
    non-mapping file is a ``ConfigError`` (an empty file would otherwise train the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start}); is it a YAML file?") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        message = " ".join(str(err).split())  # one line
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {message}") from None
    if data is None:
        raise ConfigError(f"config file {str(path)!r} is empty; allowed: a YAML mapping of config keys (see configs/)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r}: got a {type(data).__name__} at the top level; allowed: a mapping of config keys"
        )
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    return from_dict(apply_overrides(read_yaml(path), overrides or []))


def to_dict(cfg: Any) -> Any:
    """Plain YAML-able mapping of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
