"""Finding nan and inf in a training state, and the task they belong to.

The host checks after every chunk, before it writes metrics or a checkpoint,
so a run that diverges stops with the task and env step named and leaves its
last good checkpoint the latest. The check is one ``isfinite`` reduction per
parameter leaf and per statistic.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.parallel import distributed
from jaxdqn.errors import NonFiniteError


def _finite_per_task(tree: Any, task_axes: Any, num_tasks: int) -> jax.Array:
    """``[T]`` bool: task ``i``'s leaves (leading axis ``T``) and every shared leaf are finite.

    ``task_axes`` is a prefix of ``tree`` with ``0`` (stacked over tasks) or ``None``
    (shared) at each node, as ``Learner.param_axes`` gives it.
    """

    def reduce(axis, subtree):
        ok = jnp.ones((num_tasks,), bool)
        for leaf in jax.tree_util.tree_leaves(subtree):
            finite = jnp.isfinite(leaf)
            ok = ok & (finite.all() if axis is None else finite.reshape(num_tasks, -1).all(axis=1))
        return ok

    per_node = jax.tree_util.tree_map(reduce, task_axes, tree, is_leaf=lambda x: x is None or isinstance(x, int))
    return jnp.stack([jnp.ones((num_tasks,), bool), *jax.tree_util.tree_leaves(per_node)]).all(axis=0)


@functools.partial(jax.jit, static_argnums=1)
def _flags(params: Any, axes: tuple, per_task_values: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """One compiled reduction; ``axes`` is ``task_axes`` flattened (hashable, so static)."""
    leaves, treedef = axes
    task_axes = jax.tree_util.tree_unflatten(treedef, leaves)
    num_tasks = per_task_values[0].shape[0]
    try:
        params_ok = _finite_per_task(params, task_axes, num_tasks)
    except ValueError:  # a parameter tree the axes do not describe: treat it as shared
        params_ok = _finite_per_task(params, None, num_tasks)
    values_ok = jnp.stack([jnp.isfinite(v) for v in per_task_values]).all(axis=0)
    return ~params_ok, ~values_ok


def nonfinite_tasks(params: Any, task_axes: Any, per_task_values: list[jax.Array]) -> tuple[np.ndarray, np.ndarray]:
    """(``[T]`` non-finite parameters, ``[T]`` non-finite values) for each task.

    ``per_task_values`` are ``[T]`` statistics (the chunk's loss sums, ...). A shared
    parameter that is not finite marks every task.
    """
    leaves, treedef = jax.tree_util.tree_flatten(task_axes, is_leaf=lambda x: x is None)
    flags = _flags(params, (tuple(leaves), treedef), list(per_task_values))
    bad_params, bad_values = distributed.fetch(flags)  # gathered: each process holds only its own tasks' flags
    return np.asarray(bad_params), np.asarray(bad_values)


def check_finite(params: Any, task_axes: Any, metrics: dict, labels: list[str], env_steps: int) -> None:
    """Raises ``NonFiniteError`` naming the tasks and the env step if the chunk's learning
    metrics (loss, Q, penalty sums: :func:`jaxdqn.agents.system.chunk_rows`'s inputs) or
    ``params`` hold nan or inf."""
    from jaxdqn.agents.system import EPISODE_METRICS

    shape = metrics["loss"].shape
    sums = [jnp.broadcast_to(v, shape) for k, v in metrics.items() if k not in EPISODE_METRICS and k != "updates"]
    bad_params, bad_loss = nonfinite_tasks(params, task_axes, sums)
    if not (bad_params.any() or bad_loss.any()):
        return
    what = []
    if bad_loss.any():
        what.append("loss in task " + ", ".join(repr(labels[i]) for i in np.flatnonzero(bad_loss)))
    if bad_params.any():
        what.append("parameters in task " + ", ".join(repr(labels[i]) for i in np.flatnonzero(bad_params)))
    raise NonFiniteError(
        f"training stopped at env step {env_steps}: non-finite (nan or inf) {' and '.join(what)}; "
        f"this state is not saved, the latest checkpoint is the last good one (a lower dqn.learning_rate "
        f"or dqn.max_grad_norm may help)"
    )
