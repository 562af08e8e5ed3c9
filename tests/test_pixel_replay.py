"""Tests for jaxdqn.replay.pixels: frames stored once, stacks rebuilt exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import replay
from jaxdqn.replay.pixels import FrameRecord, PixelReplay, nbytes

STACK = 4


def _example(h=6, w=6):
    obs = jnp.zeros((STACK, h, w), jnp.uint8)
    return replay.Transition(obs, jnp.zeros((), jnp.int32), jnp.zeros(()), obs, jnp.zeros((), bool), jnp.zeros((), bool))


def _frame(env, episode, step, h=6, w=6):
    """A 1-channel frame that says which env, episode and step it comes from."""
    f = np.zeros((1, h, w), np.uint8)
    f[0, 0, 0], f[0, 0, 1], f[0, 0, 2] = env, episode % 256, step % 256
    return f


def _expected_stack(env, episode, step):
    """What envpool's stack holds: the last STACK frames, the first frame repeated before the start."""
    return np.concatenate([_frame(env, episode, max(step - back, 0)) for back in range(STACK - 1, -1, -1)])


class FakeEpisodes:
    """``num_envs`` envs with envpool's reset timing and random episode lengths.

    Each env plays episode after episode; an episode of length L has observations
    0..L, the step from observation L is envpool's auto-reset (not a transition).
    """

    def __init__(self, num_envs, seed=0, max_len=9):
        self.rng = np.random.default_rng(seed)
        self.num_envs, self.max_len = num_envs, max_len
        self.episode = list(range(num_envs))  # distinct ids per env
        self.length = [self._length() for _ in range(num_envs)]
        self.step = [0] * num_envs
        self.next_id = num_envs

    def _length(self):
        return int(self.rng.integers(1, self.max_len + 1))

    def record(self):
        """The record of this iteration and, per env, (episode, step) of its observation."""
        frames, terminated, truncated, reset_step, where = [], [], [], [], []
        for b in range(self.num_envs):
            e, k, length = self.episode[b], self.step[b], self.length[b]
            frames.append(_frame(b, e, k))
            where.append((e, k))
            ends_here = k == length - 1
            terminated.append(ends_here and e % 2 == 0)  # even episodes terminate, odd ones are cut
            truncated.append(ends_here and e % 2 == 1)
            reset_step.append(k == length)
            if k == length:
                self.episode[b], self.step[b], self.length[b] = self.next_id, 0, self._length()
                self.next_id += 1
            else:
                self.step[b] = k + 1
        actions = self.rng.integers(0, 6, self.num_envs)
        rec = FrameRecord(
            frame=jnp.asarray(np.stack(frames)),
            action=jnp.asarray(actions, jnp.int32),
            reward=jnp.asarray(actions, jnp.float32) / 10,  # identifies the transition too
            terminated=jnp.asarray(terminated),
            truncated=jnp.asarray(truncated),
            reset_step=jnp.asarray(reset_step),
        )
        return rec, where


def _fill(buffer, state, episodes, iterations):
    add = jax.jit(buffer.add_batch)
    log = []
    for _ in range(iterations):
        rec, where = episodes.record()
        state = add(state, rec)
        log.append((rec, where))
    return state, log


def _check_transition(tr, env, episode, step, rec):
    np.testing.assert_array_equal(np.asarray(tr.obs), _expected_stack(env, episode, step))
    np.testing.assert_array_equal(np.asarray(tr.next_obs), _expected_stack(env, episode, step + 1))
    assert int(tr.action) == int(rec.action[env])
    assert float(tr.reward) == pytest.approx(float(rec.reward[env]))
    assert bool(tr.terminated) == bool(rec.terminated[env])
    assert bool(tr.truncated) == bool(rec.truncated[env])


