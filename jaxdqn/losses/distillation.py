"""Policy distillation losses (teacher -> student), one example at a time."""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from jaxdqn.losses.masking import _check_mask, _masked_log_softmax, masked_argmax

Array = chex.Array


def _check_distill_inputs(q_student: Array, q_teacher: Array, action_mask: Optional[Array]) -> None:
    chex.assert_rank([q_student, q_teacher], [1, 1])
    chex.assert_type([q_student, q_teacher], [float, float])
    chex.assert_equal_shape([q_student, q_teacher])
    _check_mask(action_mask, q_student)


def distill_kl(
    q_student: Array,
    q_teacher: Array,
    tau_teacher: float = 0.01,
    tau_student: float = 1.0,
    action_mask: Optional[Array] = None,
) -> Array:
    """KL divergence from the teacher's to the student's softened policy.

    With ``p = softmax(q_teacher / tau_teacher)`` and
    ``s = softmax(q_student / tau_student)``, both over valid actions only:

    ``KL(p || s) = sum_{a valid} p[a] * (log p[a] - log s[a])``

    Log-probabilities come from ``log_softmax``, so tiny temperatures (e.g.
    ``1e-3``) with large Q-values neither overflow nor produce NaNs, in value
    or gradient. The teacher is behind ``stop_gradient``. The true KL is
    non-negative; float rounding can make the computed sum a hair below zero
    (around ``-1e-19``) when the two policies nearly agree, so the result is
    clamped at ``0`` (where the gradient is ~0 anyway).

    Args:
      q_student: student Q-values, ``[A]``.
      q_teacher: teacher Q-values, ``[A]``.
      tau_teacher: teacher softmax temperature (> 0).
      tau_student: student softmax temperature (> 0).
      action_mask: optional boolean ``[A]``.

    Returns:
      A non-negative float scalar.
    """
    _check_distill_inputs(q_student, q_teacher, action_mask)
    q_teacher = jax.lax.stop_gradient(q_teacher)

    log_p = _masked_log_softmax(q_teacher / tau_teacher, action_mask)
    log_s = _masked_log_softmax(q_student / tau_student, action_mask)
    p = jnp.exp(log_p)
    if action_mask is not None:
        p = jnp.where(action_mask, p, jnp.zeros_like(p))
    return jnp.maximum(jnp.sum(p * (log_p - log_s)), 0.0)


def distill_mse(
    q_student: Array,
    q_teacher: Array,
    action_mask: Optional[Array] = None,
) -> Array:
    """Mean squared Q-value difference over valid actions.

    ``(1 / |valid|) * sum_{a valid} (q_student[a] - q_teacher[a])**2``

    The teacher is behind ``stop_gradient``.

    Args:
      q_student: student Q-values, ``[A]``.
      q_teacher: teacher Q-values, ``[A]``.
      action_mask: optional boolean ``[A]``.

    Returns:
      A non-negative float scalar.
    """
    _check_distill_inputs(q_student, q_teacher, action_mask)
    q_teacher = jax.lax.stop_gradient(q_teacher)
    diff = q_student - q_teacher
    if action_mask is None:
        return jnp.mean(jnp.square(diff))
    diff = jnp.where(action_mask, diff, jnp.zeros_like(diff))
    count = jnp.maximum(jnp.sum(action_mask), 1).astype(diff.dtype)
    return jnp.sum(jnp.square(diff)) / count


def distill_nll(
    q_student: Array,
    q_teacher: Array,
    action_mask: Optional[Array] = None,
    tau_student: float = 1.0,
) -> Array:
    """Negative log-likelihood of the teacher's greedy action under the student.

    ``a* = argmax_{a valid} q_teacher[a]``
    ``loss = -log softmax(q_student / tau_student)[a*]``  (softmax over valid
    actions only)

    Unlike the KL and MSE losses this is not zero when student and teacher
    agree: it equals the student's own ``-log p`` of that action.

    Args:
      q_student: student Q-values, ``[A]``.
      q_teacher: teacher Q-values, ``[A]``.
      action_mask: optional boolean ``[A]``.
      tau_student: student softmax temperature (> 0).

    Returns:
      A non-negative float scalar.
    """
    _check_distill_inputs(q_student, q_teacher, action_mask)
    a_star = masked_argmax(jax.lax.stop_gradient(q_teacher), action_mask)
    log_s = _masked_log_softmax(q_student / tau_student, action_mask)
    return -log_s[a_star]
