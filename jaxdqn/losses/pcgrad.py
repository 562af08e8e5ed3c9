"""Gradient surgery: PCGrad (Yu et al. 2020) over per-task gradients."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

Array = chex.Array


def pcgrad_coefficients(gram: Array, orders: Array) -> Array:
    """PCGrad's projections written as coefficients over the original gradients.

    With ``g_1..g_T`` the tasks' gradients and ``G[i, j] = <g_i, g_j>``, task
    ``i``'s projected gradient starts at ``g_i`` and, for each other task ``j``
    in the order ``orders[i]``, loses its component along ``g_j`` when the two
    conflict:

    ``if <g_i', g_j> < 0:  g_i' <- g_i' - <g_i', g_j> / ||g_j||^2 * g_j``

    After its last projection ``g_i'`` does not conflict with that task's
    gradient; with two tasks that is the other task, while with three or more a
    later projection can bring back a conflict with a task projected off earlier
    (the procedure is sequential, as published).

    Every ``g_i'`` stays a combination ``sum_k C[i, k] g_k`` of the original
    gradients, and ``<g_i', g_j> = (C G)[i, j]``, so the whole procedure runs
    on ``T x T`` matrices once ``G`` is known.

    Args:
      gram: float ``[T, T]``, the Gram matrix of the task gradients.
      orders: int ``[T, T]``; row ``i`` is a permutation of ``0..T-1`` (entry
        ``i`` itself is skipped).

    Returns:
      ``C``, float ``[T, T]``: ``g_i' = sum_k C[i, k] g_k``.
    """
    chex.assert_rank([gram, orders], [2, 2])
    chex.assert_type([gram, orders], [float, int])
    chex.assert_equal_shape([gram, orders])
    num_tasks = gram.shape[0]
    sq_norms = jnp.diagonal(gram)

    def project_task(i, order):
        def step(k, coeffs):
            j = order[k]
            dot = coeffs @ gram[:, j]
            conflict = (j != i) & (dot < 0) & (sq_norms[j] > 0)
            amount = jnp.where(conflict, dot / jnp.where(sq_norms[j] > 0, sq_norms[j], 1.0), 0.0)
            return coeffs.at[j].add(-amount)

        start = jax.nn.one_hot(i, num_tasks, dtype=gram.dtype)
        return jax.lax.fori_loop(0, num_tasks, step, start)

    return jax.vmap(project_task)(jnp.arange(num_tasks), orders)


def _pcgrad_setup(task_grads: Any, keys: Array) -> tuple[Array, list, Any]:
    leaves, treedef = jax.tree_util.tree_flatten(task_grads)
    if not leaves:
        raise ValueError("pcgrad: the gradient tree has no leaves")
    num_tasks = leaves[0].shape[0]
    chex.assert_shape(keys, (num_tasks, 2))
    flat = [leaf.reshape(num_tasks, -1) for leaf in leaves]
    hi = jax.lax.Precision.HIGHEST
    gram = sum(jnp.matmul(f, f.T, precision=hi) for f in flat)
    orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys)
    return pcgrad_coefficients(gram, orders.astype(jnp.int32)), leaves, treedef


def pcgrad_project(task_grads: Any, keys: Array) -> Any:
    """Each task's gradient after PCGrad's projections (see :func:`pcgrad_coefficients`).

    ``g_i' = g_i - sum_{j in order_i, conflicting} <g_i', g_j> / ||g_j||^2 g_j``

    Args:
      task_grads: a pytree whose leaves carry a leading task axis ``[T, ...]``.
      keys: ``[T, 2]`` PRNG keys; task ``i``'s order of the other tasks is
        ``jax.random.permutation(keys[i], T)``.

    Returns:
      A pytree like ``task_grads`` holding ``g_1'..g_T'``.
    """
    coeffs, leaves, treedef = _pcgrad_setup(task_grads, keys)
    hi = jax.lax.Precision.HIGHEST
    projected = [jnp.tensordot(coeffs, leaf, axes=1, precision=hi) for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, projected)


def pcgrad(task_grads: Any, keys: Array) -> Any:
    """PCGrad's update direction: ``sum_i g_i'`` (Yu et al. 2020).

    ``g_i'`` is task ``i``'s gradient projected off every other task's gradient
    it conflicts with, in a random order per task (:func:`pcgrad_project`).
    With one task this is that task's gradient itself.

    Args:
      task_grads: a pytree whose leaves carry a leading task axis ``[T, ...]``.
      keys: ``[T, 2]`` PRNG keys deciding each task's order.

    Returns:
      A pytree like one task's slice of ``task_grads``.
    """
    coeffs, leaves, treedef = _pcgrad_setup(task_grads, keys)
    weights = jnp.sum(coeffs, axis=0)
    hi = jax.lax.Precision.HIGHEST
    summed = [jnp.tensordot(weights, leaf, axes=1, precision=hi) for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, summed)
