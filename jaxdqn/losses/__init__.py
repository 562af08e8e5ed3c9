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

The functions live in modules by subject, all importable from here:
:mod:`~jaxdqn.losses.masking` (masked max / argmax), :mod:`~jaxdqn.losses.td` (TD errors, targets
and their losses), :mod:`~jaxdqn.losses.classification` (HL-Gauss),
:mod:`~jaxdqn.losses.distillation`, :mod:`~jaxdqn.losses.multitask` (soft sharing, weighted task
sums) and :mod:`~jaxdqn.losses.pcgrad` (gradient surgery).
"""

from jaxdqn.losses.classification import hl_gauss_histogram, hl_gauss_loss
from jaxdqn.losses.distillation import distill_kl, distill_mse, distill_nll
from jaxdqn.losses.masking import masked_argmax, masked_max
from jaxdqn.losses.multitask import soft_sharing_penalty, weighted_task_sum
from jaxdqn.losses.pcgrad import pcgrad, pcgrad_coefficients, pcgrad_project
from jaxdqn.losses.td import (
    batch_mean,
    batched_double_q_learning,
    batched_q_learning,
    double_q_learning,
    double_q_learning_target,
    huber_loss,
    q_learning,
    q_learning_target,
    squared_loss,
    td_loss,
)

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
    "batch_mean",
    "hl_gauss_histogram",
    "hl_gauss_loss",
    "distill_kl",
    "distill_mse",
    "distill_nll",
    "soft_sharing_penalty",
    "weighted_task_sum",
    "pcgrad_coefficients",
    "pcgrad_project",
    "pcgrad",
]
