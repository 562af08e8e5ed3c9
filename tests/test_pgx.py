"""pgx MinAtar behind the env interface: auto-reset, episode boundaries, step cap, parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import config
from jaxdqn.envs import TaskSet, TaskSpec
from jaxdqn.envs.pgx_env import IDS, PgxGroup
from jaxdqn.errors import ConfigError


def _roll(group: PgxGroup, actions_fn, steps: int, seed: int = 0):
    """Steps one task's envs ``steps`` times; returns the per-step EnvSteps and states."""
    state, obs = jax.jit(group.reset)(jax.random.split(jax.random.PRNGKey(seed), 1))  # pgx op by op is slow
    step_fn = jax.jit(group.step)
    out = []
    for t in range(steps):
        keys = jax.random.split(jax.random.PRNGKey(1000 * seed + t), 1)
        state, step = step_fn(keys, state, actions_fn(t))
        out.append((jax.device_get(step), group._unpack(jax.tree_util.tree_map(lambda x: x[0], state))))
    return obs, out


def test_auto_reset_keeps_episode_boundaries():
    group = PgxGroup("minatar-breakout", [{}], num_envs=8)
    rng = np.random.default_rng(0)
    _, out = _roll(group, lambda t: jnp.asarray(rng.integers(0, 3, (1, 8))), steps=40)
    ended = 0
    for step, state in out:
        done = step.terminated[0] | step.truncated[0]
        obs, next_obs = np.asarray(step.obs[0]), np.asarray(step.next_obs[0])
        for e in range(8):
            if done[e]:
                ended += 1
                # the next episode starts afresh: step count 0, the acting obs is the new episode's
                assert int(state._step_count[e]) == 0
                assert not bool(state.terminated[e])
                assert np.array_equal(obs[e], np.asarray(state.observation[e]))
                assert not np.array_equal(obs[e], next_obs[e])  # the terminal frame is not what the agent sees next
            else:
                assert np.array_equal(obs[e], next_obs[e])
    assert ended > 0  # random Breakout loses the ball within 40 steps


def test_step_cap_truncates_and_termination_wins():
    # Freeway never ends by itself before 2,500 steps: the cap is the only end.
    group = PgxGroup("minatar-freeway", [{"max_episode_steps": 5}], num_envs=3)
    _, out = _roll(group, lambda t: jnp.zeros((1, 3), jnp.int32), steps=11)
    truncated = np.array([bool(step.truncated[0].all()) for step, _ in out])
    assert list(np.flatnonzero(truncated)) == [4, 9]
    assert not any(bool(step.terminated[0].any()) for step, _ in out)

    # Breakout with a cap far away: every end is a termination, never a truncation.
    group = PgxGroup("minatar-breakout", [{"max_episode_steps": 10_000}], num_envs=8)
    _, out = _roll(group, lambda t: jnp.zeros((1, 8), jnp.int32), steps=40)
    assert sum(int(step.terminated[0].sum()) for step, _ in out) > 0
    assert not any(bool((step.terminated[0] & step.truncated[0]).any()) for step, _ in out)


@pytest.mark.parametrize("sticky,moves", [(0.0, True), (1.0, False)])
def test_sticky_action_probability(sticky, moves):
    # Breakout's minimal action 2 is "right". With probability 1 the previous action
    # (no-op at the start) repeats forever, so the paddle never moves; with 0 it moves.
    group = PgxGroup("minatar-breakout", [{"sticky_action_prob": sticky}], num_envs=4)
    obs0, out = _roll(group, lambda t: jnp.full((1, 4), 2, jnp.int32), steps=3)
    start = np.asarray(obs0[0, :, 9, :, 0])  # paddle channel, bottom row
    after = np.asarray(out[-1][0].next_obs[0, :, 9, :, 0])
    assert np.array_equal(start, after) != moves


def test_five_games_pad_and_mask():
    tasks = TaskSet([TaskSpec(i) for i in IDS], num_envs=2)
    assert tasks.obs_shape == (10, 10, 10)
    assert tasks.task_num_actions == [5, 3, 3, 6, 4]
    assert tasks.action_mask.sum(axis=1).tolist() == [5, 3, 3, 6, 4]
    _, obs = jax.jit(tasks.reset)(jax.random.split(jax.random.PRNGKey(0), 5))
    assert obs.shape == (5, 2, 10, 10, 10) and obs.dtype == jnp.bool_
    channels = {"minatar-asterix": 4, "minatar-breakout": 4, "minatar-freeway": 7, "minatar-space_invaders": 6}
    for i, env_id in enumerate(IDS):
        if env_id in channels:  # padded channels stay zero
            assert not bool(obs[i, :, :, :, channels[env_id] :].any())
    # orbax refuses zero-size arrays, which some pgx states hold (Asterix): none are kept
    state = jax.eval_shape(tasks.reset, jax.random.split(jax.random.PRNGKey(0), 5))[0]
    assert all(leaf.size > 0 for leaf in jax.tree_util.tree_leaves(state))
    # full action sets: every game has 6 actions
    full = TaskSet([TaskSpec(i, {"use_minimal_action_set": False}) for i in IDS], num_envs=1)
    assert full.task_num_actions == [6] * 5


@pytest.mark.parametrize(
    "params,words",
    [
        ({"sticky": 0.2}, ["'tasks[0].env_params'", "unknown parameter 'sticky'", "sticky_action_prob"]),
        ({"sticky_action_prob": 1.5}, ["'tasks[0].env_params.sticky_action_prob'", "1.5", "[0.0, 1.0]"]),
        ({"max_episode_steps": 0}, ["'tasks[0].env_params.max_episode_steps'", ">= 1"]),
    ],
)
def test_bad_parameters_are_one_line_errors(params, words):
    with pytest.raises(ConfigError) as err:
        config.from_dict({"tasks": [{"env_id": "minatar-breakout", "env_params": params}]})
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_pgx_and_gymnax_tasks_mix():
    tasks = TaskSet([TaskSpec("minatar-breakout"), TaskSpec("Breakout-MinAtar")], num_envs=2)
    assert len(tasks.groups) == 2 and tasks.obs_shape == (10, 10, 4)
