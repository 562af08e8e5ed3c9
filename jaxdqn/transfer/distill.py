"""Policy distillation: T fixed teachers into one student, one compiled iteration.

An iteration: an actor (each task's teacher, or the student itself for online
distillation) acts epsilon-greedily in ``num_envs`` environments per task; the
states go into per-task replay together with the teacher's Q-values for them
(computed once per state: by acting when the teachers act, else as the step is
recorded); then, on the update schedule, the student takes
gradient steps on

``L(theta) = sum_i (1/B) sum_b ell(q_theta(s_ib, task i), q_teacher_i(s_ib); mask_i)``

where ``ell`` is :func:`jaxdqn.losses.distill_kl`, ``distill_mse`` or
``distill_nll``. The iteration, ``run(state, n) -> (state, metrics)`` and the
schedule are the ones :class:`jaxdqn.agents.DQNAgent` uses
(:class:`jaxdqn.agents.system.System`); only the learner fields, what replay
stores, who acts and the gradient step are distillation's own.

With T > 1 the student shares its torso across tasks and has one head per
task (the hard-sharing layout of :class:`jaxdqn.agents.Learner`), so its
checkpoints load with ``jaxdqn evaluate`` like any training run's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxdqn import losses, replay
from jaxdqn.agents.learner import Learner
from jaxdqn.agents.schedule import Schedule
from jaxdqn.agents.system import System
from jaxdqn.envs import TaskSet
from jaxdqn.transfer.teachers import TeacherSet


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
    one = distill_loss(kind, tau_teacher, tau_student)
    per_example = jax.vmap(jax.vmap(one, in_axes=(0, 0, None)))(q_student, q_teacher, action_mask)
    return per_example.mean(axis=1)


def distill_loss(kind: str = "kl", tau_teacher: float = 0.01, tau_student: float = 1.0):
    """The per-example loss ``ell(q_student [A], q_teacher [A], mask [A]) -> []`` of ``kind``
    (see :func:`task_distill_losses`)."""
    if kind == "kl":
        return lambda s, t, m: losses.distill_kl(s, t, tau_teacher, tau_student, m)
    if kind == "mse":
        return losses.distill_mse
    if kind == "nll":
        return lambda s, t, m: losses.distill_nll(s, t, m, tau_student)
    raise ValueError(f"distillation loss must be one of 'kl', 'mse', 'nll'; got {kind!r}")


def greedy_agreement(q_student: jax.Array, q_teacher: jax.Array, action_mask: jax.Array) -> jax.Array:
    """``[T]``: fraction of states where student and teacher pick the same valid greedy action."""
    argmax = jax.vmap(jax.vmap(losses.masked_argmax, in_axes=(0, None)))
    return (argmax(q_student, action_mask) == argmax(q_teacher, action_mask)).mean(axis=1)


class Sample(NamedTuple):
    """What distillation replay keeps: a state and the teacher's Q-values there."""

    obs: jax.Array
    q_teacher: jax.Array


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


@dataclasses.dataclass(frozen=True)
class LossSpec:
    kind: str = "kl"
    tau_teacher: float = 0.01
    tau_student: float = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Distiller(System):
    """Student ``learner`` (its network, layout and optimizer), teachers, tasks, schedule.

    ``actor`` is who acts to fill replay: ``"teacher"`` or ``"student"``
    (online distillation); it explores with the schedule's epsilon.
    """

    student: Learner
    teachers: TeacherSet
    tasks: TaskSet
    schedule: Schedule
    loss_spec: LossSpec = LossSpec()
    actor: str = "teacher"
    mesh: Any = None
    buffer: Any = replay

    state_type = DistillState
    learn_metrics = (("loss", True), ("q_mean", True), ("agreement", True))

    @property
    def learner(self) -> Learner:
        return self.student

    def init_learning(self, init_keys: jax.Array, obs: jax.Array) -> dict:
        params = self.student.init_params(init_keys, obs[0])
        return {"params": params, "opt_state": self.student.init_opt_state(params)}

    def replay_example(self, obs: jax.Array) -> Sample:
        return Sample(obs[0, 0], jnp.zeros((self.tasks.num_actions,), jnp.float32))

    def replay_items(self, state: DistillState, actions: jax.Array, q: jax.Array, step) -> Sample:
        if self.actor == "teacher":  # the teachers' Q-values on these observations: what acting used
            return Sample(state.obs, q)
        return Sample(state.obs, self.teachers.q_values(None, state.obs))

    def acting_q(self, state: DistillState) -> jax.Array:
        if self.actor == "teacher":
            return self.teachers.q_values(None, state.obs)
        return self.student.q_values(state.params, state.obs)

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
        return losses.weighted_task_sum(per_task), {"loss": per_task, "agreement": agreement, "q_mean": q_taken.mean(axis=1)}

    def gradient_step(self, state: DistillState, batch: Sample, keys: jax.Array) -> tuple[DistillState, dict]:
        del keys  # the step draws nothing of its own
        grads, info = jax.grad(self.loss, has_aux=True)(state.params, batch)
        params, opt_state = self.student.apply_gradients(grads, state.opt_state, state.params)
        return state._replace(params=params, opt_state=opt_state), info
