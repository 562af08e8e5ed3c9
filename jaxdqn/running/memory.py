"""Whether a training state fits in memory, decided before anything is allocated.

The state's shapes come from ``jax.eval_shape`` of its ``init`` (no buffers);
its size is compared with what the device can still give: free device memory
on an accelerator (``memory_stats``), ``MemAvailable`` of the host on the CPU
backend. Replay dominates the size, so the error names its capacity key.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from jaxdqn.errors import ConfigError


def tree_nbytes(tree: Any) -> int:
    """Bytes of every array (or ``ShapeDtypeStruct``) leaf of ``tree``."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree))


def _host_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device: jax.Device | None = None) -> tuple[int | None, str]:
    """(bytes the device can still allocate, where that figure comes from); ``None`` if unknown."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"free on {device.device_kind}"
    return _host_available_bytes(), "host MemAvailable"


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def check_state_fits(abstract_state: Any, replay: Any, key: str, capacity: int, available: int | None = None) -> None:
    """Raises a ``ConfigError`` naming ``key`` if the state (of which ``replay``) cannot fit.

    ``available`` defaults to what the default device reports; an unknown figure passes.
    """
    where = "given"
    if available is None:
        available, where = available_bytes()
        if available is None:
            return
    needed = tree_nbytes(abstract_state)
    if needed > available:
        raise ConfigError(
            f"config key '{key}': got {capacity}; the training state needs {_size(needed)} "
            f"(replay {_size(tree_nbytes(replay))}) but {_size(available)} are available ({where}); "
            f"allowed: a capacity whose replay fits"
        )
