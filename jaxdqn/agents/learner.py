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
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdqn import losses
from jaxdqn.networks import QNetwork
from jaxdqn.replay import Transition
from jaxdqn import task_axis
from jaxdqn.task_axis import TaskAxis

Params = Any


class LossInfo(NamedTuple):
    task_loss: jax.Array  # [T] mean TD loss per task
    q_mean: jax.Array  # [T] mean Q(s, a) of the sampled actions
    penalty: jax.Array  # [] soft-sharing penalty (0 elsewhere)


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

    # -- parameters ---------------------------------------------------------

    @property
    def shares_torso(self) -> bool:
        return self.mode == "hard"

    @property
    def per_task_optimizer(self) -> bool:
        return self.mode != "hard"

    @property
    def task_axis(self) -> TaskAxis:
        """Which parameter leaves carry the task axis (see :mod:`jaxdqn.task_axis`)."""
        return TaskAxis.for_mode(self.mode, self.num_tasks, self.shared_head)

    def param_axes(self) -> dict:
        """vmap axes of the parameter tree over tasks (``None`` = shared)."""
        return self.task_axis.vmap_axes()

    def init_params(self, task_keys: jax.Array, example_obs: jax.Array) -> Params:
        """Task ``i`` initialises its network from ``task_keys[i]``.

        In hard sharing the shared torso (and shared head) are task 0's, so a
        hard-sharing run with T = 1 starts exactly where a single-task run does.
        """
        per_task = jax.vmap(lambda k: self.network.init(k, example_obs))(task_keys)
        return self.task_axis.from_per_task(per_task)

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
        return self.optimizer.init(params)

    def apply_gradients(self, grads: Params, opt_state, params: Params):
        """One optimizer step -> (params, opt_state)."""
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # -- acting -------------------------------------------------------------

    def task_params(self, params: Params, i: int) -> Params:
        """Task ``i``'s network parameters (shared parts as they are)."""
        return self.task_axis.task_slice(params, i)

    def q_values(self, params: Params, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> Q-values ``[T, B, A]``.

        ``vmap`` batches the T networks into one set of ops; ``unroll`` emits
        T separate copies inside the same compiled function, which is faster
        for convolutions on the CPU backend (see benchmarks/bench_multitask.py).
        """
        if self.task_batching == "unroll":
            return jnp.stack([self.network.apply(self.task_params(params, i), obs[i]) for i in range(self.num_tasks)])
        return jax.vmap(self.network.apply, in_axes=(self.param_axes(), 0))(params, obs)

    # -- learning -----------------------------------------------------------

    def _task_td(self, q_tm1, q_t_target, q_t_online, batch: Transition, mask):
        """TD errors ``[B]`` of one task's batch."""
        discount_t = self.gamma * (1.0 - batch.terminated.astype(jnp.float32))
        masks = jnp.broadcast_to(mask, q_t_target.shape)
        if self.double:
            return losses.batched_double_q_learning(
                q_tm1, batch.action, batch.reward, discount_t, q_t_target, q_t_online, masks
            )
        return losses.batched_q_learning(q_tm1, batch.action, batch.reward, discount_t, q_t_target, masks)

    def loss(self, params: Params, target_params: Params, batch: Transition):
        """Total loss over tasks and per-task diagnostics.

        ``batch`` leaves are ``[T, B, ...]``. The total is ``sum_i w_i L_i``
        (``w_i = 1`` unless hard sharing sets weights) plus the soft-sharing
        penalty when ``mode == "soft"``.
        """
        q_tm1 = self.q_values(params, batch.obs)
        q_t_target = self.q_values(target_params, batch.next_obs)
        q_t_online = self.q_values(params, batch.next_obs) if self.double else q_t_target
        mask = jnp.asarray(self.action_mask)
        td = jax.vmap(self._task_td)(q_tm1, q_t_target, q_t_online, batch, mask)
        task_loss = jax.vmap(lambda e: losses.td_loss(e, self.loss_kind, self.huber_delta))(td)
        weights = None
        if self.mode == "hard" and self.task_weights is not None:
            weights = jnp.asarray(self.task_weights, jnp.float32)
        total = losses.weighted_task_sum(task_loss, weights)
        penalty = jnp.zeros((), jnp.float32)
        if self.mode == "soft":
            mask = task_axis.part_mask(params, ("torso",) if self.soft_penalty_on == "torso" else None)
            penalty = losses.soft_sharing_penalty(params, self.soft_lambda, mask=mask)
            total = total + penalty
        q_taken = jnp.take_along_axis(q_tm1, batch.action[..., None], axis=-1)[..., 0]
        return total, LossInfo(task_loss, q_taken.mean(axis=1), penalty)

    def update(self, params: Params, target_params: Params, opt_state, batch: Transition):
        """One gradient step on all tasks -> (params, opt_state, LossInfo)."""
        grads, info = jax.grad(self.loss, has_aux=True)(params, target_params, batch)
        params, opt_state = self.apply_gradients(grads, opt_state, params)
        return params, opt_state, info


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
