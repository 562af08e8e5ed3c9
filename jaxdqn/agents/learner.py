"""The DQN learner over T tasks: parameters, TD loss, one gradient step.

Parameters are ``{"torso": ..., "head": ...}`` with a leading task axis ``T``
on every leaf, except in hard sharing, where the torso has no task axis (one
set shared by all tasks) and only the heads are stacked. A single-task run is
``T = 1`` through the same code.

Modes:

- ``independent``: T networks; loss ``sum_i L_i``; each task has its own Adam
  state and its own gradient clipping (vmapped), so task ``i`` follows exactly
  the updates a single-task run would make.
- ``hard``: shared torso, heads per task (or one shared head whose unused
  actions are masked); loss ``sum_i w_i L_i``; one optimizer.
- ``soft``: per-task networks as in ``independent``, plus
  ``lambda * sum_{i != j} ||theta_i - theta_j||^2`` over all parameters or the
  torso only.

Options (any mode unless said):

- ``reward_scale``: task ``i``'s rewards are multiplied by ``reward_scale[i]``
  in its TD targets (replay keeps the env's rewards).
- ``popart``: per-task value normalisation (jaxdqn/popart.py). The network
  outputs normalised values ``q~``; task ``i``'s Q-values are
  ``sigma_i * q~ + mu_i``. Each update: unnormalised targets
  ``y = r + gamma * Q_target(s', a*)``; statistics updated from ``y``; each
  task's last layer rescaled so that its unnormalised outputs are unchanged;
  loss on ``(y - mu_i') / sigma_i' - q~(s, a)``. The target network holds
  unnormalised parameters (the statistics folded into its last layer, see
  ``target_source``). The statistics live in the optimizer state
  (:class:`PopArtOptState`), so checkpoints carry them.
- ``gradient_surgery="pcgrad"`` (hard sharing): the shared parameters step
  along PCGrad's sum of projected per-task gradients
  (:func:`jaxdqn.losses.pcgrad`); each task's head keeps its plain gradient.
- a network with a value support (``network.spec.value_bins > 0``): the loss is
  HL-Gauss's cross-entropy (:func:`jaxdqn.losses.hl_gauss_loss`) between the
  logits of ``Q(s, a)`` and the TD target smoothed into a histogram by a Gaussian
  of width ``hl_gauss_sigma`` bin widths; Q-values are the logits' expectations.
- a network with a per-task input layer (``network.spec.task_input_layer``):
  ``obs_valid [T, *obs_shape]`` says which entries of the padded observations are
  task ``i``'s own; at init each task's first-layer weights on the other entries are
  zeroed (the padding is zero, so they get no gradient and stay zero) and the
  rest scaled to the fan-in of the task's own inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdqn import losses
from jaxdqn import popart as popart_lib
from jaxdqn.networks import TASK_INPUT, QNetwork, head_output_layers, input_weight_mask
from jaxdqn.replay import Transition
from jaxdqn import task_axis
from jaxdqn.task_axis import TaskAxis

Params = Any


class LossInfo(NamedTuple):
    task_loss: jax.Array  # [T] mean TD loss per task
    q_mean: jax.Array  # [T] mean Q(s, a) of the sampled actions
    penalty: jax.Array  # [] soft-sharing penalty (0 elsewhere)


class PopArtOptState(NamedTuple):
    """The optimizer state of a learner with PopArt: the optimizer's own, and the statistics."""

    inner: Any
    stats: popart_lib.PopArtState  # leaves [T, 1]


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
    loss_kind: str = "huber"
    huber_delta: float = 1.0
    learning_rate: float = 2.5e-4
    lr_decay_updates: int = 0  # > 0: decay the step size linearly to 0 over this many updates
    adam_eps: float = 1e-8
    max_grad_norm: float = 10.0
    soft_lambda: float = 0.0
    soft_penalty_on: str = "all"
    task_batching: str = "vmap"  # "vmap" or "unroll": how the network runs over the task axis
    reward_scale: tuple[float, ...] | None = None  # [T] multiplies each task's rewards in its targets
    popart: bool = False
    popart_step_size: float = 3e-4  # per target (rlax.art); see jaxdqn/popart.py
    popart_scale_lb: float = 1e-4
    popart_scale_ub: float = 1e6
    gradient_surgery: str = "none"  # "none" or "pcgrad" (hard sharing)
    hl_gauss_sigma: float = 0.75  # in bin widths; used when the network has a value support
    obs_valid: np.ndarray | None = None  # [T, *obs_shape] bool: each task's own observation entries

    def __post_init__(self):
        if self.popart and self.mode == "hard" and self.shared_head:
            raise ValueError("PopArt needs one head per task; a shared head cannot carry per-task statistics")
        if self.gradient_surgery not in ("none", "pcgrad"):
            raise ValueError(f"gradient_surgery must be 'none' or 'pcgrad'; got {self.gradient_surgery!r}")
        if self.gradient_surgery == "pcgrad" and self.mode != "hard":
            raise ValueError(f"gradient_surgery 'pcgrad' needs hard sharing; got mode {self.mode!r}")
        if self.popart and self.support is not None:
            raise ValueError("PopArt normalises regressed Q-values; a classification value head has no such output")

    # -- parameters ---------------------------------------------------------

    @property
    def support(self):
        """The network's value support (``None``: it regresses Q-values)."""
        return self.network.spec.support

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
        if self.network.spec.task_input_layer and self.obs_valid is not None:
            per_task = self._own_inputs_only(per_task)
        return self.task_axis.from_per_task(per_task)

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

    def base_optimizer(self) -> optax.GradientTransformation:
        """One task's optimizer (or the whole shared network's in hard sharing)."""
        return optax.chain(
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.adam(self.step_size, eps=self.adam_eps),
        )

    @property
    def optimizer(self) -> optax.GradientTransformation:
        """:meth:`base_optimizer`, run once per task where the mode keeps tasks apart."""
        return per_task(self.base_optimizer(), self.per_task_optimizer)

    @property
    def step_size(self) -> float | optax.Schedule:
        if self.lr_decay_updates > 0:
            return optax.linear_schedule(self.learning_rate, 0.0, self.lr_decay_updates)
        return self.learning_rate

    def init_opt_state(self, params: Params):
        inner = self.optimizer.init(params)
        if self.popart:
            return PopArtOptState(inner, popart_lib.init_stats(self.num_tasks))
        return inner

    # -- PopArt -------------------------------------------------------------

    def rescale_heads(self, params: Params, old: popart_lib.PopArtState, new: popart_lib.PopArtState) -> Params:
        """Each task's last layer rescaled from statistics ``old`` to ``new`` so that its
        unnormalised outputs ``sigma * q~ + mu`` stay the same (jaxdqn.popart.preserve_linear)."""
        head = dict(params["head"])
        for name, carries_shift in head_output_layers(self.network.spec).items():
            layer = head[name]
            kernel, bias = jax.vmap(lambda w, b, o, n: popart_lib.preserve_linear(w, b, o, n, shift=carries_shift))(
                layer["kernel"], layer["bias"], old, new
            )
            head[name] = {**layer, "kernel": kernel, "bias": bias}
        return {**params, "head": head}

    def target_source(self, params: Params, opt_state) -> Params:
        """What the target network follows: the online parameters, with PopArt's statistics
        folded into the last layer (``W sigma``, ``b sigma + mu``) so that it outputs
        unnormalised Q-values."""
        if not self.popart:
            return params
        stats = opt_state.stats
        return self.rescale_heads(params, stats, popart_lib.identity_stats(stats))

    def apply_gradients(self, grads: Params, opt_state, params: Params):
        """One optimizer step -> (params, opt_state)."""
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # -- acting -------------------------------------------------------------

    def task_params(self, params: Params, i: int) -> Params:
        """Task ``i``'s network parameters (shared parts as they are)."""
        return self.task_axis.task_slice(params, i)

    def q_values(self, params: Params, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> Q-values ``[T, B, A]``."""
        return self._over_tasks(self.network.apply, params, obs)

    def head_outputs(self, params: Params, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> Q-values ``[T, B, A]`` or, with a value support,
        logits ``[T, B, A, bins]``."""
        return self._over_tasks(self.network.head_output, params, obs)

    def _over_tasks(self, fn, params: Params, obs: jax.Array) -> jax.Array:
        """``fn(task_params, obs)`` for every task.

        ``vmap`` batches the T networks into one set of ops; ``unroll`` emits
        T separate copies inside the same compiled function, which is faster
        for convolutions on the CPU backend (see benchmarks/bench_multitask.py).
        """
        if self.task_batching == "unroll":
            return jnp.stack([fn(self.task_params(params, i), obs[i]) for i in range(self.num_tasks)])
        return jax.vmap(fn, in_axes=(self.param_axes(params), 0))(params, obs)

    # -- learning -----------------------------------------------------------

    def _task_td(self, q_tm1, q_t_target, q_t_online, batch: Transition, mask, reward_scale=None):
        """TD errors ``[B]`` of one task's batch: ``y - Q(s, a)``."""
        q_taken = jnp.take_along_axis(q_tm1, batch.action[:, None], axis=-1)[:, 0]
        return self._task_targets(q_t_target, q_t_online, batch, mask, reward_scale) - q_taken

    def _task_targets(self, q_t_target, q_t_online, batch: Transition, mask, reward_scale=None):
        """TD targets ``[B]`` of one task's batch."""
        discount_t = self.gamma * (1.0 - batch.terminated.astype(jnp.float32))
        reward = batch.reward if reward_scale is None else batch.reward * reward_scale
        masks = jnp.broadcast_to(mask, q_t_target.shape)
        if self.double:
            return jax.vmap(losses.double_q_learning_target)(reward, discount_t, q_t_target, q_t_online, masks)
        return jax.vmap(losses.q_learning_target)(reward, discount_t, q_t_target, masks)

    def td_targets(self, params: Params, target_params: Params, batch: Transition) -> jax.Array:
        """Bootstrap targets ``[T, B]`` (unnormalised), behind ``stop_gradient``.

        ``y = reward_scale_i * r + gamma * (1 - terminated) * Q_target(s', a*)`` with
        ``a* = argmax Q_target(s')`` (or ``argmax Q_online(s')`` for Double DQN; PopArt's
        per-task affine map keeps the argmax).
        """
        q_t_target = self.q_values(target_params, batch.next_obs)
        q_t_online = self.q_values(params, batch.next_obs) if self.double else q_t_target
        mask = jnp.asarray(self.action_mask)
        scale = None
        if self.reward_scale is not None and any(s != 1.0 for s in self.reward_scale):
            scale = jnp.asarray(self.reward_scale, jnp.float32)
        targets = jax.vmap(self._task_targets, in_axes=(0, 0, 0, 0, None if scale is None else 0))(
            q_t_target, q_t_online, batch, mask, scale
        )
        return jax.lax.stop_gradient(targets)

    def _weights(self) -> jax.Array | None:
        if self.mode == "hard" and self.task_weights is not None:
            return jnp.asarray(self.task_weights, jnp.float32)
        return None

    def _losses_from_q(self, q_taken: jax.Array, targets: jax.Array, stats=None):
        """Per-task losses ``[T]`` and mean unnormalised ``Q(s, a)`` ``[T]`` from the head's
        output for the taken actions: ``Q(s, a)`` ``[T, B]`` (or logits ``[T, B, bins]``).

        Without PopArt ``L_i = mean_b loss(y_ib - Q_i(s_b, a_b))``; with PopArt
        statistics ``stats`` the TD error is taken in normalised space:
        ``L_i = mean_b loss((y_ib - mu_i) / sigma_i - q~_i(s_b, a_b))``. With a value
        support, ``L_i = mean_b CE(HL-Gauss(y_ib), logits_i(s_b, a_b))``.
        """
        support = self.support
        if support is not None:
            sigma = self.hl_gauss_sigma * support.bin_width
            per_example = jax.vmap(jax.vmap(lambda logits, y: losses.hl_gauss_loss(logits, y, support.edges, sigma)))
            q = support.expectation(q_taken)
            return per_example(q_taken, targets).mean(axis=1), jax.lax.stop_gradient(q).mean(axis=1)
        if stats is None:
            td, q_unnormalised = targets - q_taken, q_taken
        else:
            td = popart_lib.normalize(stats, targets) - q_taken
            q_unnormalised = popart_lib.unnormalize(stats, q_taken)
        task_loss = jax.vmap(lambda e: losses.td_loss(e, self.loss_kind, self.huber_delta))(td)
        return task_loss, jax.lax.stop_gradient(q_unnormalised).mean(axis=1)

    def task_losses(self, params: Params, targets: jax.Array, batch: Transition, stats=None):
        """Per-task TD losses ``[T]`` and the mean unnormalised ``Q(s, a)`` ``[T]`` (see ``_losses_from_q``)."""
        return self._losses_from_q(taken(self.head_outputs(params, batch.obs), batch.action), targets, stats)

    def loss_on_targets(self, params: Params, targets: jax.Array, batch: Transition, stats=None):
        """``sum_i w_i L_i`` (``w_i = 1`` unless hard sharing sets weights), plus the
        soft-sharing penalty when ``mode == "soft"``, and per-task diagnostics."""
        task_loss, q_mean = self.task_losses(params, targets, batch, stats)
        total = losses.weighted_task_sum(task_loss, self._weights())
        penalty = jnp.zeros((), jnp.float32)
        if self.mode == "soft":
            mask = task_axis.part_mask(params, ("torso",) if self.soft_penalty_on == "torso" else None)
            penalty = losses.soft_sharing_penalty(params, self.soft_lambda, mask=mask)
            total = total + penalty
        return total, LossInfo(task_loss, q_mean, penalty)

    def loss(self, params: Params, target_params: Params, batch: Transition, stats=None):
        """Total loss over tasks and per-task diagnostics; ``batch`` leaves are ``[T, B, ...]``."""
        targets = self.td_targets(params, target_params, batch)
        return self.loss_on_targets(params, targets, batch, stats)

    def _pcgrad_gradients(self, params: Params, targets: jax.Array, batch: Transition, stats, keys: jax.Array):
        """Gradients with PCGrad on the shared parameters; heads per task keep their own.

        Task ``i``'s gradient of ``w_i L_i`` comes from its own batch only
        (``jax.grad`` mapped over the task axis, shared parameters broadcast), so
        the T per-task backward passes cost about as much as the one plain backward pass.
        """
        weights = self._weights()
        weights = jnp.ones((self.num_tasks,), jnp.float32) if weights is None else weights

        def one_task(task_params, obs, action, task_targets, task_stats):
            out = self.network.head_output(task_params, obs)
            as_batch = None if task_stats is None else jax.tree_util.tree_map(lambda x: x[None], task_stats)
            task_loss, q_mean = self._losses_from_q(taken(out[None], action[None]), task_targets[None], as_batch)
            return task_loss[0], q_mean[0]

        axes = self.param_axes(params)
        per_task = jax.vmap(
            jax.value_and_grad(one_task, has_aux=True),
            in_axes=(axes, 0, 0, 0, None if stats is None else 0),
        )
        (task_loss, q_mean), task_grads = per_task(params, batch.obs, batch.action, targets, stats)
        task_grads = jax.tree_util.tree_map(lambda g: g * weights.reshape((-1,) + (1,) * (g.ndim - 1)), task_grads)
        # A shared leaf's per-task gradients [T, ...] are projected and summed; a task leaf keeps its own.
        grad_leaves, treedef = jax.tree_util.tree_flatten(task_grads)
        shared_at = [i for i, axis in enumerate(jax.tree_util.tree_leaves(axes, is_leaf=lambda x: x is None)) if axis is None]
        projected = losses.pcgrad([grad_leaves[i] for i in shared_at], keys)
        for i, leaf in zip(shared_at, projected):
            grad_leaves[i] = leaf
        grads = jax.tree_util.tree_unflatten(treedef, grad_leaves)
        return grads, LossInfo(task_loss, q_mean, jnp.zeros((), jnp.float32))

    def update(self, params: Params, target_params: Params, opt_state, batch: Transition, keys: jax.Array | None = None):
        """One gradient step on all tasks -> (params, opt_state, LossInfo).

        ``keys [T, 2]`` decide PCGrad's random orders (needed only with gradient surgery).
        """
        targets = self.td_targets(params, target_params, batch)
        stats, inner = None, opt_state
        if self.popart:
            inner = opt_state.inner
            stats = popart_lib.update_stats(
                opt_state.stats, targets, self.popart_step_size, self.popart_scale_lb, self.popart_scale_ub
            )
            params = self.rescale_heads(params, opt_state.stats, stats)
        if self.gradient_surgery == "pcgrad":
            grads, info = self._pcgrad_gradients(params, targets, batch, stats, keys)
        else:
            grads, info = jax.grad(self.loss_on_targets, has_aux=True)(params, targets, batch, stats)
        params, inner = self.apply_gradients(grads, inner, params)
        opt_state = PopArtOptState(inner, stats) if self.popart else inner
        return params, opt_state, info


def taken(out: jax.Array, action: jax.Array) -> jax.Array:
    """The head's output ``[T, B, A, ...]`` at the actions ``[T, B]`` -> ``[T, B, ...]``."""
    index = action.reshape(action.shape + (1,) * (out.ndim - 2))
    return jnp.take_along_axis(out, index, axis=2)[:, :, 0]


def per_task(optimizer: optax.GradientTransformation, vmapped: bool = True) -> optax.GradientTransformation:
    """``optimizer`` run once per task over the leading task axis of every leaf
    (its own moments, its own gradient clipping), or as it is when ``vmapped`` is false."""
    if not vmapped:
        return optimizer
    return optax.GradientTransformation(jax.vmap(optimizer.init), jax.vmap(optimizer.update))


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
