"""S copies of a system in one compiled call: a seed axis in front of the task axis.

``Seeded(system, S)`` offers the host loop what a system offers (``init``, ``run``,
``place``) over states whose leaves lead with a seed axis ``[S, ...]``: copy ``s`` is
exactly the state of a run of ``system`` seeded by ``seed_task_keys[s]``. The counters
``env_steps`` and ``updates`` are the exception: the schedule is the same for every
seed, so they never differ, and they stay unbatched. That keeps the schedule's
``lax.cond`` (learn or not at this env step) a real branch under ``vmap``; a batched
predicate would turn it into a select that computes the gradient steps at every env step.

With several devices (one process), the copies are split over them: a ``("seed",)``
mesh of the largest device count that divides ``S``, each device holding its own
copies whole. The system's own task/data mesh is not used then.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SHARED = ("env_steps", "updates")  # state fields every copy has in common


def state_axes(state) -> Any:
    """The vmap axes of a state: 0 on every field but the shared counters."""
    return state._replace(**{name: None if name in SHARED else 0 for name in state._fields})


def take(state, s: int):
    """Copy ``s`` of a seeded state: an ordinary state of the wrapped system."""
    return state._replace(
        **{name: jax.tree_util.tree_map(lambda x: x[s], getattr(state, name)) for name in state._fields if name not in SHARED}
    )


def stack(states: list):
    """The seeded state of the copies ``states`` (which share their counters)."""
    first = states[0]
    return first._replace(
        **{
            name: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(getattr(s, name) for s in states))
            for name in first._fields
            if name not in SHARED
        }
    )


def take_metrics(metrics: dict, s: int) -> dict:
    return {name: value[s] for name, value in metrics.items()}


def seed_mesh(num_seeds: int, devices=None) -> Mesh | None:
    """A ``("seed",)`` mesh over the most local devices that divide ``num_seeds`` (``None``: one)."""
    devices = list(jax.local_devices() if devices is None else devices)
    used = max(n for n in range(1, len(devices) + 1) if num_seeds % n == 0)
    return None if used == 1 else Mesh(np.asarray(devices[:used]), ("seed",))


@dataclasses.dataclass(frozen=True, eq=False)
class Seeded:
    """``system`` run as ``num_seeds`` copies, vmapped over a leading seed axis."""

    system: Any
    num_seeds: int
    mesh: Mesh | None = None  # a ("seed",) mesh, see seed_mesh

    # what the loop reads of a system, unchanged by the copies
    @property
    def tasks(self):
        return self.system.tasks

    @property
    def num_tasks(self) -> int:
        return self.system.num_tasks

    @property
    def learner(self):
        return self.system.learner

    def epsilon(self, env_steps):
        return self.system.epsilon(env_steps)

    def _init_copies(self, seed_task_keys: jax.Array):
        states = jax.vmap(self.system.init)(seed_task_keys)
        return states._replace(**{name: getattr(states, name)[0] for name in SHARED})

    @functools.partial(jax.jit, static_argnums=0)
    def init(self, seed_task_keys: jax.Array):
        """``seed_task_keys [S, T, 2]`` -> the seeded state (copy ``s`` = ``system.init(seed_task_keys[s])``)."""
        return self._init_copies(seed_task_keys)

    @functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=(1,))
    def run(self, state, num_iterations: int):
        """``num_iterations`` iterations of every copy in one compiled call -> (state, metrics ``[S, ...]``)."""
        axes = state_axes(state)
        return jax.vmap(lambda st: self.system.chunk(st, num_iterations), in_axes=(axes,), out_axes=(axes, 0))(state)

    def shardings(self, state) -> Any:
        """Per leaf: split on ``seed`` (the copies' leaves) or replicated (the counters)."""
        split, whole = NamedSharding(self.mesh, PartitionSpec("seed")), NamedSharding(self.mesh, PartitionSpec())
        return state._replace(
            **{
                name: jax.tree_util.tree_map(lambda _: whole if name in SHARED else split, getattr(state, name))
                for name in state._fields
            }
        )

    def place(self, state):
        if self.mesh is None:
            return state
        return jax.device_put(state, self.shardings(state))

    def fresh_state(self, seed_task_keys: jax.Array):
        """A new seeded state, built on the seed mesh when there is one."""
        if self.mesh is None:
            return self.init(seed_task_keys)
        out = self.shardings(jax.eval_shape(self.init, seed_task_keys))
        return jax.jit(self._init_copies, out_shardings=out)(seed_task_keys)
