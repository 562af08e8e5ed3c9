"""Policy distillation: T fixed teachers into one student, one compiled iteration.

An iteration: an actor (each task's teacher, or the student itself for online
distillation) acts epsilon-greedily in ``num_envs`` environments per task; the
states go into per-task replay together with the teacher's Q-values for them
(computed once, while acting); then, on the update schedule, the student takes
gradient steps on

``L(theta) = sum_i (1/B) sum_b ell(q_theta(s_ib, task i), q_teacher_i(s_ib); mask_i)``

where ``ell`` is :func:`jaxdqn.losses.distill_kl`, ``distill_mse`` or
``distill_nll``. ``run(state, n)`` scans ``n`` iterations in one jitted call
with the state donated, as :class:`jaxdqn.agents.DQNAgent` does.

With T > 1 the student shares its torso across tasks and has one head per
task (the hard-sharing layout of :class:`jaxdqn.agents.Learner`), so its
checkpoints load with ``jaxdqn evaluate`` like any training run's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxdqn import losses, replay
from jaxdqn.agents.learner import Learner, epsilon_greedy
from jaxdqn.envs import TaskSet
from jaxdqn.transfer.sources import TeacherSet


def task_distill_losses(
    q_student: jax.Array,
    q_teacher: jax.Array,
    action_mask: jax.Array,
    kind: str = "kl",
    tau_teacher: float = 0.01,
    tau_student: float = 1.0,
) -> jax.Array:
    """Mean distillation loss of each task's batch.

    ``L_i = (1/B) sum_b ell(q_student[i, b], q_teacher[i, b]; mask_i)`` with

    - ``kl``:  ``ell = sum_a p_a (log p_a - log s_a)``, ``p = softmax(q_teacher / tau_teacher)``,
      ``s = softmax(q_student / tau_student)``;
    - ``mse``: ``ell = mean_a (q_student_a - q_teacher_a)^2``;
    - ``nll``: ``ell = -log softmax(q_student / tau_student)[argmax_a q_teacher_a]``;

    each over the task's valid actions only, the teacher behind ``stop_gradient``.

    Args:
      q_student: ``[T, B, A]``.
      q_teacher: ``[T, B, A]``.
      action_mask: boolean ``[T, A]``.
      kind: ``"kl"``, ``"mse"`` or ``"nll"``.
      tau_teacher, tau_student: softmax temperatures (> 0).

    Returns:
      ``[T]`` per-task losses.
    """
    chex.assert_rank([q_student, q_teacher, action_mask], [3, 3, 2])
    chex.assert_equal_shape([q_student, q_teacher])
    if kind == "kl":
        one = lambda s, t, m: losses.distill_kl(s, t, tau_teacher, tau_student, m)  # noqa: E731
    elif kind == "mse":
        one = losses.distill_mse
    elif kind == "nll":
        one = lambda s, t, m: losses.distill_nll(s, t, m, tau_student)  # noqa: E731
    else:
        raise ValueError(f"distillation loss must be one of 'kl', 'mse', 'nll'; got {kind!r}")
    per_example = jax.vmap(jax.vmap(one, in_axes=(0, 0, None)))(q_student, q_teacher, action_mask)
    return per_example.mean(axis=1)


def greedy_agreement(q_student: jax.Array, q_teacher: jax.Array, action_mask: jax.Array) -> jax.Array:
    """``[T]``: fraction of states where student and teacher pick the same valid greedy action."""
    argmax = jax.vmap(jax.vmap(losses.masked_argmax, in_axes=(0, None)))
    return (argmax(q_student, action_mask) == argmax(q_teacher, action_mask)).mean(axis=1)


class Sample(NamedTuple):
    """What distillation replay keeps: a state and the teacher's Q-values there."""

    obs: jax.Array
    q_teacher: jax.Array


class DistillStats(NamedTuple):
    """Sums since the host last looked (reset every chunk)."""

    return_sum: jax.Array  # [T] returns of the actor's finished episodes
    length_sum: jax.Array  # [T]
    episodes: jax.Array  # [T]
    loss_sum: jax.Array  # [T]
    agreement_sum: jax.Array  # [T]
    q_sum: jax.Array  # [T] student's mean Q-value of the teacher's greedy action
    updates: jax.Array  # []


class DistillState(NamedTuple):
    params: Any  # the student's
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [T, num_envs, *obs_shape]
    replay: replay.ReplayState  # leaves [T, capacity, ...]
    keys: jax.Array  # [T, 2]
    env_steps: jax.Array  # [] per task
    updates: jax.Array  # []
    episode_return: jax.Array  # [T, num_envs]
    episode_length: jax.Array  # [T, num_envs]
    stats: DistillStats


