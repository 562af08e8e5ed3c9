"""Distillation-assisted transfer: TD learning plus a decaying pull towards a source teacher.

The learner minimises

``L(theta) = L_TD(theta) + beta(n) * sum_i (1/B) sum_b ell(q_theta(s_ib), q_source(s_ib))``

where ``L_TD`` is the ordinary DQN loss of :class:`jaxdqn.agents.Learner`,
``ell`` a distillation loss (:func:`jaxdqn.transfer.distill.distill_loss`)
evaluated on the replay batch's states, and ``beta(n)`` a schedule over the
gradient step ``n`` (:func:`beta_at`). The term is a per-task loss term of the
learner (:class:`TeacherPull`), so PopArt (the term sees unnormalised
Q-values), gradient surgery and task weights treat it as part of each task's
loss. The weighted distillation term is reported in the ``penalty`` column of
``metrics.csv``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdqn.agents.schedule import Schedule
from jaxdqn.transfer.distill import distill_loss
from jaxdqn.transfer.teachers import TeacherSet

BETA_SCHEDULES = ("constant", "linear", "exponential")


def beta_at(
    env_steps: jax.Array,
    schedule: str,
    beta_start: float,
    beta_end: float,
    decay_steps: float,
) -> jax.Array:
    """Weight of the distillation term after ``env_steps`` env steps per task.

    - ``constant``:    ``beta_start``
    - ``linear``:      ``beta_start + (beta_end - beta_start) * min(1, t / decay_steps)``
    - ``exponential``: ``beta_end + (beta_start - beta_end) * 0.5 ** (t / decay_steps)``
      (``decay_steps`` is the half-life)
    """
    t = jnp.asarray(env_steps, jnp.float32)
    if schedule == "constant":
        return jnp.asarray(beta_start, jnp.float32) + 0.0 * t
    if schedule == "linear":
        return beta_start + (beta_end - beta_start) * jnp.clip(t / decay_steps, 0.0, 1.0)
    if schedule == "exponential":
        return beta_end + (beta_start - beta_end) * jnp.exp2(-t / decay_steps)
    raise ValueError(f"beta schedule must be one of {BETA_SCHEDULES}; got {schedule!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherPull:
    """The per-task term ``beta(n) * (1/B) sum_b ell(q_theta(s_ib), q_source(s_ib))`` of
    distillation-assisted transfer (a :class:`jaxdqn.agents.parts.TaskTerm`): the teacher's
    Q-values on the batch's states are computed outside the gradient, ``n`` is the gradient
    step (the training state's update count, so the schedule survives checkpoint and resume)."""

    teacher: TeacherSet
    schedule: Schedule  # converts gradient steps to env steps
    distill_kind: str = "mse"
    tau_teacher: float = 0.01
    tau_student: float = 1.0
    beta_schedule: str = "linear"
    beta_start: float = 1.0
    beta_end: float = 0.0
    beta_decay_steps: float = 50_000.0  # env steps per task

    def beta(self, count: jax.Array) -> jax.Array:
        """``beta`` at gradient step ``count``, at the env step the schedule takes it."""
        env_steps = self.schedule.env_steps_at(count)
        return beta_at(env_steps, self.beta_schedule, self.beta_start, self.beta_end, self.beta_decay_steps)

    def prepare(self, batch) -> jax.Array:
        return jax.lax.stop_gradient(self.teacher.q_values(None, batch.obs))  # [T, B, A]

    def task_loss(self, q: jax.Array, q_teacher: jax.Array, action_mask: jax.Array, count: jax.Array) -> jax.Array:
        ell = distill_loss(self.distill_kind, self.tau_teacher, self.tau_student)
        per_example = jax.vmap(ell, in_axes=(0, 0, None))(q, q_teacher, action_mask)
        return jax.lax.stop_gradient(self.beta(count)) * per_example.mean()
