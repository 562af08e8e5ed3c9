"""The TD learner over T tasks, built from parts (jaxdqn/agents/parts.py).

Parameters are ``{"torso": ..., "head": ...}`` with a leading task axis ``T``
on every leaf, except in hard sharing, where the torso has no task axis (one
set shared by all tasks) and only the heads are stacked; a layer named
``task_...`` (a per-task input layer, task conditioning) is per task in every
mode (jaxdqn/task_axis.py). A single-task run is ``T = 1`` through the same code.

Modes:

- ``independent``: T networks; each task has its own optimizer state and its own
  gradient clipping (the optimizer vmapped), so task ``i`` follows exactly the
  updates a single-task run would make.
- ``hard``: shared torso, heads per task (or one shared head whose unused
  actions are masked); one optimizer.
- ``soft``: per-task networks as in ``independent``, plus a :class:`~jaxdqn.agents.parts.SoftSharing`
  penalty.

The loss of one update, with ``L_i`` task ``i``'s value loss on its own batch and
``term_i`` the per-task terms (:class:`~jaxdqn.agents.parts.TaskTerm`):

``L = sum_i w_i (L_i + term_i) + penalty``  (``w_i = 1`` unless hard sharing sets weights)

Every task's part of it is one function of that task's parameters
(:meth:`Learner.task_objective`): the plain update differentiates the sum, gradient
surgery differentiates each task's part on its own and combines the gradients of
the shared parameters. TD targets come from outside the gradient
(:meth:`Learner.td_targets` for DQN's target network; another system may bring its
own, see :meth:`Learner.step`); with PopArt they are unnormalised, and the
statistics move towards them before the step.

Options:

- ``reward_scale``: task ``i``'s rewards are multiplied by ``reward_scale[i]``
  in its TD targets (replay keeps the env's rewards).
- ``obs_valid [T, *obs_shape]`` with a per-task input layer (``network.spec.task_input_layers``):
  which entries of the padded observations are task ``i``'s own; at init each task's
  first-layer weights on the other entries are zeroed (the padding is zero, so they
  get no gradient and stay zero) and the rest scaled to the fan-in of the task's own inputs.
- ``param_init``: a function ``(learner, fresh_params) -> params`` that changes the
  initial parameters (fine-tuning puts a source network in place).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdqn import losses
from jaxdqn import popart as popart_lib
from jaxdqn.agents import parts
from jaxdqn.agents.parts import PopArtOptState
from jaxdqn.networks import TASK_INPUT, QNetwork, input_weight_mask
from jaxdqn.replay.uniform import Transition
from jaxdqn.task_axis import TaskAxis

Params = Any


class LossInfo(NamedTuple):
    task_loss: jax.Array  # [T] mean value loss per task (without its terms)
    q_mean: jax.Array  # [T] mean Q(s, a) of the sampled actions (unnormalised)
    penalty: jax.Array  # [] soft-sharing penalty plus the per-task terms, summed (0 without them)


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    network: QNetwork
    num_tasks: int
    action_mask: np.ndarray  # [T, A] bool
    mode: str = "independent"
    shared_head: bool = False  # hard sharing only: one head for every task
    task_weights: tuple[float, ...] | None = None
    gamma: float = 0.99
    double: bool = False
    reward_scale: tuple[float, ...] | None = None  # [T] multiplies each task's rewards in its targets
    optimizer: optax.GradientTransformation = parts.adam()  # one task's (hard sharing: the whole network's)
    value_loss: parts.Regression | parts.HLGauss | None = None  # None: parts.value_loss_for(network.spec)
    popart: parts.PopArt | None = None
    surgery: parts.PCGrad | None = None
    soft: parts.SoftSharing | None = None  # soft sharing's penalty
    terms: tuple[parts.TaskTerm, ...] = ()
    task_batching: str = "vmap"  # "vmap" or "unroll": how the network runs over the task axis
    obs_valid: np.ndarray | None = None  # [T, *obs_shape] bool: each task's own observation entries
    param_init: Callable[[Any, Params], Params] | None = None

    def __post_init__(self):
        if self.value_loss is None:
            object.__setattr__(self, "value_loss", parts.value_loss_for(self.network.spec))
        classifies = isinstance(self.value_loss, parts.HLGauss)
        if classifies != (self.network.spec.support is not None):
            raise ValueError("an HLGauss value loss needs a network with a value support, and such a network needs it")
        if self.popart is not None and self.mode == "hard" and self.shared_head:
            raise ValueError("PopArt needs one head per task; a shared head cannot carry per-task statistics")
        if self.popart is not None and classifies:
            raise ValueError("PopArt normalises regressed Q-values; a classification value head has no such output")
        if self.surgery is not None and self.mode != "hard":
            raise ValueError(f"gradient surgery needs hard sharing; got mode {self.mode!r}")
        if (self.soft is not None) != (self.mode == "soft"):
            raise ValueError(f"a soft-sharing penalty goes with mode 'soft' and only with it; got mode {self.mode!r}")

    # -- parameters ---------------------------------------------------------

    @property
    def per_task_optimizer(self) -> bool:
        return self.mode != "hard"

    @property
    def task_axis(self) -> TaskAxis:
        """Which parameter leaves carry the task axis (see :mod:`jaxdqn.task_axis`)."""
        return TaskAxis.for_mode(self.mode, self.num_tasks, self.shared_head)

    def param_axes(self, params: Params) -> Params:
        """vmap axes of ``params`` over tasks (``None`` = shared)."""
        return self.task_axis.vmap_axes(params)

    def init_params(self, task_keys: jax.Array, example_obs: jax.Array) -> Params:
        """Task ``i`` initialises its network from ``task_keys[i]``.

        In hard sharing the shared torso (and shared head) are task 0's, so a
        hard-sharing run with T = 1 starts exactly where a single-task run does.
        """
        per_task = jax.vmap(lambda k: self.network.init(k, example_obs))(task_keys)
        if self.network.spec.task_input_layers and self.obs_valid is not None:
            per_task = self._own_inputs_only(per_task)
        params = self.task_axis.from_per_task(per_task)
        return params if self.param_init is None else self.param_init(self, params)

    def _own_inputs_only(self, per_task: Params) -> Params:
        """Each task's input layer keeps only the weights on its own observation entries,
        scaled from the padded fan-in to its own (lecun-normal: std ``1 / sqrt(fan_in)``)."""
        layer = per_task["torso"][TASK_INPUT]
        kernel = layer["kernel"]  # [T, *kernel_shape]
        mask = np.stack([input_weight_mask(self.network.spec, valid, kernel.shape[1:]) for valid in self.obs_valid])
        inputs = mask.reshape(mask.shape[0], -1).mean(axis=1)  # own share of the fan-in
        scale = (1.0 / np.sqrt(np.maximum(inputs, 1e-12))).reshape((-1,) + (1,) * (kernel.ndim - 1))
        kernel = kernel * jnp.asarray(mask * scale, kernel.dtype)
        torso = {**per_task["torso"], TASK_INPUT: {**layer, "kernel": kernel}}
        return {**per_task, "torso": torso}

    @property
    def task_optimizer(self) -> optax.GradientTransformation:
        """``optimizer``, run once per task where the mode keeps tasks apart."""
        return parts.per_task(self.optimizer, self.per_task_optimizer)

    def init_opt_state(self, params: Params):
        inner = self.task_optimizer.init(params)
        if self.popart is not None:
            return PopArtOptState(inner, self.popart.init(self.num_tasks))
        return inner

    def target_source(self, params: Params, opt_state) -> Params:
        """What the target network follows: the online parameters, with PopArt's statistics
        folded into the last layer (``W sigma``, ``b sigma + mu``) so that it outputs
        unnormalised Q-values."""
        if self.popart is None:
            return params
        stats = opt_state.stats
        return self.rescale_heads(params, stats, popart_lib.identity_stats(stats))

    def rescale_heads(self, params: Params, old, new) -> Params:
        """PopArt: each task's last layer moved from statistics ``old`` to ``new``, outputs preserved."""
        return parts.rescale_heads(self.network.spec, params, old, new)

    def apply_gradients(self, grads: Params, opt_state, params: Params):
        """One optimizer step -> (params, opt_state); ``opt_state`` is the optimizer's own
        (with PopArt: ``opt_state.inner``)."""
        updates, opt_state = self.task_optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # -- acting -------------------------------------------------------------

    def task_params(self, params: Params, i: int) -> Params:
        """Task ``i``'s network parameters (shared parts as they are)."""
        return self.task_axis.task_slice(params, i)

    def q_values(self, params: Params, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> Q-values ``[T, B, A]`` (with PopArt: normalised,
        which keeps every task's greedy action)."""
        return self._over_tasks(self.network.apply, params, obs)

    def head_outputs(self, params: Params, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> Q-values ``[T, B, A]`` or, with a value support,
        logits ``[T, B, A, bins]``."""
        return self._over_tasks(self.network.head_output, params, obs)

    def _over_tasks(self, fn, params: Params, *per_task_args):
        """``fn(task_params, *task_args)`` for every task; each of ``per_task_args`` has a
        leading task axis on all its leaves.

        ``vmap`` batches the T networks into one set of ops; ``unroll`` emits
        T separate copies inside the same compiled function, which is faster
        for convolutions on the CPU backend (see benchmarks/bench_multitask.py).
        """
        if self.task_batching == "unroll":
            outs = [
                fn(self.task_params(params, i), *jax.tree_util.tree_map(lambda x: x[i], per_task_args))
                for i in range(self.num_tasks)
            ]
            return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
        return jax.vmap(fn, in_axes=(self.param_axes(params),) + (0,) * len(per_task_args))(params, *per_task_args)

    # -- targets ------------------------------------------------------------

    def td_targets(self, params: Params, target_params: Params, batch: Transition) -> jax.Array:
        """Bootstrap targets ``[T, B]`` (unnormalised), behind ``stop_gradient``.

        ``y = reward_scale_i * r + gamma * (1 - terminated) * Q_target(s', a*)`` with
        ``a* = argmax Q_target(s')`` (or ``argmax Q_online(s')`` for Double DQN; PopArt's
        per-task affine map keeps the argmax), through :func:`jaxdqn.losses.q_learning_target`
        and :func:`jaxdqn.losses.double_q_learning_target`.
        """
        q_t_target = self.q_values(target_params, batch.next_obs)
        q_t_online = self.q_values(params, batch.next_obs) if self.double else q_t_target
        discount_t = self.gamma * (1.0 - batch.terminated.astype(jnp.float32))
        reward = batch.reward
        if self.reward_scale is not None and any(s != 1.0 for s in self.reward_scale):
            reward = reward * jnp.asarray(self.reward_scale, jnp.float32)[:, None]
        masks = jnp.broadcast_to(jnp.asarray(self.action_mask)[:, None], q_t_target.shape)
        if self.double:
            target = jax.vmap(jax.vmap(losses.double_q_learning_target))(reward, discount_t, q_t_target, q_t_online, masks)
        else:
            target = jax.vmap(jax.vmap(losses.q_learning_target))(reward, discount_t, q_t_target, masks)
        return jax.lax.stop_gradient(target)

    # -- the loss -----------------------------------------------------------

    def task_objective(self, task_params, obs, action, targets, weights, stats, prepared, action_mask, count):
        """Task ``i``'s ``L_i + term_i`` on its own batch (``obs [B, ...]``, ``action [B]``,
        ``targets [B]``; ``weights [B]`` or ``None``: each example's weight in the value loss;
        ``stats``: its PopArt statistics or ``None``; ``prepared``: what each term prepared,
        for this task) -> (value, (L_i, mean Q(s, a), term_i)).

        With PopArt the value loss is taken in normalised space, on ``(y - mu_i) / sigma_i``,
        and the Q-values the terms see are unnormalised.
        """
        out = self.network.head_output(task_params, obs)  # [B, A] or logits [B, A, bins]
        taken_out = jnp.take_along_axis(out, action.reshape(action.shape + (1,) * (out.ndim - 1)), axis=1)[:, 0]
        q = self.value_loss.q_values(out)  # [B, A]
        if stats is not None:
            targets = popart_lib.normalize_task(stats, targets)
            q = popart_lib.unnormalize_task(stats, q)
        value_loss = self.value_loss.loss(taken_out, targets, weights)
        term = jnp.zeros((), jnp.float32)
        for t, values in zip(self.terms, prepared):
            term = term + t.task_loss(q, values, action_mask, count)
        q_taken = jnp.take_along_axis(q, action[:, None], axis=1)[:, 0]
        return value_loss + term, (value_loss, jax.lax.stop_gradient(q_taken).mean(), term)

    def _task_inputs(self, targets, batch, stats, weights):
        """The per-task arguments of :meth:`task_objective` after the parameters."""
        prepared = tuple(t.prepare(batch) for t in self.terms)
        return batch.obs, batch.action, targets, weights, stats, prepared, jnp.asarray(self.action_mask)

    def _weights(self) -> jax.Array | None:
        if self.mode == "hard" and self.task_weights is not None:
            return jnp.asarray(self.task_weights, jnp.float32)
        return None

    def task_losses(self, params: Params, targets: jax.Array, batch, stats=None, count=0, weights=None):
        """Every task's ``L_i + term_i`` ``[T]`` on given targets ``[T, B]``, and per-task
        diagnostics (the penalty field holds the terms' sum); ``batch`` leaves are ``[T, B, ...]``;
        ``weights [T, B]`` (optional) weigh each example in the value loss."""
        count = jnp.asarray(count)
        objective, (value_loss, q_mean, term) = self._over_tasks(
            lambda p, *args: self.task_objective(p, *args, count), params, *self._task_inputs(targets, batch, stats, weights)
        )
        return objective, LossInfo(value_loss, q_mean, term.sum())

    def loss_on_targets(self, params: Params, targets: jax.Array, batch, stats=None, count=0, weights=None):
        """``sum_i w_i (L_i + term_i) + penalty`` on given targets ``[T, B]``, and per-task
        diagnostics; ``batch`` leaves are ``[T, B, ...]``; ``weights [T, B]`` as in :meth:`task_losses`."""
        objective, info = self.task_losses(params, targets, batch, stats, count, weights)
        total = losses.weighted_task_sum(objective, self._weights())
        if self.soft is None:
            return total, info
        penalty = self.soft(params)
        return total + penalty, info._replace(penalty=info.penalty + penalty)

    def loss(self, params: Params, target_params: Params, batch: Transition, stats=None, count=0):
        """Total loss over tasks on DQN's bootstrap targets, and per-task diagnostics."""
        return self.loss_on_targets(params, self.td_targets(params, target_params, batch), batch, stats, count)

    # -- a gradient step ----------------------------------------------------

    def _surgery_gradients(self, params: Params, targets, batch, stats, keys: jax.Array, count, example_weights=None):
        """Gradients with gradient surgery on the shared parameters; leaves with a task axis
        keep their own.

        Task ``i``'s gradient of ``w_i (L_i + term_i)`` comes from its own batch only
        (``jax.grad`` mapped over the task axis, shared parameters broadcast), so the T
        per-task backward passes cost about as much as the one plain backward pass.
        """
        weights = self._weights()
        weights = jnp.ones((self.num_tasks,), jnp.float32) if weights is None else weights
        axes = self.param_axes(params)
        objective = jax.value_and_grad(lambda p, *args: self.task_objective(p, *args, count), has_aux=True)
        per_task = jax.vmap(objective, in_axes=(axes,) + (0,) * 7)
        inputs = self._task_inputs(targets, batch, stats, example_weights)
        (_, (value_loss, q_mean, term)), task_grads = per_task(params, *inputs)
        task_grads = jax.tree_util.tree_map(lambda g: g * weights.reshape((-1,) + (1,) * (g.ndim - 1)), task_grads)
        return self.surgery.combine(task_grads, axes, keys), LossInfo(value_loss, q_mean, term.sum())

    def step(self, params: Params, opt_state, targets: jax.Array, batch, keys: jax.Array | None = None, count=0, weights=None):
        """One gradient step towards unnormalised targets ``[T, B]`` -> (params, opt_state, LossInfo).

        ``batch`` needs ``obs`` and ``action`` (leaves ``[T, B, ...]``) and whatever the terms
        read; ``keys [T, 2]`` decide gradient surgery's random orders; ``count`` is the number
        of gradient steps taken so far (the terms' schedules read it); ``weights [T, B]``
        (optional) weigh each example in the value loss, 0 leaving it out. PopArt's
        statistics move on all of ``targets``.
        """
        stats, inner = None, opt_state
        if self.popart is not None:
            inner = opt_state.inner
            stats = self.popart.update(opt_state.stats, targets)
            params = self.rescale_heads(params, opt_state.stats, stats)
        if self.surgery is not None:
            if keys is None:
                raise ValueError("gradient surgery draws random task orders: step needs keys [T, 2]")
            grads, info = self._surgery_gradients(params, targets, batch, stats, keys, jnp.asarray(count), weights)
        else:
            grads, info = jax.grad(self.loss_on_targets, has_aux=True)(params, targets, batch, stats, count, weights)
        params, inner = self.apply_gradients(grads, inner, params)
        opt_state = PopArtOptState(inner, stats) if self.popart is not None else inner
        return params, opt_state, info

    def update(self, params: Params, target_params: Params, opt_state, batch: Transition, keys=None, count=0):
        """DQN's step: bootstrap targets from ``target_params``, then :meth:`step`."""
        return self.step(params, opt_state, self.td_targets(params, target_params, batch), batch, keys, count)


def epsilon_greedy(key: jax.Array, q: jax.Array, epsilon: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Actions ``[B]`` for Q-values ``[B, A]``: with probability ``epsilon`` a
    uniformly random *valid* action, otherwise the greedy valid action."""
    explore_key, action_key = jax.random.split(key)
    batch = q.shape[0]
    greedy = jax.vmap(losses.masked_argmax, in_axes=(0, None))(q, action_mask)
    logits = jnp.where(action_mask, 0.0, -jnp.inf)
    random_actions = jax.random.categorical(action_key, logits, shape=(batch,))
    explore = jax.random.uniform(explore_key, (batch,)) < epsilon
    return jnp.where(explore, random_actions, greedy).astype(jnp.int32)