def _empty_stats(num_tasks: int) -> DistillStats:
    z = jnp.zeros((num_tasks,), jnp.float32)
    return DistillStats(z, z, z, z, z, z, jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class DistillSchedule:
    """Who acts and when the student learns (counted in env steps per task)."""

    num_envs: int
    batch_size: int
    replay_capacity: int
    learning_starts: int
    update_every: int
    updates_per_round: int
    actor: str = "teacher"  # or "student"
    actor_epsilon: float = 0.05

    @property
    def iterations_per_round(self) -> int:
        return max(1, self.update_every // self.num_envs)

    @property
    def updates_per_iteration_round(self) -> int:
        return self.updates_per_round * max(1, self.num_envs // self.update_every)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    kind: str = "kl"
    tau_teacher: float = 0.01
    tau_student: float = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Distiller:
    """Student ``learner`` (its network, layout and optimizer), teachers, tasks, schedule."""

    student: Learner
    teachers: TeacherSet
    tasks: TaskSet
    schedule: DistillSchedule
    loss_spec: LossSpec = LossSpec()

    @property
    def num_tasks(self) -> int:
        return self.tasks.num_tasks

    @functools.partial(jax.jit, static_argnums=0)
    def init(self, task_keys: jax.Array) -> DistillState:
        split = jax.vmap(lambda k: jax.random.split(k, 3))(task_keys)
        next_keys, init_keys, reset_keys = split[:, 0], split[:, 1], split[:, 2]
        env_state, obs = self.tasks.reset(reset_keys)
        params = self.student.init_params(init_keys, obs[0])
        example = Sample(obs[0, 0], jnp.zeros((self.tasks.num_actions,), jnp.float32))
        one = replay.init(example, self.schedule.replay_capacity)
        buffers = replay.stack_tasks(one, self.num_tasks)
        zeros = jnp.zeros((self.num_tasks, self.tasks.num_envs), jnp.float32)
        return DistillState(
            params=params,
            opt_state=self.student.init_opt_state(params),
            env_state=env_state,
            obs=obs,
            replay=buffers,
            keys=next_keys,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            episode_return=zeros,
            episode_length=zeros,
            stats=_empty_stats(self.num_tasks),
        )

    # -- learning -----------------------------------------------------------

    def loss(self, params, batch: Sample):
        """Total ``sum_i L_i`` and per-task diagnostics; ``batch`` leaves are ``[T, B, ...]``."""
        mask = jnp.asarray(self.student.action_mask)
        q_student = self.student.q_values(params, batch.obs)
        s = self.loss_spec
        per_task = task_distill_losses(q_student, batch.q_teacher, mask, s.kind, s.tau_teacher, s.tau_student)
        agreement = greedy_agreement(q_student, batch.q_teacher, mask)
        teacher_action = jax.vmap(jax.vmap(losses.masked_argmax, in_axes=(0, None)))(batch.q_teacher, mask)
        q_taken = jnp.take_along_axis(q_student, teacher_action[..., None], axis=-1)[..., 0]
        return losses.weighted_task_sum(per_task), (per_task, agreement, q_taken.mean(axis=1))

    def update(self, params, opt_state, batch: Sample):
        """One gradient step of the student on every task -> (params, opt_state, info)."""
        grads, info = jax.grad(self.loss, has_aux=True)(params, batch)
        optimizer = self.student.optimizer
        if self.student.per_task_optimizer:
            updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, params)
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, info

    def _gradient_step(self, state: DistillState, keys: jax.Array) -> DistillState:
        batch = jax.vmap(replay.sample, in_axes=(0, 0, None))(state.replay, keys, self.schedule.batch_size)
        params, opt_state, (per_task, agreement, q_mean) = self.update(state.params, state.opt_state, batch)
        stats = state.stats._replace(
            loss_sum=state.stats.loss_sum + per_task,
            agreement_sum=state.stats.agreement_sum + agreement,
            q_sum=state.stats.q_sum + q_mean,
            updates=state.stats.updates + 1,
        )
        return state._replace(params=params, opt_state=opt_state, updates=state.updates + 1, stats=stats)

    def _learn(self, state: DistillState, keys: jax.Array) -> DistillState:
        n = self.schedule.updates_per_iteration_round
        per_update = jax.vmap(lambda k: jax.random.split(k, n))(keys)
        return jax.lax.fori_loop(0, n, lambda i, st: self._gradient_step(st, per_update[:, i]), state)

    # -- one iteration ------------------------------------------------------

    def iteration(self, state: DistillState) -> DistillState:
        split = jax.vmap(lambda k: jax.random.split(k, 4))(state.keys)
        keys, act_keys, env_keys, update_keys = split[:, 0], split[:, 1], split[:, 2], split[:, 3]
        mask = jnp.asarray(self.tasks.action_mask)
        s = self.schedule

        q_teacher = self.teachers.q_values(None, state.obs)
        q_act = q_teacher if s.actor == "teacher" else self.student.q_values(state.params, state.obs)
        actions = jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(act_keys, q_act, s.actor_epsilon, mask)
        env_state, step = self.tasks.step(env_keys, state.env_state, actions)
        buffers = jax.vmap(replay.add_batch)(state.replay, Sample(state.obs, q_teacher))

        done = jnp.logical_or(step.terminated, step.truncated)
        ep_return = state.episode_return + step.reward
        ep_length = state.episode_length + 1
        stats = state.stats._replace(
            return_sum=state.stats.return_sum + jnp.where(done, ep_return, 0.0).sum(axis=1),
            length_sum=state.stats.length_sum + jnp.where(done, ep_length, 0.0).sum(axis=1),
            episodes=state.stats.episodes + done.sum(axis=1),
        )
        env_steps = state.env_steps + s.num_envs
        state = state._replace(
            env_state=env_state,
            obs=step.obs,
            replay=buffers,
            keys=keys,
            env_steps=env_steps,
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0.0, ep_length),
            stats=stats,
        )
        learn_now = jnp.logical_and(
            env_steps >= s.learning_starts, (env_steps // s.num_envs) % s.iterations_per_round == 0
        )
        return jax.lax.cond(learn_now, self._learn, lambda st, _: st, state, update_keys)

    @functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=(1,))
    def run(self, state: DistillState, num_iterations: int) -> DistillState:
        """``num_iterations`` iterations in one compiled call."""
        state = state._replace(stats=_empty_stats(self.num_tasks))
        state, _ = jax.lax.scan(lambda st, _: (self.iteration(st), None), state, None, length=num_iterations)
        return state
