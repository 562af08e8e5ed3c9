"""Teachers: checkpointed tasks as Q-functions whose parameters never change."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxdqn.envs.taskset import fit_obs
from jaxdqn.networks import QNetwork
from jaxdqn.running.stored import Source

Params = Any


def fixed_q(source: Source, task: int, num_actions: int | None = None) -> "FixedQ":
    """Task ``task`` of a loaded checkpoint as a frozen Q-function (``num_actions`` wide, its own by default)."""
    n = source.task_num_actions(task)
    return FixedQ(
        network=source.learner.network,
        params=jax.tree_util.tree_map(jnp.asarray, source.task_params(task)),
        obs_shape=source.obs_shape,
        task_actions=n,
        num_actions=n if num_actions is None else num_actions,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FixedQ:
    """One checkpointed task as a Q-function whose parameters never change.

    The parameters are held here, outside any training state, so nothing
    that trains can reach them.
    """

    network: QNetwork
    params: Params  # one task, no task axis
    obs_shape: tuple[int, ...]  # what the network was trained on
    task_actions: int  # the task's own actions (the first task_actions outputs)
    num_actions: int  # width of the returned Q-values (extra columns are 0; callers mask them)

    def __call__(self, obs: jax.Array) -> jax.Array:
        """``obs [B, *shape]`` -> ``[B, num_actions]``."""
        q = self.network.apply(self.params, fit_obs(obs, self.obs_shape))[:, : self.task_actions]
        q = jax.lax.stop_gradient(q)
        if self.num_actions > self.task_actions:
            q = jnp.pad(q, ((0, 0), (0, self.num_actions - self.task_actions)))
        return q[:, : self.num_actions]


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherSet:
    """One fixed Q-function per task, shaped like a learner's ``q_values``."""

    members: tuple[FixedQ, ...]

    @property
    def num_tasks(self) -> int:
        return len(self.members)

    def q_values(self, params: Any, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> ``[T, B, A]``. ``params`` is ignored (kept for
        the learner interface, so :mod:`jaxdqn.running.evaluate` can play a teacher)."""
        del params
        return jnp.stack([member(obs[i]) for i, member in enumerate(self.members)])
