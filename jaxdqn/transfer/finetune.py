"""Fine-tuning: a DQN learner that starts from a source checkpoint.

The learner is :class:`jaxdqn.agents.Learner` with two parts changed
(:func:`finetune_learner`):

- its ``param_init`` (:class:`SourcePlacement`) puts the source task's torso (and,
  unless the head is re-initialised, its head) into every target task's slot;
- its optimizer (:func:`split_optimizer`) gives the torso its own branch: frozen for
  good (``optax.set_to_zero``), frozen for the first updates, or trained at a scaled
  step size.

Everything else (TD loss, target network, the compiled iteration) is the
ordinary DQN machinery, so a fine-tuning run's checkpoints are plain training
checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdqn.agents.learner import Learner

Params = Any

FREEZE_CHOICES = ("never", "first", "always")


class ZeroUntilState(NamedTuple):
    count: jax.Array


def zero_until(num_updates: int) -> optax.GradientTransformation:
    """Sets every update to exactly 0 for the first ``num_updates`` calls, then passes them through."""

    def init(params):
        del params
        return ZeroUntilState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        keep = state.count >= num_updates
        updates = jax.tree_util.tree_map(lambda u: jnp.where(keep, u, jnp.zeros_like(u)), updates)
        return updates, ZeroUntilState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def torso_head_labels(params: Params) -> Params:
    """``"torso"`` on every torso leaf, ``"head"`` on every head leaf."""
    return {part: jax.tree_util.tree_map(lambda _: part, params[part]) for part in ("torso", "head")}


def split_optimizer(
    step_size: float | optax.Schedule,
    max_grad_norm: float,
    adam_eps: float,
    freeze: str = "never",
    freeze_updates: int = 0,
    torso_lr_scale: float = 1.0,
) -> optax.GradientTransformation:
    """Adam with the torso on its own branch.

    - ``always``: torso updates are exactly 0 (the torso has no Adam state);
      gradient clipping sees the head only.
    - ``first``: the torso's Adam moments follow its gradients from the start,
      but its updates are 0 for the first ``freeze_updates`` steps.
    - ``never``: the torso learns at ``step_size * torso_lr_scale``.
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}; got {freeze!r}")
    head = optax.adam(step_size, eps=adam_eps)
    if freeze == "always":
        return optax.multi_transform(
            {"torso": optax.set_to_zero(), "head": optax.chain(optax.clip_by_global_norm(max_grad_norm), head)},
            torso_head_labels,
        )
    if callable(step_size):

        def torso_step(count):
            return torso_lr_scale * step_size(count)

    else:
        torso_step = torso_lr_scale * step_size
    torso = optax.adam(torso_step, eps=adam_eps)
    if freeze == "first":
        torso = optax.chain(torso, zero_until(freeze_updates))
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        optax.multi_transform({"torso": torso, "head": head}, torso_head_labels),
    )


def place_source(learner: Learner, fresh: Params, source_task_params: Params, reinit_head: bool) -> Params:
    """``fresh`` (a learner's initial parameters) with the source's torso, and head unless
    ``reinit_head``, copied into every task's slot of the learner's layout."""
    placed = learner.task_axis.broadcast(source_task_params, fresh)
    return {**placed, "head": fresh["head"]} if reinit_head else placed


@dataclasses.dataclass(frozen=True, eq=False)
class SourcePlacement:
    """A learner's ``param_init``: puts ``source`` (one task's parameters, no task axis)
    into every task's slot of the fresh parameters (:func:`place_source`)."""

    source: Any
    reinit_head: bool = False

    def __call__(self, learner, fresh: Params) -> Params:
        return place_source(learner, fresh, self.source, self.reinit_head)


def finetune_learner(
    base: Learner,
    source: Params,
    reinit_head: bool = False,
    freeze: str = "never",
    freeze_updates: int = 0,
    torso_lr_scale: float = 1.0,
    step_size: float | optax.Schedule = 2.5e-4,
    max_grad_norm: float = 10.0,
    adam_eps: float = 1e-8,
) -> Learner:
    """``base`` starting from ``source``, with the torso on its own optimizer branch
    (:func:`split_optimizer`)."""
    optimizer = split_optimizer(step_size, max_grad_norm, adam_eps, freeze, freeze_updates, torso_lr_scale)
    return dataclasses.replace(base, optimizer=optimizer, param_init=SourcePlacement(source, reinit_head))
