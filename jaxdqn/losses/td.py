"""TD errors and targets (one transition at a time, and over a batch), and the losses on TD errors."""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from jaxdqn.losses.masking import _check_mask, masked_argmax, masked_max

Array = chex.Array
Numeric = chex.Numeric


_TD_LOSS_KINDS = ("huber", "squared")


def _maybe_stop(target: Array, stop_target_gradients: bool) -> Array:
    return jax.lax.stop_gradient(target) if stop_target_gradients else target


def q_learning_target(
    r_t: Numeric,
    discount_t: Numeric,
    q_t: Array,
    action_mask_t: Optional[Array] = None,
) -> Array:
    """Q-learning bootstrap target for one transition.

    ``target = r_t + discount_t * max_{a valid} q_t[a]``

    Args:
      r_t: reward at ``t``, float scalar.
      discount_t: discount at ``t`` (0 at episode end), float scalar.
      q_t: bootstrap Q-values at ``t``, shape ``[A]``.
      action_mask_t: optional boolean ``[A]``; actions valid at ``t``.

    Returns:
      The target, a float scalar (gradients are not stopped here).
    """
    chex.assert_rank([r_t, discount_t, q_t], [0, 0, 1])
    chex.assert_type([r_t, discount_t, q_t], [float, float, float])
    _check_mask(action_mask_t, q_t)
    return r_t + discount_t * masked_max(q_t, action_mask_t)


def double_q_learning_target(
    r_t: Numeric,
    discount_t: Numeric,
    q_t_value: Array,
    q_t_selector: Array,
    action_mask_t: Optional[Array] = None,
) -> Array:
    """Double Q-learning bootstrap target for one transition.

    ``a*     = argmax_{a valid} q_t_selector[a]``
    ``target = r_t + discount_t * q_t_value[a*]``

    The arguments are :func:`q_learning_target`'s, with its ``q_t`` split in
    two as in :func:`double_q_learning`. Returns the target, a float scalar
    (gradients are not stopped here).
    """
    chex.assert_rank([r_t, discount_t, q_t_value, q_t_selector], [0, 0, 1, 1])
    chex.assert_type([r_t, discount_t, q_t_value, q_t_selector], [float, float, float, float])
    chex.assert_equal_shape([q_t_value, q_t_selector])
    _check_mask(action_mask_t, q_t_value)
    a_star = masked_argmax(q_t_selector, action_mask_t)
    return r_t + discount_t * q_t_value[a_star]


def q_learning(
    q_tm1: Array,
    a_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    q_t: Array,
    action_mask_t: Optional[Array] = None,
    stop_target_gradients: bool = True,
) -> Array:
    """Q-learning temporal-difference error for one transition.

    ``target = r_t + discount_t * max_{a valid} q_t[a]``
    ``td     = target - q_tm1[a_tm1]``

    A terminal step is expressed with ``discount_t = 0``.

    Args:
      q_tm1: Q-values at ``t-1``, shape ``[A]``.
      a_tm1: action taken at ``t-1``, integer scalar.
      r_t: reward at ``t``, float scalar.
      discount_t: discount at ``t`` (0 at episode end), float scalar.
      q_t: bootstrap Q-values at ``t``, shape ``[A]``.
      action_mask_t: optional boolean ``[A]``; actions valid at ``t``.
      stop_target_gradients: a Python bool; if True (default) no gradient
        flows through the target.

    Returns:
      The TD error, a float scalar.
    """
    target_tm1 = q_learning_target(r_t, discount_t, q_t, action_mask_t)
    return _td_error(q_tm1, a_tm1, target_tm1, stop_target_gradients)


def _td_error(q_tm1: Array, a_tm1: Numeric, target_tm1: Array, stop_target_gradients: bool) -> Array:
    """``target_tm1 - q_tm1[a_tm1]``, with the target's gradient stopped if asked."""
    chex.assert_rank([q_tm1, a_tm1], [1, 0])
    chex.assert_type([q_tm1, a_tm1], [float, int])
    return _maybe_stop(target_tm1, stop_target_gradients) - q_tm1[a_tm1]


def double_q_learning(
    q_tm1: Array,
    a_tm1: Numeric,
    r_t: Numeric,
    discount_t: Numeric,
    q_t_value: Array,
    q_t_selector: Array,
    action_mask_t: Optional[Array] = None,
    stop_target_gradients: bool = True,
) -> Array:
    """Double Q-learning temporal-difference error for one transition.

    ``a*     = argmax_{a valid} q_t_selector[a]``
    ``target = r_t + discount_t * q_t_value[a*]``
    ``td     = target - q_tm1[a_tm1]``

    Typically ``q_t_selector`` comes from the online network and
    ``q_t_value`` from the target network.

    The arguments are :func:`q_learning`'s, with its ``q_t`` split in two:
    ``q_t_value`` (``[A]``) evaluates the chosen action and ``q_t_selector``
    (``[A]``) chooses it. Returns the TD error, a float scalar.
    """
    target_tm1 = double_q_learning_target(r_t, discount_t, q_t_value, q_t_selector, action_mask_t)
    return _td_error(q_tm1, a_tm1, target_tm1, stop_target_gradients)


