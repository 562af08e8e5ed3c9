"""Multi-task terms: the soft-sharing penalty and the weighted sum of task losses."""

from __future__ import annotations

from typing import Any, Optional

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = chex.Numeric


def soft_sharing_penalty(params: Any, lam: Numeric, mask: Any = None) -> Array:
    """Pulls per-task parameters towards each other.

    Every selected leaf has a leading task axis of size ``T``; write
    ``theta_i`` for task ``i``'s slice (all selected leaves concatenated).

    ``penalty = lam * sum_{i != j} ||theta_i - theta_j||^2``

    The sum runs over *ordered* pairs, so each unordered pair ``{i, j}`` is
    counted twice. It is evaluated in ``O(T)`` through

    ``sum_{i != j} ||a_i - a_j||^2 = 2T sum_i ||a_i||^2 - 2 ||sum_i a_i||^2
                                   = 2T sum_i ||a_i - mean||^2``

    using the centred right-hand form, which avoids the cancellation of the
    middle one. Its gradient is ``d/dtheta_k = 4 lam (T theta_k - sum_i theta_i)``.

    Args:
      params: a pytree of arrays.
      lam: penalty weight.
      mask: optional tree of booleans shaped like ``params`` or a prefix of it, as
        ``optax.masked`` takes (e.g. ``{"torso": True, "head": False}``): only
        leaves marked ``True`` are penalised; ``None`` penalises every leaf. The
        learner builds it from the task-axis labels (:mod:`jaxdqn.task_axis`).

    Returns:
      A float scalar (``0`` when no leaf is selected or ``T == 1``).

    Raises:
      ValueError: if a selected leaf is a scalar or the selected leaves
        disagree on ``T``.
    """
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    if mask is not None:
        selected = jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(lambda m, sub: jax.tree_util.tree_map(lambda _: bool(m), sub), mask, params)
        )
        leaves_with_paths = [lp for lp, keep in zip(leaves_with_paths, selected) if keep]
    total = jnp.zeros((), dtype=jnp.float32)
    num_tasks = None
    for path, leaf in leaves_with_paths:
        leaf = jnp.asarray(leaf)
        if leaf.ndim < 1:
            raise ValueError(
                f"soft_sharing_penalty: leaf {jax.tree_util.keystr(path)} is a scalar; selected leaves need a leading task axis"
            )
        if num_tasks is None:
            num_tasks = leaf.shape[0]
        elif leaf.shape[0] != num_tasks:
            raise ValueError(
                f"soft_sharing_penalty: leaf {jax.tree_util.keystr(path)} has {leaf.shape[0]} "
                f"tasks on its leading axis, other leaves have {num_tasks}"
            )
        # Accumulate in at least float32 (bf16/fp16 params lose too much).
        total = total + _spread(leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32)))
    return lam * total


def _centred(leaf: Array) -> Array:
    """``leaf - mean over the task axis``. The mean is a sum of the T slices: XLA:CPU reduces
    over a leading axis slowly (a [5, 1024, 128] leaf: 5.7 ms with ``jnp.mean(axis=0)``, 0.13 ms
    as slices; benchmarks/bench_soft_penalty.py)."""
    num_tasks = leaf.shape[0]
    return leaf - sum(leaf[i] for i in range(num_tasks))[None] / num_tasks


@jax.custom_jvp
def _spread(leaf: Array) -> Array:
    """``2T sum_i ||leaf_i - mean||^2``, whose derivative is ``4T (leaf_i - mean)``."""
    centred = _centred(leaf)
    return 2.0 * leaf.shape[0] * jnp.sum(jnp.square(centred))


@_spread.defjvp
def _spread_jvp(primals, tangents):
    # The centred leaves sum to 0 over tasks, so the mean's own tangent drops out:
    # d spread = 4T <centred, d leaf>. Written out, the reverse pass has no task-axis
    # reduction (jax's own derivative of the mean has one, as slow as the forward's).
    (leaf,), (d_leaf,) = primals, tangents
    centred = _centred(leaf)
    num_tasks = leaf.shape[0]
    return 2.0 * num_tasks * jnp.sum(jnp.square(centred)), 4.0 * num_tasks * jnp.sum(centred * d_leaf)


def weighted_task_sum(task_losses: Array, weights: Optional[Array] = None) -> Array:
    """Weighted sum of per-task losses: ``sum_i w_i * L_i``.

    Args:
      task_losses: float ``[T]``.
      weights: optional float ``[T]``. ``None`` means ``w_i = 1`` for every
        task, i.e. a plain *sum* (not a mean), so adding tasks adds gradient
        signal rather than diluting each task's share.

    Returns:
      A float scalar.
    """
    chex.assert_rank(task_losses, 1)
    chex.assert_type(task_losses, float)
    if weights is None:
        return jnp.sum(task_losses)
    chex.assert_rank(weights, 1)
    chex.assert_type(weights, float)
    chex.assert_equal_shape([task_losses, weights])
    return jnp.sum(weights * task_losses)
