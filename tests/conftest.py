"""Shared helpers for the jaxdqn tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_config(tmp_path):
    """Writes a mapping as YAML under ``tmp_path`` and returns the file's path."""

    def _write(data: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return _write


@pytest.fixture
def subprocess_env():
    """Environment for ``python -m jaxdqn.cli`` children: CPU only, repo importable."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.fixture
def python():
    return sys.executable
