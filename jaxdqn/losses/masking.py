"""Action masks: masked max and argmax, and the masked log-softmax the distillation losses use."""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp

Array = chex.Array


def _check_mask(mask: Optional[Array], values: Array) -> None:
    """Checks that ``mask`` is a boolean vector matching ``values``."""
    if mask is None:
        return
    chex.assert_rank(mask, 1)
    chex.assert_type(mask, bool)
    chex.assert_equal_shape([mask, values])


def _very_negative(dtype) -> Array:
    """The most negative finite value of a floating dtype."""
    return jnp.asarray(jnp.finfo(dtype).min, dtype=dtype)


def _masked_log_softmax(logits: Array, mask: Optional[Array]) -> Array:
    """``log_softmax`` over the valid entries only.

    Masked logits are replaced by a large negative finite number before the
    normalisation, so they receive zero probability. The masked entries of the
    returned log-probabilities are then set to ``0`` (instead of ``-inf`` or a
    huge negative number) so that expressions such as ``p * log p`` stay
    finite, in value and in gradient, once the caller zeroes ``p`` there.
    """
    if mask is None:
        return jax.nn.log_softmax(logits)
    filled = jnp.where(mask, logits, _very_negative(logits.dtype))
    log_p = jax.nn.log_softmax(filled)
    return jnp.where(mask, log_p, jnp.zeros_like(log_p))


def masked_max(q: Array, action_mask: Optional[Array] = None) -> Array:
    """Maximum of ``q`` over valid actions: ``max_{a : mask[a]} q[a]``.

    Masked entries are replaced by ``finfo(q.dtype).min`` (finite, so no
    ``inf - inf`` can appear later) and therefore never win. Gradients with
    respect to masked entries are exactly zero.

    Args:
      q: Q-values, shape ``[A]``, floating.
      action_mask: optional boolean ``[A]``; ``None`` means all actions valid.

    Returns:
      A scalar of ``q``'s dtype.
    """
    chex.assert_rank(q, 1)
    chex.assert_type(q, float)
    _check_mask(action_mask, q)
    if action_mask is None:
        return jnp.max(q)
    return jnp.max(jnp.where(action_mask, q, _very_negative(q.dtype)))


def masked_argmax(q: Array, action_mask: Optional[Array] = None) -> Array:
    """Index of the largest valid entry: ``argmax_{a : mask[a]} q[a]``.

    Ties are broken towards the lowest index (as ``jnp.argmax``). Masked
    entries are replaced by ``-inf`` so that they lose even against a valid
    entry equal to the dtype's most negative finite value.

    Args:
      q: Q-values, shape ``[A]``, floating.
      action_mask: optional boolean ``[A]``; ``None`` means all actions valid.

    Returns:
      A scalar ``int32`` action index.
    """
    chex.assert_rank(q, 1)
    chex.assert_type(q, float)
    _check_mask(action_mask, q)
    if action_mask is not None:
        q = jnp.where(action_mask, q, jnp.asarray(-jnp.inf, dtype=q.dtype))
    return jnp.argmax(q).astype(jnp.int32)
