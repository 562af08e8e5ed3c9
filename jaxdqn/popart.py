"""PopArt over a task axis: per-task value normalisation (van Hasselt et al. 2016).

Pure math on top of ``rlax``'s PopArt functions. Task ``i`` has its own
statistics ``(mu_i, nu_i)`` (first and second moment of its TD targets) and
``sigma_i = sqrt(clip(nu_i - mu_i**2, lb**2, ub**2))``. The network's last
layer outputs normalised values ``q~``; unnormalised ones are
``q = sigma_i * q~ + mu_i`` for every action of task ``i``.

The statistics live in an ``rlax.PopArtState`` whose leaves are ``[T, 1]``:
``rlax`` indexes statistics by output, and here each task is one ``rlax``
PopArt problem with a single output shared by all its actions (indices all
``0``), mapped over the task axis with ``jax.vmap``.

Step size: ``rlax.art`` lets *every target* move the statistics, i.e. with a
batch of ``B`` targets of one task

``mu' = mu + beta * sum_b (y_b - mu)``,  ``nu' = nu + beta * sum_b (y_b**2 - nu)``

so one update moves them ``B * beta`` of the way to the batch moments; this
needs ``B * beta <= 1`` (jaxdqn.config checks it).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import rlax

Array = chex.Array
PopArtState = rlax.PopArtState


def init_stats(num_tasks: int) -> PopArtState:
    """``mu = 0``, ``nu = 1`` (so ``sigma = 1``) for every task: leaves ``[T, 1]``."""
    initial_state, _ = rlax.popart(num_outputs=1, step_size=0.0, scale_lb=0.0, scale_ub=1.0)
    one = initial_state()
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_tasks, 1)).astype(jnp.float32), one)


def update_stats(stats: PopArtState, targets: Array, step_size: float, scale_lb: float, scale_ub: float) -> PopArtState:
    """New statistics from unnormalised TD targets ``[T, B]`` (``rlax.art`` per task)."""
    chex.assert_rank(targets, 2)
    chex.assert_type(targets, float)

    def one_task(task_stats, task_targets):
        indices = jnp.zeros(task_targets.shape, jnp.int32)
        return rlax.art(task_stats, task_targets, indices, step_size, scale_lb, scale_ub)

    return jax.vmap(one_task)(stats, targets)


def normalize_task(stats: PopArtState, values: Array) -> Array:
    """One task's ``(values - mu) / sigma`` (``stats`` leaves ``[1]``, ``values`` any shape)."""
    return rlax.normalize(stats, values, jnp.zeros(jnp.shape(values), jnp.int32))


def unnormalize_task(stats: PopArtState, values: Array) -> Array:
    """One task's ``sigma * values + mu`` (``stats`` leaves ``[1]``, ``values`` any shape)."""
    return rlax.unnormalize(stats, values, jnp.zeros(jnp.shape(values), jnp.int32))


def normalize(stats: PopArtState, values: Array) -> Array:
    """``(values - mu_i) / sigma_i`` for task ``i`` of ``values [T, ...]``."""
    return jax.vmap(normalize_task)(stats, values)


def unnormalize(stats: PopArtState, values: Array) -> Array:
    """``sigma_i * values + mu_i`` for task ``i`` of ``values [T, ...]``."""
    return jax.vmap(unnormalize_task)(stats, values)


def identity_stats(stats: PopArtState) -> PopArtState:
    """Statistics under which normalised and unnormalised values coincide (``mu = 0, sigma = 1``)."""
    return PopArtState(jnp.zeros_like(stats.shift), jnp.ones_like(stats.scale), jnp.ones_like(stats.second_moment))


def preserve_linear(kernel: Array, bias: Array, old: PopArtState, new: PopArtState, shift: bool = True):
    """One task's last linear layer rescaled so that its unnormalised outputs stay the same.

    ``W' = W * sigma / sigma'``, ``b' = (sigma * b + mu - mu') / sigma'`` (``rlax.pop``), so
    ``sigma' * (W' x + b') + mu' = sigma * (W x + b) + mu`` for every input ``x``.
    ``shift=False`` rescales without moving the shift (``b' = b * sigma / sigma'``): for a
    dueling head's advantage layer, whose mean is subtracted, the value layer carries the shift.

    Args:
      kernel: ``[in, out]``; bias: ``[out]``; ``old`` / ``new``: one task's statistics (leaves ``[1]``).
    """
    if not shift:
        new = new._replace(shift=old.shift)
    out = rlax.pop({"w": kernel, "b": bias}, old, new)
    return out["w"], out["b"]
