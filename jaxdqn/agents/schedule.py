"""All env-step / update arithmetic of a run, in one object.

Everything is counted in env steps *per task* (all of a task's parallel envs
together). An iteration steps every env once (``num_envs`` env steps); a
round of ``updates_per_round`` gradient steps follows every ``update_every``
env steps once ``learning_starts`` have passed. When ``num_envs`` exceeds
``update_every`` one iteration spans several rounds and takes all their
updates at once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def linear_epsilon(step: jax.Array, start: float, end: float, decay_steps: int) -> jax.Array:
    """``start`` -> ``end`` linearly over ``decay_steps`` env steps, then ``end``."""
    frac = jnp.clip(step / decay_steps, 0.0, 1.0)
    return start + frac * (end - start)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When to act how greedily, and when (and how much) to learn."""

    num_envs: int
    learning_starts: int
    update_every: int
    updates_per_round: int = 1
    batch_size: int = 32  # replay items per task per gradient step
    replay_capacity: int = 10_000  # replay items kept per task
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 1

    @property
    def iterations_per_round(self) -> int:
        return max(1, self.update_every // self.num_envs)

    @property
    def updates_per_iteration_round(self) -> int:
        """Gradient steps per round, scaled up when one iteration spans several rounds."""
        return self.updates_per_round * max(1, self.num_envs // self.update_every)

    def learn_due(self, env_steps):
        """Whether an iteration that ends at ``env_steps`` learns (a jax array, or a Python int on the host)."""
        return (env_steps >= self.learning_starts) & ((env_steps // self.num_envs) % self.iterations_per_round == 0)

    def epsilon(self, env_steps: jax.Array) -> jax.Array:
        """Exploration of the acting policy after ``env_steps`` env steps (see :func:`linear_epsilon`)."""
        return linear_epsilon(env_steps, self.epsilon_start, self.epsilon_end, self.epsilon_decay_steps)

    def updates_by(self, env_steps: int) -> int:
        """Gradient steps taken by ``env_steps`` env steps: ``max(0, n - learning_starts) * updates_per_round // update_every``."""
        return max(0, env_steps - self.learning_starts) * self.updates_per_round // self.update_every

    def env_steps_at(self, updates: jax.Array) -> jax.Array:
        """The env step (per task) at which gradient step ``updates`` is taken (the inverse of :meth:`updates_by`)."""
        return self.learning_starts + jnp.asarray(updates, jnp.float32) * (self.update_every / self.updates_per_round)
