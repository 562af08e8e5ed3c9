"""MinAtar through pgx: pure JAX, so stepping compiles into the training step.

pgx ports the original MinAtar (sticky actions with probability 0.1, minimal
action sets) and steps Freeway and SpaceInvaders tens of times faster than
gymnax on CPU (benchmarks/bench_envs.py). pgx environments do not reset
themselves: a terminated state stays terminated. ``PgxGroup`` adds the
auto-reset with exact episode boundaries the rest of the library expects:

- ``next_obs`` is the observation the step produced (the last one of an
  ending episode) and goes into replay; ``obs`` is already the first
  observation of the next episode, so no stored transition crosses episodes;
- ``terminated`` is the game's own end (no bootstrap);
- ``truncated`` is the step cap ``max_episode_steps`` reached without the game
  ending (bootstraps).

Task parameters (``tasks[i].env_params``): ``sticky_action_prob``,
``use_minimal_action_set`` (pgx's constructor arguments, pgx's defaults) and
``max_episode_steps``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxdqn.envs.base import EnvStep
from jaxdqn.errors import ConfigError


def _env_classes() -> dict[str, type]:
    from pgx.minatar import asterix, breakout, freeway, seaquest, space_invaders

    return {
        "minatar-asterix": asterix.MinAtarAsterix,
        "minatar-breakout": breakout.MinAtarBreakout,
        "minatar-freeway": freeway.MinAtarFreeway,
        "minatar-seaquest": seaquest.MinAtarSeaquest,
        "minatar-space_invaders": space_invaders.MinAtarSpaceInvaders,
    }


IDS = ("minatar-asterix", "minatar-breakout", "minatar-freeway", "minatar-seaquest", "minatar-space_invaders")


def registered_ids() -> tuple[str, ...]:
    return IDS


def is_pgx_id(env_id: str) -> bool:
    return env_id in IDS


@dataclasses.dataclass(frozen=True)
class PgxParams:
    """What a task may set in ``env_params`` for a pgx MinAtar game."""

    sticky_action_prob: float = 0.1  # the previous action repeats with this probability
    use_minimal_action_set: bool = True  # the game's own actions (False: all 6 MinAtar actions)
    # Original MinAtar has no step cap (Freeway ends itself after 2,500 steps); the cap
    # bounds evaluation episodes of agents that never lose. Reaching it bootstraps.
    max_episode_steps: int = 10_000


def make_params(env_id: str, overrides: dict[str, Any], key: str = "tasks[].env_params") -> PgxParams:
    """The defaults with ``overrides`` applied, checked by name and range."""
    allowed = [f.name for f in dataclasses.fields(PgxParams)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ConfigError(f"config key '{key}': unknown parameter {unknown[0]!r} for {env_id}; allowed: {', '.join(allowed)}")
    params = PgxParams(**overrides)
    p = params.sticky_action_prob
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"config key '{key}.sticky_action_prob': got {p!r}; allowed: a number in [0.0, 1.0]")
    if not isinstance(params.use_minimal_action_set, bool):
        raise ConfigError(
            f"config key '{key}.use_minimal_action_set': got {params.use_minimal_action_set!r}; allowed: true or false"
        )
    n = params.max_episode_steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"config key '{key}.max_episode_steps': got {n!r}; allowed: an integer >= 1")
    return dataclasses.replace(params, sticky_action_prob=float(p))


def make_env(env_id: str, params: PgxParams):
    return _env_classes()[env_id](
        use_minimal_action_set=params.use_minimal_action_set, sticky_action_prob=params.sticky_action_prob
    )


class PgxGroup:
    """Tasks that share one pgx MinAtar game and its parameters, stepped with one vmap.

    ``num_envs`` copies of the game per task; everything has leading axes
    ``[G, num_envs]``. (Tasks with different parameters form different groups:
    pgx fixes them when the environment is built.)
    """

    def __init__(self, env_id: str, param_overrides: Sequence[dict[str, Any]], num_envs: int):
        per_task = [make_params(env_id, o) for o in param_overrides]
        if any(p != per_task[0] for p in per_task):
            raise ValueError("a PgxGroup holds tasks with identical parameters; see taskset.group_key")
        self.params = per_task[0]
        self.env = make_env(env_id, self.params)
        self.env_id = env_id
        self.num_envs = num_envs
        self.obs_shape = tuple(int(d) for d in self.env.observation_shape)
        self.obs_dtype = jnp.dtype(bool)
        self.num_actions = int(self.env.num_actions)
        self.max_steps = self.params.max_episode_steps
        template = jax.eval_shape(self._init_envs, jax.random.PRNGKey(0))
        self._leaves, self._treedef = jax.tree_util.tree_flatten(template)

    # Some pgx states hold zero-size arrays (e.g. Asterix's shot timer), which orbax
    # refuses to save; the state kept in TrainState is the tuple of non-empty leaves.
    def _pack(self, state) -> tuple:
        return tuple(x for x in jax.tree_util.tree_leaves(state) if x.size)

    def _unpack(self, packed: tuple):
        given = iter(packed)
        leaves = [jnp.zeros(t.shape, t.dtype) if not t.size else next(given) for t in self._leaves]
        return jax.tree_util.tree_unflatten(self._treedef, leaves)

    def _init_envs(self, key):
        return jax.vmap(self.env.init)(jax.random.split(key, self.num_envs))

    def _reset_envs(self, key):
        state = self._init_envs(key)
        return self._pack(state), state.observation

    def _step_envs(self, key, packed, actions):
        step_key, reset_key = jax.random.split(key)
        state = self._unpack(packed)
        stepped = jax.vmap(self.env.step)(state, actions, jax.random.split(step_key, self.num_envs))
        terminated = stepped.terminated
        truncated = jnp.logical_and(stepped._step_count >= self.max_steps, jnp.logical_not(terminated))
        done = jnp.logical_or(terminated, truncated)
        fresh = self._init_envs(reset_key)

        def pick(new, old):
            return jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), new, old)

        state = self._pack(jax.tree_util.tree_map(pick, fresh, stepped))
        step = EnvStep(
            obs=pick(fresh.observation, stepped.observation),
            next_obs=stepped.observation,
            reward=stepped.rewards[:, 0].astype(jnp.float32),
            terminated=terminated,
            truncated=truncated,
        )
        return state, step

    def reset(self, keys: jax.Array):
        """``keys [G]`` -> (state, obs ``[G, num_envs, *obs_shape]``)."""
        return jax.vmap(self._reset_envs)(keys)

    def step(self, keys: jax.Array, state, actions: jax.Array):
        """``actions [G, num_envs]`` -> (state, EnvStep with leaves ``[G, num_envs, ...]``)."""
        return jax.vmap(self._step_envs)(keys, state, actions)
