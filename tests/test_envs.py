"""Tests for jaxdqn.envs: task sets, padding, action masks, groups, errors."""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn.envs import TaskSet, TaskSpec, known_env_ids, make_taskset
from jaxdqn.errors import ConfigError


def _keys(n, seed=0):
    return jax.random.split(jax.random.PRNGKey(seed), n)


@pytest.fixture(scope="module")
def minatar_pair():
    tasks = TaskSet([TaskSpec("Breakout-MinAtar"), TaskSpec("Seaquest-MinAtar")], num_envs=3)
    keys = _keys(2)
    states, obs = jax.jit(tasks.reset)(keys)
    return tasks, keys, states, obs


def test_known_env_ids_include_classic_and_minatar():
    ids = known_env_ids()
    for env_id in ("CartPole-v1", "Acrobot-v1", "Breakout-MinAtar", "Seaquest-MinAtar"):
        assert env_id in ids


def test_minatar_observations_are_padded_to_the_most_channels(minatar_pair):
    tasks, keys, _, obs = minatar_pair
    assert tasks.obs_shape == (10, 10, 10)
    assert obs.shape == (2, 3, 10, 10, 10)
    assert obs.dtype == tasks.obs_dtype
    # Breakout has 4 channels: the other 6 are zero padding, and the first 4 hold the
    # exact observation gymnax gives for the same key.
    np.testing.assert_array_equal(np.asarray(obs[0, ..., 4:]), 0)
    env, params = gymnax.make("Breakout-MinAtar")
    env_keys = jax.random.split(keys[0], 3)
    direct = np.stack([np.asarray(env.reset(k, params)[0]) for k in env_keys])
    assert direct.shape == (3, 10, 10, 4)
    np.testing.assert_array_equal(np.asarray(obs[0, ..., :4]), direct)
    assert np.asarray(obs[0, ..., :4]).sum() > 0
    # Seaquest uses all 10 channels natively (its diver-count channels are not padding).
    env, params = gymnax.make("Seaquest-MinAtar")
    direct = np.stack([np.asarray(env.reset(k, params)[0]) for k in jax.random.split(keys[1], 3)])
    np.testing.assert_array_equal(np.asarray(obs[1]), direct)


def test_padding_stays_zero_after_steps(minatar_pair):
    tasks, keys, states, _ = minatar_pair
    step = jax.jit(tasks.step)
    rng = np.random.default_rng(0)
    for i in range(5):
        actions = jnp.asarray(rng.integers(0, 3, size=(2, 3)), jnp.int32)
        states, out = step(_keys(2, seed=10 + i), states, actions)
        assert out.obs.shape == (2, 3, 10, 10, 10) and out.next_obs.shape == (2, 3, 10, 10, 10)
        np.testing.assert_array_equal(np.asarray(out.obs[0, ..., 4:]), 0)
        np.testing.assert_array_equal(np.asarray(out.next_obs[0, ..., 4:]), 0)
        assert out.reward.shape == (2, 3) and out.reward.dtype == jnp.float32
        assert out.terminated.dtype == jnp.bool_ and out.truncated.dtype == jnp.bool_


def test_action_mask_rows(minatar_pair):
    tasks = minatar_pair[0]
    assert tasks.task_num_actions == [3, 6]
    assert tasks.num_actions == 6
    np.testing.assert_array_equal(
        tasks.action_mask,
        [[True, True, True, False, False, False], [True] * 6],
    )
    assert tasks.action_mask.dtype == bool


