"""A set of T tasks stepped together: observations padded, actions masked.

Tasks may differ in observation shape (same rank) and action count. Every
observation is zero-padded at the end of each axis to the largest shape in the
set, and each task's actions are the first ``n_i`` of a common count
``A = max_i n_i``; ``action_mask[i, a]`` says whether task ``i`` has action
``a``.

Consecutive tasks with the same env id form a group that is stepped with one
vmap (e.g. CartPole variants with different pole lengths); different env
types are stepped one group after another inside the same compiled function.
gymnax and pgx (MinAtar) tasks mix freely: both are pure JAX.

envpool Atari ids (``Pong-v5``, ...) make ``envpool_env.AtariGroup`` groups,
one envpool pool per task, configured by the ``atari`` options; a task set is
either all Atari or all pure JAX (gymnax, pgx).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.config.schema import AtariConfig
from jaxdqn.envs import envpool_env, gymnax_env, pgx_env
from jaxdqn.errors import CheckpointError, ConfigError


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    env_id: str
    env_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.env_id


def known_env_ids() -> list[str]:
    return gymnax_env.registered_ids() + list(pgx_env.registered_ids()) + list(envpool_env.registered_ids())


def check_env_id(env_id: str, key: str = "tasks[].env_id") -> None:
    """A known id passes; otherwise one line naming what is allowed (envpool, and so the Atari
    ids, is looked up only for an id that is not gymnax's or pgx's)."""
    if env_id in gymnax_env.registered_ids() or pgx_env.is_pgx_id(env_id) or envpool_env.is_atari_id(env_id):
        return
    if envpool_env.needs_atari_extra(env_id):
        raise ConfigError(
            f"config key '{key}': {env_id!r} is an Atari game, and Atari needs envpool, which is not installed; "
            f"install the extra: {envpool_env.ATARI_EXTRA}"
        )
    raise ConfigError(f"config key '{key}': unknown environment {env_id!r}; allowed: {', '.join(known_env_ids())}")


def group_key(task: TaskSpec):
    """Consecutive tasks with equal keys are stepped as one group.

    gymnax takes per-task parameters inside one vmap; pgx fixes its parameters
    when the environment is built, so pgx tasks group by id and parameters.
    """
    if pgx_env.is_pgx_id(task.env_id):
        return task.env_id, tuple(sorted(task.env_params.items()))
    return task.env_id


def fit_obs(obs: jax.Array, shape: Sequence[int], lead: int = 1) -> jax.Array:
    """Cuts or zero-pads the trailing axes of ``obs`` (after ``lead`` batch axes) to ``shape``.

    Task sets pad observations with zeros at the end of each axis, so a
    network trained on a smaller padded shape sees exactly its own inputs.
    """
    shape = tuple(shape)
    if obs.ndim - lead != len(shape):
        raise CheckpointError(f"observations of rank {obs.ndim - lead} cannot feed a network trained on shape {list(shape)}")
    cut = obs[(slice(None),) * lead + tuple(slice(0, min(s, t)) for s, t in zip(obs.shape[lead:], shape))]
    pads = [(0, 0)] * lead + [(0, t - s) for s, t in zip(cut.shape[lead:], shape)]
    return jnp.pad(cut, pads) if any(p != (0, 0) for p in pads) else cut


class TaskSet:
    """T tasks, ``num_envs`` environments each, with a leading task axis on everything."""

    def __init__(self, tasks: Sequence[TaskSpec], num_envs: int, atari: AtariConfig | None = None, atari_seed: int = 0):
        if not tasks:
            raise ConfigError("tasks: at least one task is required")
        for task in tasks:
            check_env_id(task.env_id)
        self.tasks = list(tasks)
        self.num_envs = num_envs
        self.is_atari = _check_atari_tasks(self.tasks)
        self.atari = envpool_env.resolved(atari or AtariConfig()) if self.is_atari else None
        self.groups: list[tuple[gymnax_env.GymnaxGroup | pgx_env.PgxGroup | envpool_env.AtariGroup, slice]] = []
        start = 0
        while start < len(tasks):
            stop = start
            while stop < len(tasks) and group_key(tasks[stop]) == group_key(tasks[start]):
                stop += 1
            if self.is_atari:
                seeds = [envpool_env.pool_seed(atari_seed, i) for i in range(start, stop)]
                group = envpool_env.AtariGroup(tasks[start].env_id, seeds, num_envs, self.atari)
            elif pgx_env.is_pgx_id(tasks[start].env_id):
                group = pgx_env.PgxGroup(tasks[start].env_id, [t.env_params for t in tasks[start:stop]], num_envs)
            else:
                group = gymnax_env.GymnaxGroup(tasks[start].env_id, [t.env_params for t in tasks[start:stop]], num_envs)
            self.groups.append((group, slice(start, stop)))
            start = stop

        shapes = [g.obs_shape for g, sl in self.groups for _ in range(sl.start, sl.stop)]
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ConfigError(f"tasks: observations must all have the same rank to be padded; got shapes {shapes}")
        self.obs_shape = tuple(int(max(dims)) for dims in zip(*shapes))
        self.task_obs_shapes = [tuple(int(d) for d in s) for s in shapes]
        dtypes = {g.obs_dtype for g, _ in self.groups}
        self.obs_dtype = dtypes.pop() if len(dtypes) == 1 else jnp.dtype(jnp.float32)
        self.task_num_actions = [g.num_actions for g, sl in self.groups for _ in range(sl.start, sl.stop)]
        self.num_actions = max(self.task_num_actions)
        mask = np.zeros((len(tasks), self.num_actions), bool)
        for i, n in enumerate(self.task_num_actions):
            mask[i, :n] = True
        self.action_mask = mask
        self.max_steps = max(g.max_steps for g, _ in self.groups)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def obs_valid(self) -> np.ndarray:
        """``[T, *obs_shape]`` bool: where task ``i``'s own observation lies inside the padded one."""
        valid = np.zeros((self.num_tasks, *self.obs_shape), bool)
        for i, shape in enumerate(self.task_obs_shapes):
            valid[(i, *(slice(0, d) for d in shape))] = True
        return valid

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.tasks]

    def _pad(self, x: jax.Array) -> jax.Array:
        return fit_obs(x.astype(self.obs_dtype), self.obs_shape, lead=2)

    def reset(self, keys: jax.Array):
        """``keys [T]`` -> (env states per group, obs ``[T, num_envs, *obs_shape]``)."""
        states, obs = [], []
        for group, sl in self.groups:
            state, group_obs = group.reset(keys[sl])
            states.append(state)
            obs.append(self._pad(group_obs))
        return tuple(states), jnp.concatenate(obs, axis=0)

    def step(self, keys: jax.Array, states, actions: jax.Array):
        """``actions [T, num_envs]`` -> (states, EnvStep with leaves ``[T, num_envs, ...]``)."""
        new_states, steps = [], []
        for (group, sl), state in zip(self.groups, states):
            state, step = group.step(keys[sl], state, actions[sl])
            new_states.append(state)
            steps.append(step._replace(obs=self._pad(step.obs), next_obs=self._pad(step.next_obs)))
        merged = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *steps)
        return tuple(new_states), merged

    def episode_signals(self, step):
        """``(reward, ended, counted)`` for the episode statistics, leaves ``[T, num_envs]``.

        gymnax: the step's reward, ``terminated | truncated``, every step counts.
        Atari: the raw game score, the real end of a game (not a lost life), and
        only steps that are transitions (envpool's auto-reset step is not).
        """
        counted = self.is_transition(step).astype(jnp.float32)
        if self.is_atari:
            return step.score, step.episode_end, counted
        return step.reward, jnp.logical_or(step.terminated, step.truncated), counted

    def is_transition(self, step):
        """``[T, num_envs]`` bool: whether each step is a transition (envpool's auto-reset step,
        from an episode's final frame to the next one's first, is not)."""
        if self.is_atari:
            return jnp.logical_not(step.reset_step)
        return jnp.ones(step.reward.shape, bool)


def _check_atari_tasks(tasks: Sequence[TaskSpec]) -> bool:
    """Whether the tasks are Atari games; mixing them with gymnax tasks is an error."""
    atari = [envpool_env.is_atari_id(t.env_id) for t in tasks]
    if any(atari) and not all(atari):
        raise ConfigError(
            "tasks: Atari games (envpool) cannot be trained together with gymnax environments in one run; "
            f"got {', '.join(t.env_id for t in tasks)}"
        )
    for i, task in enumerate(tasks):
        if atari[i] and task.env_params:
            raise ConfigError(
                f"config key 'tasks[{i}].env_params': Atari tasks take their settings from the atari: section; "
                f"got {task.env_params!r}"
            )
    return all(atari)


def make_taskset(tasks: Sequence[TaskSpec], num_envs: int, atari: AtariConfig | None = None, atari_seed: int = 0) -> TaskSet:
    return TaskSet(tasks, num_envs, atari, atari_seed)
