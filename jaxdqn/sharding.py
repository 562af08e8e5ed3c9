"""Spreading a multi-task run over several devices with ``jax.sharding``.

The mesh has two axes, ``task`` and ``data``. In ``independent`` and ``soft``
modes every per-task leaf of the training state (parameters, optimizer state,
replay, env state, keys, statistics) is split along its leading task axis over
``task``, so each device holds and updates its own tasks. In ``hard`` mode the
shared torso is replicated and the gradient batch ``[T, B, ...]`` is split
along ``B`` over ``data``; XLA inserts the all-reduce of the torso gradient.

The same config runs unchanged on 1 or N devices: with one device, or when no
split fits, everything stays where it is. Devices are used up to the largest
count that divides the split axis (T for tasks, the batch size for data).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdqn.task_axis import TASK


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if n % d == 0)


def make_mesh(mode: str, num_tasks: int, batch_size: int, devices=None) -> Mesh | None:
    """A ``(task, data)`` mesh for this run, or ``None`` when one device is all it can use."""
    devices = list(devices if devices is not None else jax.devices())
    if mode == "hard":
        data = _largest_divisor_at_most(batch_size, len(devices))
        shape = (1, data)
    else:
        task = _largest_divisor_at_most(num_tasks, len(devices))
        shape = (task, 1)
    if shape == (1, 1):
        return None
    used = np.asarray(devices[: shape[0] * shape[1]]).reshape(shape)
    return Mesh(used, ("task", "data"))


def state_shardings(state: Any, mesh: Mesh, labels: Any) -> Any:
    """A sharding per leaf: split on ``task`` where ``labels`` (a tree of
    :mod:`jaxdqn.task_axis` labels shaped like ``state``) says the leaf leads with the
    task axis; everything else (shared parameters and their optimizer moments,
    scalars) is replicated."""
    split = mesh.shape["task"] > 1
    return jax.tree_util.tree_map(
        lambda label: NamedSharding(mesh, P("task") if split and label == TASK else P()), labels
    )


def place_state(state: Any, mesh: Mesh | None, labels: Any) -> Any:
    if mesh is None:
        return state
    return jax.device_put(state, state_shardings(state, mesh, labels))


def batch_sharding(mesh: Mesh | None) -> NamedSharding | None:
    """For hard sharing: split the sampled batch ``[T, B, ...]`` along ``B``."""
    if mesh is None or mesh.shape["data"] == 1:
        return None
    return NamedSharding(mesh, P(None, "data"))
