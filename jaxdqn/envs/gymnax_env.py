"""gymnax environments: pure JAX, so stepping compiles into the training step."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import gymnax
import jax
import jax.numpy as jnp

from jaxdqn.envs.base import EnvStep
from jaxdqn.errors import ConfigError


# gymnax ids with a discrete action space and a fixed-shape observation, the
# kind DQN acts in. (Listed rather than probed: some gymnax envs download data
# when constructed.)
DISCRETE_IDS = (
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "Asterix-MinAtar",
    "Breakout-MinAtar",
    "Freeway-MinAtar",
    "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar",
    "Catch-bsuite",
    "FourRooms-misc",
)


def registered_ids() -> list[str]:
    return [env_id for env_id in DISCRETE_IDS if env_id in gymnax.registered_envs]


def make_params(env_id: str, overrides: dict[str, Any], key: str = "tasks[].env_params"):
    """The environment's default parameters with ``overrides`` applied, checked by name."""
    env, default = gymnax.make(env_id)
    allowed = [f.name for f in dataclasses.fields(default)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ConfigError(f"config key '{key}': unknown parameter {unknown[0]!r} for {env_id}; allowed: {', '.join(allowed)}")
    return env, default.replace(**overrides)


class GymnaxGroup:
    """Tasks that share one gymnax env id, stepped with one vmap over the group.

    Each task has its own env parameters (stacked on a leading group axis) and
    ``num_envs`` copies of the environment.
    """

    def __init__(self, env_id: str, param_overrides: Sequence[dict[str, Any]], num_envs: int):
        per_task = [make_params(env_id, o) for o in param_overrides]
        self.env = per_task[0][0]
        self.env_id = env_id
        self.params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[p for _, p in per_task])
        self.num_envs = num_envs
        first = per_task[0][1]
        space = self.env.observation_space(first)
        self.obs_shape = tuple(space.shape)
        # MinAtar frames are 0/1 channels that gymnax hands over as float32; kept as
        # bool they take a quarter of the replay memory and mean the same to the network.
        self.obs_dtype = jnp.dtype(bool) if env_id.endswith("-MinAtar") else jnp.dtype(space.dtype)
        self.num_actions = int(self.env.action_space(first).n)
        self.max_steps = max(int(p.max_steps_in_episode) for _, p in per_task)

    def _reset_one(self, key, params):
        keys = jax.random.split(key, self.num_envs)
        obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, params)
        return state, obs.astype(self.obs_dtype)

    def _step_one(self, key, state, actions, params):
        keys = jax.random.split(key, self.num_envs)
        obs, state, reward, terminated, truncated, info = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(
            keys, state, actions, params
        )
        step = EnvStep(
            obs=obs.astype(self.obs_dtype),
            next_obs=info["final_observation"].astype(self.obs_dtype),
            reward=reward.astype(jnp.float32),
            terminated=terminated.astype(bool),
            # gymnax reports the time limit even when the episode also terminated;
            # termination wins, so such a step never bootstraps.
            truncated=jnp.logical_and(truncated, jnp.logical_not(terminated)).astype(bool),
        )
        return state, step

    def reset(self, keys: jax.Array):
        """``keys [G]`` -> (state, obs ``[G, num_envs, *obs_shape]``)."""
        return jax.vmap(self._reset_one)(keys, self.params)

    def step(self, keys: jax.Array, state, actions: jax.Array):
        """``actions [G, num_envs]`` -> (state, EnvStep with leaves ``[G, num_envs, ...]``)."""
        return jax.vmap(self._step_one)(keys, state, actions, self.params)
