"""Tests for jaxdqn.replay.uniform, and for the episode boundaries the agent stores in it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import losses, replay
from jaxdqn.replay.uniform import Transition


def _example(obs_shape=(3,), obs_dtype=jnp.float32) -> Transition:
    return Transition(
        obs=jnp.zeros(obs_shape, obs_dtype),
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        next_obs=jnp.zeros(obs_shape, obs_dtype),
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
    )


def _batch(ids, obs_shape=(3,), obs_dtype=jnp.float32) -> Transition:
    """Transitions whose every field encodes its id, so a sample can be traced back."""
    ids = np.asarray(ids)
    obs = np.broadcast_to(ids.reshape((-1,) + (1,) * len(obs_shape)), (len(ids),) + obs_shape)
    return Transition(
        obs=jnp.asarray(obs, obs_dtype),
        action=jnp.asarray(ids % 7, jnp.int32),
        reward=jnp.asarray(ids * 0.5, jnp.float32),
        next_obs=jnp.asarray(obs + 1, obs_dtype),
        terminated=jnp.asarray(ids % 3 == 0),
        truncated=jnp.asarray(ids % 5 == 0),
    )


# --------------------------------------------------------------------------
# Buffer mechanics
# --------------------------------------------------------------------------


def test_init_is_empty_with_example_shapes_and_dtypes():
    state = replay.init(_example((2, 4), jnp.uint8), capacity=6)
    assert replay.capacity(state) == 6
    assert int(state.size) == 0 and int(state.position) == 0
    assert state.position.dtype == jnp.int32 and state.size.dtype == jnp.int32
    s = state.storage
    assert s.obs.shape == (6, 2, 4) and s.obs.dtype == jnp.uint8
    assert s.next_obs.shape == (6, 2, 4) and s.next_obs.dtype == jnp.uint8
    assert s.action.shape == (6,) and s.action.dtype == jnp.int32
    assert s.reward.dtype == jnp.float32
    assert s.terminated.dtype == jnp.bool_ and s.truncated.dtype == jnp.bool_
    assert replay.nbytes(state) == 6 * (8 + 8 + 4 + 4 + 1 + 1)


def test_add_batch_and_sample_keep_uint8():
    state = replay.init(_example((2, 2), jnp.uint8), capacity=8)
    state = replay.add_batch(state, _batch([250, 251, 252], (2, 2), jnp.uint8))
    assert state.storage.obs.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(state.storage.obs[:3, 0, 0]), [250, 251, 252])
    sample = replay.sample(state, jax.random.PRNGKey(0), 16)
    assert sample.obs.dtype == jnp.uint8 and sample.next_obs.dtype == jnp.uint8
    assert sample.obs.shape == (16, 2, 2)
    assert sample.action.dtype == jnp.int32 and sample.terminated.dtype == jnp.bool_
    assert set(np.asarray(sample.obs[:, 0, 0]).tolist()) <= {250, 251, 252}


def test_add_batch_writes_in_order_and_counts():
    state = replay.init(_example(), capacity=10)
    state = replay.add_batch(state, _batch([1, 2, 3]))
    state = replay.add_batch(state, _batch([4, 5]))
    assert int(state.position) == 5 and int(state.size) == 5
    np.testing.assert_array_equal(np.asarray(state.storage.obs[:, 0]), [1, 2, 3, 4, 5, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(state.storage.reward[:5]), [0.5, 1.0, 1.5, 2.0, 2.5])
    np.testing.assert_array_equal(np.asarray(state.storage.terminated[:5]), [False, False, True, False, False])
    np.testing.assert_array_equal(np.asarray(state.storage.truncated[:5]), [False, False, False, False, True])


def test_ring_wraps_around_overwriting_the_oldest():
    state = replay.init(_example(), capacity=5)
    state = replay.add_batch(state, _batch([1, 2, 3, 4]))
    state = replay.add_batch(state, _batch([5, 6, 7]))  # 6 and 7 wrap to slots 0 and 1
    assert int(state.size) == 5
    assert int(state.position) == 2
    np.testing.assert_array_equal(np.asarray(state.storage.obs[:, 0]), [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(np.asarray(state.storage.next_obs[:, 0]), [7, 8, 4, 5, 6])
    np.testing.assert_array_equal(np.asarray(state.storage.action), [6, 0, 3, 4, 5])
    state = replay.add_batch(state, _batch([8, 9, 10, 11]))
    assert int(state.size) == 5 and int(state.position) == 1
    np.testing.assert_array_equal(np.asarray(state.storage.obs[:, 0]), [11, 7, 8, 9, 10])


def test_size_caps_at_capacity():
    state = replay.init(_example(), capacity=4)
    sizes = []
    for start in range(0, 30, 3):
        state = replay.add_batch(state, _batch(np.arange(start, start + 3)))
        sizes.append(int(state.size))
    assert sizes == [3, 4, 4, 4, 4, 4, 4, 4, 4, 4]
    assert int(state.position) == 30 % 4
    # The buffer holds exactly the 4 most recent ids.
    assert sorted(np.asarray(state.storage.obs[:, 0]).astype(int).tolist()) == [26, 27, 28, 29]


def test_sample_only_returns_filled_slots():
    state = replay.init(_example(), capacity=100)
    added = [11, 12, 13, 14, 15, 16, 17]
    state = replay.add_batch(state, _batch(added))
    for seed in range(5):
        sample = replay.sample(state, jax.random.PRNGKey(seed), 64)
        ids = np.asarray(sample.obs[:, 0]).astype(int)
        assert set(ids.tolist()) <= set(added), ids
        # Every field of a sampled row comes from the same transition.
        np.testing.assert_array_equal(np.asarray(sample.next_obs[:, 0]), ids + 1)
        np.testing.assert_array_equal(np.asarray(sample.action), ids % 7)
        np.testing.assert_allclose(np.asarray(sample.reward), ids * 0.5)
        np.testing.assert_array_equal(np.asarray(sample.terminated), ids % 3 == 0)
        np.testing.assert_array_equal(np.asarray(sample.truncated), ids % 5 == 0)


def test_sample_covers_every_filled_slot():
    state = replay.init(_example(), capacity=50)
    state = replay.add_batch(state, _batch([1, 2, 3, 4]))
    ids = np.asarray(replay.sample(state, jax.random.PRNGKey(0), 400).obs[:, 0]).astype(int)
    assert set(ids.tolist()) == {1, 2, 3, 4}
    counts = np.bincount(ids, minlength=5)[1:]
    assert counts.min() > 60  # uniform: about 100 each


def test_sample_is_deterministic_per_key():
    state = replay.add_batch(replay.init(_example(), 20), _batch(np.arange(1, 16)))
    a = replay.sample(state, jax.random.PRNGKey(1), 32)
    b = replay.sample(state, jax.random.PRNGKey(1), 32)
    c = replay.sample(state, jax.random.PRNGKey(2), 32)
    np.testing.assert_array_equal(np.asarray(a.obs), np.asarray(b.obs))
    assert not np.array_equal(np.asarray(a.obs), np.asarray(c.obs))


def test_works_under_jit():
    @jax.jit
    def fill_and_sample(state, batch1, batch2, key):
        state = replay.add_batch(state, batch1)
        state = replay.add_batch(state, batch2)
        return state, replay.sample(state, key, 32)

    state = replay.init(_example((2,), jnp.uint8), capacity=6)
    state, sample = fill_and_sample(
        state, _batch([1, 2, 3, 4], (2,), jnp.uint8), _batch([5, 6, 7], (2,), jnp.uint8), jax.random.PRNGKey(0)
    )
    assert int(state.size) == 6 and int(state.position) == 1
    np.testing.assert_array_equal(np.asarray(state.storage.obs[:, 0]), [7, 2, 3, 4, 5, 6])
    assert sample.obs.dtype == jnp.uint8
    assert set(np.asarray(sample.obs[:, 0]).tolist()) <= {2, 3, 4, 5, 6, 7}


def test_vmap_over_a_leading_task_axis():
    num_tasks, capacity = 3, 8
    one = replay.init(_example(), capacity)
    buffers = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_tasks,) + x.shape), one)
    # Task t gets ids 100*t + i, and a different number of filled slots per call is not
    # possible under vmap, so all tasks add 3 then 2 transitions.
    first = jax.tree_util.tree_map(
        lambda *xs: jnp.stack(xs), *[_batch([100 * t + i for i in range(3)]) for t in range(num_tasks)]
    )
    second = jax.tree_util.tree_map(
        lambda *xs: jnp.stack(xs), *[_batch([100 * t + 50 + i for i in range(2)]) for t in range(num_tasks)]
    )
    add = jax.jit(jax.vmap(replay.add_batch))
    buffers = add(add(buffers, first), second)
    np.testing.assert_array_equal(np.asarray(buffers.size), [5, 5, 5])
    np.testing.assert_array_equal(np.asarray(buffers.position), [5, 5, 5])
    assert buffers.storage.obs.shape == (num_tasks, capacity, 3)

    keys = jax.random.split(jax.random.PRNGKey(0), num_tasks)
    sample = jax.jit(jax.vmap(replay.sample, in_axes=(0, 0, None)), static_argnums=2)(buffers, keys, 40)
    assert sample.obs.shape == (num_tasks, 40, 3)
    for t in range(num_tasks):
        ids = set(np.asarray(sample.obs[t, :, 0]).astype(int).tolist())
        assert ids <= {100 * t, 100 * t + 1, 100 * t + 2, 100 * t + 50, 100 * t + 51}, (t, ids)


# --------------------------------------------------------------------------
# Episode boundaries, through the agent's own iteration
# --------------------------------------------------------------------------

NUM_ENVS = 4
ITERATIONS = 600
TIME_LIMIT = 50


@pytest.fixture(scope="module")
def cartpole_rollout():
    """600 iterations of 4 CartPole envs acting at random, every transition kept.

    The replay capacity equals the number of transitions, so slot
    ``i * NUM_ENVS + e`` holds env ``e``'s transition of iteration ``i``.
    """
    from jaxdqn import config
    from jaxdqn.agents.build import build_agent, task_keys

    cfg = config.from_dict(
        {
            "seed": 0,
            "tasks": [{"env_id": "CartPole-v1", "env_params": {"max_steps_in_episode": TIME_LIMIT}}],
            "network": {"hidden_sizes": [16]},
            "dqn": {
                "replay_capacity": NUM_ENVS * ITERATIONS,
                "learning_starts": 10**9,
                "update_every": NUM_ENVS,
                "epsilon_start": 1.0,
                "epsilon_end": 1.0,
                "batch_size": 8,
            },
            "train": {
                "num_envs": NUM_ENVS,
                "total_env_steps": NUM_ENVS * ITERATIONS,
                "log_every": NUM_ENVS * ITERATIONS,
                "eval_every": 0,
                "checkpoint_every": 0,
            },
        }
    )
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    first_obs = np.asarray(state.obs[0])
    state, _ = agent.run(state, ITERATIONS)
    storage = jax.device_get(state.replay.storage)
    rollout = {
        name: np.asarray(getattr(storage, name))[0].reshape((ITERATIONS, NUM_ENVS) + np.shape(getattr(storage, name))[2:])
        for name in Transition._fields
    }
    rollout["first_obs"] = first_obs
    rollout["size"] = int(state.replay.size[0])
    rollout["position"] = int(state.replay.position[0])
    rollout["updates"] = int(state.updates)
    rollout["env_params"] = agent.tasks.groups[0][0].params
    return rollout


def _outside_thresholds(obs):
    return (np.abs(obs[..., 0]) > 2.4) | (np.abs(obs[..., 2]) > 0.2095)


def test_rollout_filled_the_buffer_without_learning(cartpole_rollout):
    r = cartpole_rollout
    assert r["size"] == NUM_ENVS * ITERATIONS and r["position"] == 0
    assert r["updates"] == 0
    assert r["obs"].dtype == np.float32 and r["obs"].shape == (ITERATIONS, NUM_ENVS, 4)
    np.testing.assert_array_equal(r["reward"], 1.0)
    np.testing.assert_array_equal(r["obs"][0], r["first_obs"])
    assert r["terminated"].sum() > 20 and r["truncated"].sum() > 0


def test_next_obs_is_the_physics_successor(cartpole_rollout):
    r = cartpole_rollout
    delta = np.abs(r["next_obs"] - r["obs"])
    # One Euler step of 0.02 s moves the cart and the pole by a few hundredths at most;
    # a reset observation in place of the last one would jump.
    assert delta[..., 0].max() < 0.1, delta[..., 0].max()
    assert delta[..., 2].max() < 0.1, delta[..., 2].max()


def test_next_obs_matches_the_environment_dynamics(cartpole_rollout):
    """Recomputes each transition with gymnax's own step from (obs, action)."""
    import gymnax
    from gymnax.environments.classic_control.cartpole import EnvState

    r = cartpole_rollout
    env, _ = gymnax.make("CartPole-v1")
    params = jax.tree_util.tree_map(lambda x: x[0], r["env_params"])
    obs = r["obs"].reshape(-1, 4)
    actions = r["action"].reshape(-1)
    state = EnvState(x=obs[:, 0], x_dot=obs[:, 1], theta=obs[:, 2], theta_dot=obs[:, 3], time=np.zeros(len(obs), np.int32))
    step = jax.vmap(lambda s, a: env.step_env(jax.random.PRNGKey(0), s, a, params)[0])
    expected = np.asarray(step(state, jnp.asarray(actions)))
    np.testing.assert_allclose(r["next_obs"].reshape(-1, 4), expected, rtol=1e-5, atol=1e-5)