def test_action_mask_with_classic_control():
    tasks = TaskSet([TaskSpec("CartPole-v1"), TaskSpec("Acrobot-v1"), TaskSpec("MountainCar-v0")], num_envs=1)
    assert tasks.task_num_actions == [2, 3, 3]
    np.testing.assert_array_equal(tasks.action_mask, [[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    assert tasks.obs_shape == (6,)  # Acrobot's 6 > CartPole's 4 > MountainCar's 2


def test_consecutive_same_env_tasks_form_one_group():
    tasks = TaskSet([TaskSpec("CartPole-v1", {"length": 0.5}), TaskSpec("CartPole-v1", {"length": 1.0})], num_envs=2)
    assert len(tasks.groups) == 1
    group, sl = tasks.groups[0]
    assert (sl.start, sl.stop) == (0, 2)
    np.testing.assert_allclose(np.asarray(group.params.length), [0.5, 1.0])
    assert tasks.num_tasks == 2 and tasks.labels == ["CartPole-v1", "CartPole-v1"]


def test_non_consecutive_tasks_form_separate_groups():
    tasks = TaskSet([TaskSpec("CartPole-v1"), TaskSpec("Acrobot-v1"), TaskSpec("CartPole-v1", name="cp2")], num_envs=2)
    assert [(g.env_id, sl.start, sl.stop) for g, sl in tasks.groups] == [
        ("CartPole-v1", 0, 1),
        ("Acrobot-v1", 1, 2),
        ("CartPole-v1", 2, 3),
    ]
    assert tasks.labels == ["CartPole-v1", "Acrobot-v1", "cp2"]
    states, obs = tasks.reset(_keys(3))
    assert len(states) == 3
    assert obs.shape == (3, 2, 6)
    # CartPole's 4 values are padded with zeros up to Acrobot's 6.
    np.testing.assert_array_equal(np.asarray(obs[[0, 2], :, 4:]), 0)
    states, step = tasks.step(_keys(3, 1), states, jnp.zeros((3, 2), jnp.int32))
    assert step.obs.shape == (3, 2, 6) and step.reward.shape == (3, 2)
    np.testing.assert_array_equal(np.asarray(step.next_obs[[0, 2], :, 4:]), 0)


def test_group_tasks_have_their_own_dynamics():
    """Same keys and actions, different pole lengths -> different trajectories."""
    tasks = TaskSet([TaskSpec("CartPole-v1", {"length": 0.5}), TaskSpec("CartPole-v1", {"length": 1.0})], num_envs=2)
    key = jax.random.PRNGKey(7)
    keys = jnp.stack([key, key])
    states, obs = tasks.reset(keys)
    # Resets do not depend on the pole length: both tasks start identically.
    np.testing.assert_array_equal(np.asarray(obs[0]), np.asarray(obs[1]))
    step = jax.jit(tasks.step)
    actions = jnp.ones((2, 2), jnp.int32)
    for i in range(3):
        step_key = jax.random.PRNGKey(100 + i)
        states, out = step(jnp.stack([step_key, step_key]), states, actions)
    a, b = np.asarray(out.next_obs[0]), np.asarray(out.next_obs[1])
    # Cart position/velocity barely depend on the pole, the angular velocity does.
    assert np.abs(a[:, 3] - b[:, 3]).min() > 1e-3
    assert not np.allclose(a, b)


def test_identical_tasks_in_a_group_match_exactly():
    tasks = TaskSet([TaskSpec("CartPole-v1"), TaskSpec("CartPole-v1")], num_envs=3)
    key = jax.random.PRNGKey(1)
    states, obs = tasks.reset(jnp.stack([key, key]))
    states, out = tasks.step(jnp.stack([key, key]), states, jnp.ones((2, 3), jnp.int32))
    np.testing.assert_array_equal(np.asarray(out.next_obs[0]), np.asarray(out.next_obs[1]))


def test_env_params_reach_the_environment():
    """A 3-step time limit truncates every episode after exactly 3 steps."""
    tasks = TaskSet([TaskSpec("CartPole-v1", {"max_steps_in_episode": 3})], num_envs=4)
    states, obs = tasks.reset(_keys(1))
    step = jax.jit(tasks.step)
    truncs = []
    for i in range(6):
        states, out = step(_keys(1, 20 + i), states, jnp.zeros((1, 4), jnp.int32) + (i % 2))
        truncs.append(np.asarray(out.truncated[0]))
    truncs = np.stack(truncs)
    np.testing.assert_array_equal(truncs, [[False] * 4, [False] * 4, [True] * 4] * 2)
    assert tasks.max_steps == 3


def test_unknown_env_id_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as info:
        TaskSet([TaskSpec("CartPole-v1"), TaskSpec("Pong-NoSuchEnv")], num_envs=1)
    message = str(info.value)
    assert "'Pong-NoSuchEnv'" in message
    assert "allowed" in message and "CartPole-v1" in message and "Breakout-MinAtar" in message


def test_unknown_env_param_is_a_config_error_listing_allowed():
    with pytest.raises(ConfigError) as info:
        TaskSet([TaskSpec("CartPole-v1", {"lenght": 0.7})], num_envs=1)
    message = str(info.value)
    assert "'lenght'" in message
    assert "CartPole-v1" in message
    for name in ("length", "max_steps_in_episode", "gravity", "masspole"):
        assert name in message


def test_empty_task_list_is_a_config_error():
    with pytest.raises(ConfigError, match="at least one task"):
        TaskSet([], num_envs=1)


def test_observations_of_different_rank_are_rejected():
    with pytest.raises(ConfigError) as info:
        make_taskset([TaskSpec("CartPole-v1"), TaskSpec("Breakout-MinAtar")], num_envs=1)
    message = str(info.value)
    assert "rank" in message and "(4,)" in message and "(10, 10, 4)" in message


def test_task_label_defaults_to_env_id():
    assert TaskSpec("CartPole-v1").label == "CartPole-v1"
    assert TaskSpec("CartPole-v1", name="long pole").label == "long pole"
