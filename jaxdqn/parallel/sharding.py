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

With several processes (``jaxdqn.parallel.distributed``) the mesh spans every process's
devices, ordered by process, so each process holds a contiguous block of the
tasks (or of the batch); there the split must use every device, and a count
that does not divide is refused in one line.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdqn.errors import ConfigError
from jaxdqn.task_axis import TASK


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if n % d == 0)


def _check_splits_over_all(mode: str, num_tasks: int, batch_size: int, num_devices: int, num_processes: int) -> None:
    """Several processes: the split axis must spread over every device of every process."""
    if mode == "hard":
        what, size = f"the batch of each gradient step (dqn.batch_size {batch_size})", batch_size
    else:
        what, size = f"the tasks ({num_tasks} tasks)", num_tasks
    if size % num_devices == 0:
        return
    # device totals that split the axis evenly, with the same number of devices on every process
    totals = [d for d in range(num_processes, size + 1, num_processes) if size % d == 0]
    fitting = f"; or {' or '.join(map(str, totals))} devices in all" if totals else ""
    raise ConfigError(
        f"multitask.mode {mode!r} splits {what} over all {num_devices} devices of {num_processes} "
        f"processes, and {num_devices} does not divide {size}; allowed: a multiple of {num_devices} "
        f"({', '.join(str(num_devices * k) for k in (1, 2, 3))}, ...){fitting}"
    )


def make_mesh(mode: str, num_tasks: int, batch_size: int, devices=None) -> Mesh | None:
    """A ``(task, data)`` mesh for this run, or ``None`` when one device is all it can use."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if jax.process_count() > 1:
            _check_splits_over_all(mode, num_tasks, batch_size, len(devices), jax.process_count())
    devices = list(devices)
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
    return jax.tree_util.tree_map(lambda label: NamedSharding(mesh, P("task") if split and label == TASK else P()), labels)


def place_state(state: Any, mesh: Mesh | None, labels: Any) -> Any:
    if mesh is None:
        return state
    return jax.device_put(state, state_shardings(state, mesh, labels))


def batch_sharding(mesh: Mesh | None) -> NamedSharding | None:
    """For hard sharing: split the sampled batch ``[T, B, ...]`` along ``B``."""
    if mesh is None or mesh.shape["data"] == 1:
        return None
    return NamedSharding(mesh, P(None, "data"))


def abstract_state(shapes: Any, mesh: Mesh | None, labels: Any) -> Any:
    """``shapes`` (``jax.eval_shape`` of a state) with each leaf's sharding on ``mesh``.

    A checkpoint restored into it lands on the mesh directly: each process reads
    only its own shards. ``labels`` is the state's :mod:`jaxdqn.task_axis` label tree.
    """
    if mesh is None:
        return shapes
    shardings = state_shardings(shapes, mesh, labels)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def init_on_mesh(init, keys, mesh: Mesh | None, labels: Any) -> Any:
    """``init(keys)`` compiled with its output shardings: each device builds only its own part."""
    if mesh is None:
        return init(keys)
    target = abstract_state(jax.eval_shape(init, keys), mesh, labels)
    return jax.jit(init, out_shardings=jax.tree_util.tree_map(lambda s: s.sharding, target))(keys)