def test_consecutive_transitions_chain_within_episodes(cartpole_rollout):
    r = cartpole_rollout
    done = r["terminated"] | r["truncated"]
    following = r["obs"][1:]
    continues = ~done[:-1]
    # Inside an episode the next transition starts where this one ended.
    np.testing.assert_array_equal(following[continues], r["next_obs"][:-1][continues])
    # After an episode ends the next transition starts from a fresh reset state.
    assert np.abs(following[~continues]).max() <= 0.05
    assert np.abs(r["next_obs"][:-1][~continues] - following[~continues]).max() > 0.05


def test_terminated_exactly_when_next_obs_leaves_the_thresholds(cartpole_rollout):
    r = cartpole_rollout
    outside = _outside_thresholds(r["next_obs"])
    np.testing.assert_array_equal(r["terminated"], outside)
    assert not _outside_thresholds(r["next_obs"][r["truncated"]]).any()
    assert not _outside_thresholds(r["obs"]).any()


def test_truncated_only_at_the_time_limit(cartpole_rollout):
    r = cartpole_rollout
    assert not (r["terminated"] & r["truncated"]).any()
    length = np.zeros(NUM_ENVS, int)
    seen_limit = 0
    for i in range(ITERATIONS):
        length += 1
        term, trunc = r["terminated"][i], r["truncated"][i]
        assert (length[trunc] == TIME_LIMIT).all(), (i, length, trunc)
        # Reaching the limit without falling is a truncation.
        at_limit = (length == TIME_LIMIT) & ~term
        np.testing.assert_array_equal(trunc, at_limit)
        assert (length <= TIME_LIMIT).all()
        seen_limit += int(at_limit.sum())
        length[term | trunc] = 0
    assert seen_limit == r["truncated"].sum() > 0


