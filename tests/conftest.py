"""Shared helpers for the jaxdqn tests."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# One persistent compilation cache for the whole session: the controller makes it, and its
# workers and every child process inherit the variables, so a program compiled once (a resumed
# run's, a child's, another test's with the same config) is read back rather than compiled
# again. A size limit turns on jax's file lock around each read and write, which processes
# sharing the cache need; programs that compile in under a second are not worth the disk.
_OWN_CACHE = "JAXDQN_TESTS_XLA_CACHE" not in os.environ  # this process is the controller, or alone
if _OWN_CACHE:
    os.environ["JAXDQN_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxdqn-tests-xla-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JAXDQN_TESTS_XLA_CACHE"]
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "true"
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(16 * 2**30)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
# The tests' programs are small and mostly compiled once: compiling them fast saves more than
# running them fast. LLVM's optimisation passes off: test_pqn 93 -> 68 s, test_seeds 74 -> 63 s.
# XLA's older loop emitters for fusions in place of the fusion emitters: the tiny CartPole DQN
# program compiles in 0.5-0.6 s instead of 1.4-1.8 s (2026-12-07, this CPU, a training run beside it). The learning tests, which run
# long programs, take the default settings back in a child process (FAST_COMPILE_FLAGS are removed).
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
_flags = os.environ.get("XLA_FLAGS", "").split()
os.environ["XLA_FLAGS"] = " ".join(_flags + [f for f in FAST_COMPILE_FLAGS if f not in _flags])

import jax  # noqa: E402 (after the variables, which jax reads when it is imported)
import pytest  # noqa: E402 (kept with the jax import, after the variables)
import yaml  # noqa: E402 (kept with the jax import, after the variables)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_config(tmp_path):
    """Writes a mapping as YAML under ``tmp_path`` and returns the file's path."""

    def _write(data: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return _write


def child_env(optimised: bool = False) -> dict:
    """Environment for ``python -m jaxdqn.cli`` children: CPU only, repo importable.

    ``optimised``: XLA's default compile settings (FAST_COMPILE_FLAGS removed), for a child that
    runs a long program, which then runs faster than it compiles slower.
    """
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.pop("PYTHONWARNINGS", None)
    if optimised:
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if f not in FAST_COMPILE_FLAGS)
    return env


def train_in_child(config_path: str | Path, run_dir: Path, overrides=(), optimised: bool = True) -> Path:
    """``jaxdqn train CONFIG OVERRIDES --run-dir RUN_DIR`` in a child process (run from the repo
    root, at XLA's default compile settings unless ``optimised`` is false); returns ``run_dir``."""
    command = [sys.executable, "-m", "jaxdqn.cli", "train", str(config_path), *overrides, "--run-dir", str(run_dir)]
    child = subprocess.run(command, env=child_env(optimised), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    return run_dir


@pytest.fixture
def subprocess_env():
    return child_env()


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


def pytest_unconfigure(config):
    """The controller removes the session's compilation cache once every worker is done."""
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAXDQN_TESTS_XLA_CACHE"], ignore_errors=True)