def _mask_axis(action_mask: Optional[Array]) -> Optional[int]:
    """vmap axis for a batched mask: ``[B, A]`` -> 0, shared ``[A]`` -> None."""
    if action_mask is None:
        return None
    return 0 if jnp.ndim(action_mask) == 2 else None


def batched_q_learning(
    q_tm1: Array,
    a_tm1: Array,
    r_t: Array,
    discount_t: Array,
    q_t: Array,
    action_mask_t: Optional[Array] = None,
    stop_target_gradients: bool = True,
) -> Array:
    """:func:`q_learning` mapped over a leading batch axis.

    Shapes: ``q_tm1, q_t: [B, A]``; ``a_tm1, r_t, discount_t: [B]``;
    ``action_mask_t``: ``[B, A]``, a shared ``[A]``, or ``None``.
    Returns TD errors of shape ``[B]``.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t], [2, 1, 1, 1, 2])
    return _over_batch(q_learning, (q_tm1, a_tm1, r_t, discount_t, q_t), action_mask_t, stop_target_gradients)


def _over_batch(td_error, arrays: tuple, action_mask_t: Optional[Array], stop_target_gradients: bool) -> Array:
    """``td_error`` vmapped over the leading axis of ``arrays`` (and of a ``[B, A]`` mask)."""

    def one(*args):
        return td_error(*args, stop_target_gradients)

    return jax.vmap(one, in_axes=(0,) * len(arrays) + (_mask_axis(action_mask_t),))(*arrays, action_mask_t)


def batched_double_q_learning(
    q_tm1: Array,
    a_tm1: Array,
    r_t: Array,
    discount_t: Array,
    q_t_value: Array,
    q_t_selector: Array,
    action_mask_t: Optional[Array] = None,
    stop_target_gradients: bool = True,
) -> Array:
    """:func:`double_q_learning` mapped over a leading batch axis.

    Shapes: ``q_tm1, q_t_value, q_t_selector: [B, A]``;
    ``a_tm1, r_t, discount_t: [B]``; ``action_mask_t``: ``[B, A]``, a shared
    ``[A]``, or ``None``. Returns TD errors of shape ``[B]``.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector], [2, 1, 1, 1, 2, 2])
    arrays = (q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)
    return _over_batch(double_q_learning, arrays, action_mask_t, stop_target_gradients)


def squared_loss(x: Array) -> Array:
    """Elementwise squared loss: ``0.5 * x**2``."""
    chex.assert_type(x, float)
    return 0.5 * jnp.square(x)


def huber_loss(x: Array, delta: float = 1.0) -> Array:
    """Elementwise Huber loss.

    ``0.5 * x**2``                  if ``|x| <= delta``
    ``delta * (|x| - 0.5 * delta)`` otherwise

    Quadratic near zero, linear in the tails, so its gradient is ``x`` clipped
    to ``[-delta, delta]``.
    """
    chex.assert_type(x, float)
    abs_x = jnp.abs(x)
    inside = 0.5 * jnp.square(x)
    outside = delta * (abs_x - 0.5 * delta)
    return jnp.where(abs_x <= delta, inside, outside)


def batch_mean(values: Array, weights: Optional[Array] = None) -> Array:
    """``mean_b v_b``, or with ``weights`` ``sum_b w_b v_b / sum_b w_b`` (0 where every weight is 0).

    A weight of 0 leaves an example out of the mean and out of its gradient, e.g. a step
    that is not a transition (envpool's auto-reset steps).
    """
    chex.assert_type(values, float)
    if weights is None:
        return jnp.mean(values)
    chex.assert_equal_shape([values, weights])
    weights = weights.astype(values.dtype)
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(weights * values) / jnp.maximum(total, 1e-12), 0.0)


def td_loss(td_errors: Array, kind: str = "huber", delta: float = 1.0, weights: Optional[Array] = None) -> Array:
    """Mean pointwise loss over a batch of TD errors.

    ``kind="huber"``:   ``mean_b huber_loss(td_b, delta)``
    ``kind="squared"``: ``mean_b 0.5 * td_b**2`` (``delta`` is ignored)

    With ``weights`` the mean is ``sum_b w_b l_b / sum_b w_b`` (:func:`batch_mean`).

    Args:
      td_errors: float array, usually ``[B]``; the mean runs over all entries.
      kind: ``"huber"`` or ``"squared"``.
      delta: Huber threshold.
      weights: optional float or bool array of ``td_errors``' shape.

    Returns:
      A float scalar.

    Raises:
      ValueError: if ``kind`` is not one of the allowed values.
    """
    if kind not in _TD_LOSS_KINDS:
        raise ValueError(f"td_loss kind must be one of {', '.join(map(repr, _TD_LOSS_KINDS))}; got {kind!r}")
    chex.assert_type(td_errors, float)
    if kind == "huber":
        per_example = huber_loss(td_errors, delta)
    else:
        per_example = squared_loss(td_errors)
    return batch_mean(per_example, weights)