def test_td_target_bootstraps_on_truncation_only(cartpole_rollout):
    """gamma = 0.9: a truncated transition's target uses Q(next_obs), a terminated one's does not."""
    from jaxdqn.agents.learner import Learner
    from jaxdqn.agents.parts import Regression
    from jaxdqn.networks import NetworkSpec, QNetwork

    r = cartpole_rollout
    flat = {k: r[k].reshape((-1,) + r[k].shape[2:]) for k in Transition._fields}
    term_idx = np.flatnonzero(flat["terminated"])[:4]
    trunc_idx = np.flatnonzero(flat["truncated"])[:4]
    assert len(term_idx) and len(trunc_idx)

    gamma = 0.9
    learner = Learner(
        network=QNetwork(NetworkSpec(torso="mlp", hidden_sizes=(16,)), 2),
        num_tasks=1,
        action_mask=np.ones((1, 2), bool),
        gamma=gamma,
        value_loss=Regression("squared"),
    )
    params = learner.init_params(jax.random.PRNGKey(0)[None], jnp.asarray(flat["obs"][:1]))
    # A target network whose every Q-value is 5 higher than the online network's.
    shifted = {"torso": params["torso"], "head": jax.tree_util.tree_map(lambda x: x, params["head"])}
    shifted["head"]["Dense_0"]["bias"] = params["head"]["Dense_0"]["bias"] + 5.0

    def batch_of(idx):
        return Transition(*[jnp.asarray(flat[k][idx])[None] for k in Transition._fields])

    def manual_td(idx, target_params):
        b = batch_of(idx)
        q_tm1 = learner.q_values(params, b.obs)[0]
        q_t = learner.q_values(target_params, b.next_obs)[0]
        discount = gamma * (1.0 - b.terminated[0].astype(jnp.float32))
        return losses.batched_q_learning(q_tm1, b.action[0], b.reward[0], discount, q_t)

    loss = jax.jit(lambda p, tp, b: learner.loss(p, tp, b)[0])

    for idx, bootstraps in ((term_idx, False), (trunc_idx, True)):
        batch = batch_of(idx)
        td_plain = manual_td(idx, params)
        td_shifted = manual_td(idx, shifted)
        np.testing.assert_allclose(float(loss(params, params, batch)), 0.5 * np.mean(np.square(td_plain)), rtol=1e-5)
        np.testing.assert_allclose(float(loss(params, shifted, batch)), 0.5 * np.mean(np.square(td_shifted)), rtol=1e-5)
        change = np.asarray(td_shifted - td_plain)
        if bootstraps:
            np.testing.assert_allclose(change, gamma * 5.0, rtol=1e-5)
            assert float(loss(params, shifted, batch)) != pytest.approx(float(loss(params, params, batch)))
        else:
            np.testing.assert_allclose(change, 0.0, atol=1e-6)
            # The target is the reward alone: td = r - Q(s, a).
            q_taken = np.take_along_axis(
                np.asarray(learner.q_values(params, batch.obs)[0]), flat["action"][idx][:, None], axis=1
            )[:, 0]
            np.testing.assert_allclose(np.asarray(td_plain), flat["reward"][idx] - q_taken, rtol=1e-5, atol=1e-6)
            assert float(loss(params, shifted, batch)) == pytest.approx(float(loss(params, params, batch)), rel=1e-6)
