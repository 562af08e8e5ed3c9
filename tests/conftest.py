"""Shared helpers for the jaxdqn tests."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

# No persistent compilation cache, whatever the machine sets, here or in the children
# (inherited): processes of one test write and read the same entries at once, and jax
# writes them without a lock.
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import jax  # noqa: E402 (after the variable, which jax reads when it is imported)
import pytest  # noqa: E402
import yaml  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)

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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees the XLA programs a test module compiled once the module is done.

    Each CPU executable holds about three memory mappings until it is freed. One serial
    run of the whole suite compiles over 20,000 of them, past the kernel's
    ``vm.max_map_count`` (65,530), where XLA's next compilation segfaults.
    """
    yield
    jax.clear_caches()
    gc.collect()
