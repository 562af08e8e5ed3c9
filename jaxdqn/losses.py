"""Loss functions for deep Q-learning, multi-task sharing and distillation.

Pure math: this module depends only on ``jax``, ``jax.numpy``, ``chex`` and the
standard library, so it can be imported without any network or environment
packages.

Conventions
-----------
* Per-example functions take unbatched inputs; ``_tm1`` marks quantities at
  time ``t-1`` (the transition's start) and ``_t`` quantities at time ``t``.
  Batched versions are built with ``jax.vmap``.
* Shapes and dtypes are checked with ``chex`` at the boundary of every public
  function.
* Bootstrap targets (and distillation teachers) sit behind
  ``jax.lax.stop_gradient``.
* An action mask is a boolean array of shape ``[A]``; ``True`` means the task
  owns that action. Masked actions never win a max/argmax and are excluded from
  softmaxes and means. At least one action must be valid: with an all-False
  mask the results are meaningless (though still finite).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = chex.Numeric
LeafFilter = Callable[[str], bool]

__all__ = [
    "masked_max",
    "masked_argmax",
    "q_learning_target",
    "double_q_learning_target",
    "q_learning",
    "double_q_learning",
    "batched_q_learning",
    "batched_double_q_learning",
    "squared_loss",
    "huber_loss",
    "td_loss",
    "distill_kl",
    "distill_mse",
    "distill_nll",
    "soft_sharing_penalty",
    "path_contains",
    "weighted_task_sum",
    "pcgrad_coefficients",
    "pcgrad_project",
    "pcgrad",
]

_TD_LOSS_KINDS = ("huber", "squared")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Masked max / argmax
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# TD errors
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Pointwise losses on TD errors
# --------------------------------------------------------------------------


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


def td_loss(td_errors: Array, kind: str = "huber", delta: float = 1.0) -> Array:
    """Mean pointwise loss over a batch of TD errors.

    ``kind="huber"``:   ``mean_b huber_loss(td_b, delta)``
    ``kind="squared"``: ``mean_b 0.5 * td_b**2`` (``delta`` is ignored)

    Args:
      td_errors: float array, usually ``[B]``; the mean runs over all entries.
      kind: ``"huber"`` or ``"squared"``.
      delta: Huber threshold.

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
    return jnp.mean(per_example)


# --------------------------------------------------------------------------
# Classification value loss (HL-Gauss), one example at a time
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Distillation (teacher -> student), one example at a time
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Multi-task helpers
# --------------------------------------------------------------------------

# One key of a ``jax.tree_util.keystr`` string: ['name'], ["name"], .name, [3].
_KEY_PATTERN = re.compile(
    r"\['((?:[^'\\]|\\.)*)'\]"
    r'|\["((?:[^"\\]|\\.)*)"\]'
    r"|\.([A-Za-z_][A-Za-z0-9_]*)"
    r"|\[(-?\d+)\]"
)


def _path_keys(path_str: str) -> list[str]:
    """Splits a ``keystr`` path into its key names, e.g. ``['a'][0]`` -> a, 0."""
    return [next(g for g in m.groups() if g is not None) for m in _KEY_PATTERN.finditer(path_str)]


def path_contains(*names: str) -> LeafFilter:
    """A ``leaf_filter`` keeping leaves whose path has any of ``names`` as a key.

    Matching is on whole key names, not substrings: ``path_contains("torso")``
    keeps ``"['params']['torso']['Dense_0']['kernel']"`` but not
    ``"['torso_head']['bias']"``.
    """
    if not names:
        raise ValueError("path_contains needs at least one key name")
    wanted = frozenset(str(n) for n in names)

    def leaf_filter(path_str: str) -> bool:
        return any(key in wanted for key in _path_keys(path_str))

    return leaf_filter


def soft_sharing_penalty(
    params: Any,
    lam: Numeric,
    leaf_filter: Optional[LeafFilter] = None,
    mask: Any = None,
) -> Array:
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
      leaf_filter: optional callable taking ``jax.tree_util.keystr(path)`` of a
        leaf (e.g. ``"['torso']['Dense_0']['kernel']"``) and returning whether
        it is penalised; ``None`` penalises every leaf. See
        :func:`path_contains`.
      mask: optional tree of booleans shaped like ``params`` (or a prefix of
        it), as ``optax.masked`` takes: only leaves marked ``True`` are
        penalised. Applied together with ``leaf_filter``.

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
        path_str = jax.tree_util.keystr(path)
        if leaf_filter is not None and not leaf_filter(path_str):
            continue
        leaf = jnp.asarray(leaf)
        if leaf.ndim < 1:
            raise ValueError(f"soft_sharing_penalty: leaf {path_str} is a scalar; selected leaves need a leading task axis")
        if num_tasks is None:
            num_tasks = leaf.shape[0]
        elif leaf.shape[0] != num_tasks:
            raise ValueError(
                f"soft_sharing_penalty: leaf {path_str} has {leaf.shape[0]} "
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


# --------------------------------------------------------------------------
# Gradient surgery (PCGrad, Yu et al. 2020)
# --------------------------------------------------------------------------


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
