"""A classification value loss: HL-Gauss (Farebrother et al. 2024), one example at a time."""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp

from jaxdqn.losses.td import _maybe_stop

Array = chex.Array


def hl_gauss_histogram(target: Array, support_edges: Array, sigma: float) -> Array:
    """A scalar target smoothed into a histogram over fixed bins (HL-Gauss).

    Farebrother et al. (2024), "Stop Regressing": with bin edges
    ``e_0 < ... < e_N`` and ``y`` the target clipped to ``[e_0, e_N]``, bin
    ``j`` receives the mass a Gaussian ``N(y, sigma^2)`` puts on it, normalised
    over the support:

    ``p_j = (Phi((e_{j+1} - y) / sigma) - Phi((e_j - y) / sigma))
            / (Phi((e_N - y) / sigma) - Phi((e_0 - y) / sigma))``

    Args:
      target: float scalar ``y``.
      support_edges: float ``[N + 1]``, increasing.
      sigma: the Gaussian's width (the paper's choice: 0.75 bin widths).

    Returns:
      float ``[N]``, non-negative, summing to 1.
    """
    chex.assert_rank([target, support_edges], [0, 1])
    chex.assert_type([target, support_edges], [float, float])
    y = jnp.clip(target, support_edges[0], support_edges[-1])
    # Phi(x) = (1 + erf(x / sqrt(2))) / 2; the constant parts cancel in the ratio.
    cdf = jax.scipy.special.erf((support_edges - y) / (jnp.sqrt(2.0) * sigma))
    return (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])


def hl_gauss_loss(
    logits_tm1: Array,
    target_t: Array,
    support_edges: Array,
    sigma: float,
    stop_target_gradients: bool = True,
) -> Array:
    """Cross-entropy between a value's logits and its HL-Gauss target histogram.

    ``L = - sum_j p_j(y) log softmax(logits)_j`` with ``p(y)`` from
    :func:`hl_gauss_histogram`; the value the logits stand for is
    ``sum_j softmax(logits)_j c_j`` with ``c_j`` the bin centres.

    Args:
      logits_tm1: float ``[N]``, the logits of ``Q(s_tm1, a_tm1)``.
      target_t: float scalar, the TD target ``r_t + discount_t * Q(s_t, a*)``.
      support_edges: float ``[N + 1]``.
      sigma: the Gaussian's width, in the support's units.
      stop_target_gradients: put the target behind ``stop_gradient``.

    Returns:
      A float scalar.
    """
    chex.assert_rank([logits_tm1, target_t, support_edges], [1, 0, 1])
    chex.assert_type([logits_tm1, target_t, support_edges], [float, float, float])
    chex.assert_equal(logits_tm1.shape[0] + 1, support_edges.shape[0])
    probs = _maybe_stop(hl_gauss_histogram(target_t, support_edges, sigma), stop_target_gradients)
    return -jnp.sum(probs * jax.nn.log_softmax(logits_tm1))
