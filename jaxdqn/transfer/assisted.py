"""Distillation-assisted transfer: TD learning plus a decaying pull towards a source teacher.

The learner minimises

``L(theta) = L_TD(theta) + beta(n) * sum_i (1/B) sum_b ell(q_theta(s_ib), q_source(s_ib))``

where ``L_TD`` is the ordinary DQN loss of :class:`jaxdqn.agents.Learner`,
``ell`` a distillation loss (:func:`jaxdqn.transfer.distill.task_distill_losses`)
evaluated on the replay batch's states, and ``beta(n)`` a schedule over the
gradient step ``n`` (:func:`beta_at`). The step count lives in the optimizer
state, so the schedule survives checkpoint and resume. The weighted
distillation term is reported in the ``penalty`` column of ``metrics.csv``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdqn import losses
from jaxdqn.agents.learner import Learner
from jaxdqn.agents.schedule import Schedule
from jaxdqn.transfer.distill import task_distill_losses
from jaxdqn.transfer.sources import TeacherSet

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


class AssistedOptState(NamedTuple):
    inner: Any  # the Learner's optimizer state
    count: jax.Array  # gradient steps taken


@dataclasses.dataclass(frozen=True, eq=False)
class AssistedLearner(Learner):
    """A :class:`Learner` whose loss adds ``beta * distillation loss`` towards ``teacher``."""

    teacher: TeacherSet | None = None
    distill_kind: str = "mse"
    tau_teacher: float = 0.01
    tau_student: float = 1.0
    beta_schedule: str = "linear"
    beta_start: float = 1.0
    beta_end: float = 0.0
    beta_decay_steps: float = 50_000.0  # env steps per task
    schedule: Schedule | None = None  # converts gradient steps to env steps

    def beta(self, count: jax.Array) -> jax.Array:
        """``beta`` at gradient step ``count``, at the env step the schedule takes it."""
        env_steps = self.schedule.env_steps_at(count)
        return beta_at(env_steps, self.beta_schedule, self.beta_start, self.beta_end, self.beta_decay_steps)

    def init_opt_state(self, params):
        return AssistedOptState(super().init_opt_state(params), jnp.zeros((), jnp.int32))

    def assisted_loss(self, params, target_params, batch, beta):
        total, info = Learner.loss(self, params, target_params, batch)
        q_student = self.q_values(params, batch.obs)
        q_teacher = self.teacher.q_values(None, batch.obs)
        mask = jnp.asarray(self.action_mask)
        per_task = task_distill_losses(q_student, q_teacher, mask, self.distill_kind, self.tau_teacher, self.tau_student)
        extra = beta * losses.weighted_task_sum(per_task)
        return total + extra, info._replace(penalty=info.penalty + extra)

    def update(self, params, target_params, opt_state: AssistedOptState, batch):
        beta = jax.lax.stop_gradient(self.beta(opt_state.count))
        grads, info = jax.grad(self.assisted_loss, has_aux=True)(params, target_params, batch, beta)
        params, inner = self.apply_gradients(grads, opt_state.inner, params)
        return params, AssistedOptState(inner, optax.safe_increment(opt_state.count)), info
