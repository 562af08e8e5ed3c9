"""The parts a :class:`jaxdqn.agents.Learner` is built from.

A learner over T tasks is a network, a task layout (the mode) and these parts:

- a **value loss**: :class:`Regression` (Huber or squared TD error) or :class:`HLGauss`
  (cross-entropy against a histogram of the target, for a network with a value support);
- an optional **value normaliser**, :class:`PopArt`, whose per-task statistics live in the
  optimizer state (:class:`PopArtOptState`);
- an optional **gradient surgery**, :class:`PCGrad`, applied to the per-task gradients of
  the shared parameters;
- **loss terms**: a :class:`SoftSharing` penalty on the whole parameter tree, and per-task
  terms (:class:`TaskTerm`, e.g. the pull towards a teacher of distillation-assisted
  transfer) added to each task's loss;
- an **optimizer**, a plain ``optax.GradientTransformation`` for one task (the learner runs
  it once per task where the mode keeps tasks apart); :func:`adam` (Adam or RAdam) is the usual one.

Each part is a small frozen dataclass of settings with pure methods, so a learner is
described by what it is made of rather than by flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax
import optax

from jaxdqn import losses
from jaxdqn import popart as popart_lib
from jaxdqn import task_axis
from jaxdqn.networks import NetworkSpec, ValueSupport, head_output_layers

Params = Any


# -- value losses ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Regression:
    """``L = mean_b loss(y_b - Q(s_b, a_b))`` with ``loss`` Huber (``delta``) or squared
    (:func:`jaxdqn.losses.td_loss`); the network's outputs are the Q-values."""

    kind: str = "huber"
    huber_delta: float = 1.0

    def loss(self, taken: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        """``taken [B]`` (the head's output at the taken actions), ``targets [B]``, optional
        ``weights [B]`` (:func:`jaxdqn.losses.batch_mean`) -> ``[]``."""
        return losses.td_loss(targets - taken, self.kind, self.huber_delta, weights)

    def q_values(self, out: jax.Array) -> jax.Array:
        return out


@dataclasses.dataclass(frozen=True)
class HLGauss:
    """``L = mean_b CE(HL-Gauss(y_b), logits(s_b, a_b))`` (:func:`jaxdqn.losses.hl_gauss_loss`):
    the head gives logits over the bins of ``support`` for each action, and Q is their
    expectation. ``sigma`` is in bin widths."""

    support: ValueSupport
    sigma: float = 0.75

    def loss(self, taken: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        """``taken [B, bins]`` (logits at the taken actions), ``targets [B]``, optional
        ``weights [B]`` (:func:`jaxdqn.losses.batch_mean`) -> ``[]``."""
        sigma = self.sigma * self.support.bin_width
        per_example = jax.vmap(lambda logits, y: losses.hl_gauss_loss(logits, y, self.support.edges, sigma))
        return losses.batch_mean(per_example(taken, targets), weights)

    def q_values(self, out: jax.Array) -> jax.Array:
        """Logits ``[..., A, bins]`` -> Q-values ``[..., A]``."""
        return self.support.expectation(out)


def value_loss_for(spec: NetworkSpec, kind: str = "huber", huber_delta: float = 1.0, hl_gauss_sigma: float = 0.75):
    """:class:`HLGauss` for a network with a value support, else :class:`Regression`."""
    if spec.support is not None:
        return HLGauss(spec.support, hl_gauss_sigma)
    return Regression(kind, huber_delta)


# -- PopArt ------------------------------------------------------------------------------


class PopArtOptState(NamedTuple):
    """The optimizer state of a learner with PopArt: the optimizer's own, and the statistics."""

    inner: Any
    stats: popart_lib.PopArtState  # leaves [T, 1]


@dataclasses.dataclass(frozen=True)
class PopArt:
    """Per-task value normalisation (jaxdqn/popart.py). The network outputs normalised values
    ``q~``; task ``i``'s Q-values are ``sigma_i * q~ + mu_i``. Each update the statistics move
    towards the unnormalised targets and each task's last layer is rescaled so that its
    unnormalised outputs are unchanged; the TD error is taken in normalised space,
    ``(y - mu_i') / sigma_i' - q~(s, a)``."""

    step_size: float = 3e-4  # per target (rlax.art)
    scale_lb: float = 1e-4
    scale_ub: float = 1e6

    def init(self, num_tasks: int) -> popart_lib.PopArtState:
        return popart_lib.init_stats(num_tasks)

    def update(self, stats: popart_lib.PopArtState, targets: jax.Array) -> popart_lib.PopArtState:
        """New statistics from unnormalised targets ``[T, B]``."""
        return popart_lib.update_stats(stats, targets, self.step_size, self.scale_lb, self.scale_ub)


def rescale_heads(spec: NetworkSpec, params: Params, old: popart_lib.PopArtState, new: popart_lib.PopArtState) -> Params:
    """Each task's last layer rescaled from statistics ``old`` to ``new`` so that its
    unnormalised outputs ``sigma * q~ + mu`` stay the same (jaxdqn.popart.preserve_linear)."""
    head = dict(params["head"])
    for name, carries_shift in head_output_layers(spec).items():
        layer = head[name]
        kernel, bias = jax.vmap(lambda w, b, o, n: popart_lib.preserve_linear(w, b, o, n, shift=carries_shift))(
            layer["kernel"], layer["bias"], old, new
        )
        head[name] = {**layer, "kernel": kernel, "bias": bias}
    return {**params, "head": head}


# -- gradient surgery --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PCGrad:
    """PCGrad (Yu et al. 2020, :func:`jaxdqn.losses.pcgrad`) on the shared parameters: each
    task's gradient is projected off the others' it conflicts with, in a random order drawn
    from the update's keys, and the projections are summed. Leaves with a task axis keep
    their own plain gradients."""

    def combine(self, task_grads: Params, axes: Params, keys: jax.Array) -> Params:
        """Per-task gradients (every leaf ``[T, ...]``) -> the update's gradients, shaped like
        the parameters (``axes``: their vmap axes, ``None`` on shared leaves)."""
        grad_leaves, treedef = jax.tree_util.tree_flatten(task_grads)
        axis_leaves = jax.tree_util.tree_leaves(axes, is_leaf=lambda x: x is None)
        shared_at = [i for i, axis in enumerate(axis_leaves) if axis is None]
        projected = losses.pcgrad([grad_leaves[i] for i in shared_at], keys)
        for i, leaf in zip(shared_at, projected):
            grad_leaves[i] = leaf
        return jax.tree_util.tree_unflatten(treedef, grad_leaves)


# -- loss terms --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SoftSharing:
    """``lambda * sum_{i != j} ||theta_i - theta_j||^2`` over every parameter (``on="all"``) or
    the torso only (:func:`jaxdqn.losses.soft_sharing_penalty`)."""

    lam: float = 0.0
    on: str = "all"  # "all" or "torso"

    def __call__(self, params: Params) -> jax.Array:
        mask = task_axis.part_mask(params, ("torso",) if self.on == "torso" else None)
        return losses.soft_sharing_penalty(params, self.lam, mask=mask)


class TaskTerm(Protocol):
    """A term added to each task's loss, ``L_i + term_i``.

    ``prepare`` computes, outside the gradient, what the term needs of a batch (leaves
    ``[T, B, ...]``); ``task_loss`` is one task's term from its Q-values on its batch
    (``q [B, A]``, unnormalised), its prepared values, its action mask ``[A]`` and the
    gradient step ``count``. Because it is per task, gradient surgery sees it as part of
    the task's loss.
    """

    def prepare(self, batch) -> Any: ...

    def task_loss(self, q: jax.Array, prepared: Any, action_mask: jax.Array, count: jax.Array) -> jax.Array: ...


# -- optimizers --------------------------------------------------------------------------


ADAM_FAMILY = {"adam": optax.adam, "radam": optax.radam}


def adam(
    learning_rate: float = 2.5e-4,
    adam_eps: float = 1e-8,
    max_grad_norm: float = 10.0,
    decay_updates: int = 0,
    kind: str = "adam",
) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then Adam (``kind="radam"``: RAdam, as PQN uses); with
    ``decay_updates > 0`` the step size decays linearly to 0 over that many updates."""
    update = ADAM_FAMILY[kind](step_size(learning_rate, decay_updates), eps=adam_eps)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), update)


def step_size(learning_rate: float, decay_updates: int = 0) -> float | optax.Schedule:
    """A constant step size, or one that decays linearly to 0 over ``decay_updates`` updates."""
    if decay_updates > 0:
        return optax.linear_schedule(learning_rate, 0.0, decay_updates)
    return learning_rate


def per_task(optimizer: optax.GradientTransformation, vmapped: bool = True) -> optax.GradientTransformation:
    """``optimizer`` run once per task over the leading task axis of every leaf
    (its own moments, its own gradient clipping), or as it is when ``vmapped`` is false."""
    if not vmapped:
        return optimizer
    return optax.GradientTransformation(jax.vmap(optimizer.init), jax.vmap(optimizer.update))