def test_every_stored_transition_is_the_one_the_envs_produced():
    buffer = PixelReplay(num_envs=3, stack=STACK)
    capacity = 3 * 20  # 20 rows; 57 iterations wrap the ring twice
    state, log = _fill(buffer, buffer.init(_example(), capacity), FakeEpisodes(3), 57)
    rows, position = 20, int(state.position)
    checked = 0
    for age in range(1, rows - STACK + 1):  # rows whose stacks are complete, newest excluded
        row = (position - 1 - age) % rows
        rec, where = log[len(log) - 1 - age]
        for env in range(3):
            episode, step = where[env]
            is_transition = bool(state.valid[row, env])
            assert is_transition == (not bool(rec.reset_step[env]))
            if not is_transition:
                continue
            tr = buffer.gather(state, jnp.array([row]), jnp.array([env]))
            _check_transition(jax.tree_util.tree_map(lambda x: x[0], tr), env, episode, step, rec)
            checked += 1
    assert checked > 30


def test_sampled_stacks_never_cross_an_episode_boundary_under_jit_and_vmap():
    buffer = PixelReplay(num_envs=2, stack=STACK)
    tasks = 2
    state = jax.vmap(lambda _: buffer.init(_example(), 2 * 16))(jnp.arange(tasks))
    sources = [FakeEpisodes(2, seed=s, max_len=5) for s in range(tasks)]
    add = jax.jit(jax.vmap(buffer.add_batch))
    for _ in range(41):
        recs = [src.record()[0] for src in sources]
        state = add(state, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *recs))
    keys = jax.random.split(jax.random.PRNGKey(3), tasks)
    batch = jax.jit(jax.vmap(lambda st, k: buffer.sample(st, k, 256)))(state, keys)
    assert batch.obs.shape == (tasks, 256, STACK, 6, 6) and batch.obs.dtype == jnp.uint8
    obs, next_obs = np.asarray(batch.obs), np.asarray(batch.next_obs)
    # every frame of a sampled pair comes from one env and one episode, in step order
    for stacks in (obs, next_obs):
        env_ids, episode_ids, steps = stacks[..., 0, 0], stacks[..., 0, 1], stacks[..., 0, 2]
        assert (env_ids == env_ids[..., :1]).all()
        assert (episode_ids == episode_ids[..., :1]).all()
        assert (np.diff(steps.astype(int), axis=-1) >= 0).all()
    assert (obs[..., 0, 0, 1] == next_obs[..., 0, 0, 1]).all()  # s and s' in the same episode
    np.testing.assert_array_equal(next_obs[..., 0, 0, 2].max(-1), obs[..., 0, 0, 2].max(-1) + 1)
    # stacks near an episode start repeat the first frame, as envpool's do
    assert (obs[..., 0, 0, 2] == 0).any()


def test_nothing_is_sampled_from_the_newest_row_or_across_a_break():
    buffer = PixelReplay(num_envs=2, stack=STACK)
    state, _ = _fill(buffer, buffer.init(_example(), 2 * 12), FakeEpisodes(2, max_len=50), 6)
    newest = int(state.position) - 1
    row, _ = buffer.sample_indices(state, jax.random.PRNGKey(0), 512)
    assert newest not in set(np.asarray(row).tolist())
    # the envs restart (resume): the old newest row must not join the new episode
    state = buffer.mark_break(state)
    assert not np.asarray(state.valid[newest]).any()
    state, _ = _fill(buffer, state, FakeEpisodes(2, seed=9, max_len=50), 3)
    assert np.asarray(state.first[newest + 1]).all()
    row, _ = buffer.sample_indices(state, jax.random.PRNGKey(1), 512)
    assert newest not in set(np.asarray(row).tolist())


def test_memory_is_one_frame_per_slot_within_ten_percent():
    capacity = 1_000_000
    example = _example(84, 84)
    shapes = jax.eval_shape(lambda: PixelReplay(num_envs=8, stack=STACK).init(example, capacity))
    total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
    assert total <= 1.1 * capacity * 84 * 84
    assert total >= capacity * 84 * 84  # it does hold every frame
    whole = jax.eval_shape(lambda: replay.init(example, capacity))
    whole_total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(whole))
    assert whole_total > 7 * total
    # the allocated buffer matches the count above (small capacity)
    small = PixelReplay(num_envs=4, stack=STACK).init(example, 400)
    assert nbytes(small) <= 1.1 * 400 * 84 * 84


def test_too_small_a_capacity_is_a_config_error():
    from jaxdqn.errors import ConfigError

    with pytest.raises(ConfigError, match="dqn.replay_capacity"):
        PixelReplay(num_envs=8, stack=STACK).init(_example(), 32)
