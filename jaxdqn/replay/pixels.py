"""Replay for stacked Atari frames that stores every frame once.

An Atari observation is a stack of the last ``S`` frames (4 by default). A
replay of whole transitions would keep each frame ``2 S`` times (in ``S``
observations and ``S`` next observations); this one keeps each frame once,
plus a few bytes per step, and rebuilds both stacks when it samples.

Layout (one task; multi-task runs vmap over a leading task axis, as with
``jaxdqn.replay.uniform``): a ring of ``C = capacity // num_envs`` rows, one row per
iteration, one column per environment. Row ``t`` of environment ``b`` holds:

- ``frames``: the newest frame of the observation the agent acted on at ``t``;
- ``action``, ``reward``, ``terminated``, ``truncated`` of the step from it;
- ``valid``: that step is a transition (``False`` for envpool's auto-reset
  step, which acts on the final observation of an episode and returns the
  first of the next; see ``jaxdqn.envs.envpool_env``);
- ``first``: the observation at ``t`` is the first of an episode.

The transition at row ``t`` is ``(stack(t), action, reward, stack(t + 1))``.
Row ``t + 1`` always exists before row ``t`` is sampled, and for a valid row
it belongs to the same episode: it holds the final frame of an episode that
ended at ``t``, which is how the last observation of an episode gets stored
once, without a second frame per step.

Stacks never cross an episode boundary. ``stack(t)`` is frames ``t-S+1 .. t``;
a frame from before the episode's first row is replaced by the episode's
first frame. That is what envpool's own stack holds at a reset (it fills the
stack with copies of the first frame), so the rebuilt stacks equal the
observations the environment produced (``tests/test_pixel_replay.py`` checks
this against envpool).

Sampling is uniform over the valid rows of all environments whose stacks are
still complete: the newest row (its next frame has not arrived) and, once the
ring is full, the oldest ``S - 1`` rows (their earlier frames were
overwritten) are left out. Rows that are not transitions are redrawn, up to
``MAX_REDRAWS`` times (at most one row per episode is invalid, so a redraw is
rare; 64 misses in a row cannot happen in practice).

Memory per task: ``C * num_envs * (frame bytes + 12)`` bytes, i.e. at most
``capacity * (84 * 84 + 12)`` for 84x84 grey frames, within 1.1x of one frame
per slot.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdqn.errors import ConfigError
from jaxdqn.replay.uniform import Transition

MAX_REDRAWS = 64


class FrameRecord(NamedTuple):
    """One iteration of ``num_envs`` environments, leaves ``[B, ...]``."""

    frame: jax.Array  # [B, c, H, W] newest frame of the observation acted on
    action: jax.Array  # [B] int32
    reward: jax.Array  # [B] float32
    terminated: jax.Array  # [B] bool
    truncated: jax.Array  # [B] bool
    reset_step: jax.Array  # [B] bool: the step was an auto-reset, not a transition


class PixelReplayState(NamedTuple):
    frames: jax.Array  # [C, B, c, H, W] uint8
    action: jax.Array  # [C, B] int32
    reward: jax.Array  # [C, B] float32
    terminated: jax.Array  # [C, B] bool
    truncated: jax.Array  # [C, B] bool
    valid: jax.Array  # [C, B] bool
    first: jax.Array  # [C, B] bool
    next_first: jax.Array  # [B] bool: the next row starts an episode
    position: jax.Array  # [] int32, next row to write
    size: jax.Array  # [] int32, rows written (at most C)


@dataclasses.dataclass(frozen=True)
class PixelReplay:
    """Pure ``init / add_batch / sample`` over ``PixelReplayState`` (methods hold no state)."""

    num_envs: int
    stack: int = 4
    frame_channels: int = 1

    # -- building -----------------------------------------------------------

    def rows(self, capacity: int) -> int:
        return capacity // self.num_envs

    def init(self, example: Transition, capacity: int) -> PixelReplayState:
        """Empty buffer for observations shaped like ``example.obs`` (``[S * c, H, W]``).

        ``capacity`` counts transitions per task, as in ``jaxdqn.replay.uniform``; it is
        split evenly over the ``num_envs`` environments.
        """
        obs_shape = tuple(jnp.shape(example.obs))
        if len(obs_shape) != 3 or obs_shape[0] != self.stack * self.frame_channels:
            raise ValueError(
                f"pixel replay: observations must be [stack * channels, H, W] = "
                f"[{self.stack * self.frame_channels}, H, W]; got {list(obs_shape)}"
            )
        rows = self.rows(capacity)
        if rows < self.stack + 1:
            raise ConfigError(
                f"config key 'dqn.replay_capacity': got {capacity}; allowed: at least "
                f"(atari.stack_num + 1) * train.num_envs = {(self.stack + 1) * self.num_envs}"
            )
        frame_shape = (self.frame_channels,) + obs_shape[1:]
        grid = (rows, self.num_envs)
        return PixelReplayState(
            frames=jnp.zeros(grid + frame_shape, jnp.uint8),
            action=jnp.zeros(grid, jnp.int32),
            reward=jnp.zeros(grid, jnp.float32),
            terminated=jnp.zeros(grid, bool),
            truncated=jnp.zeros(grid, bool),
            valid=jnp.zeros(grid, bool),
            first=jnp.zeros(grid, bool),
            next_first=jnp.ones((self.num_envs,), bool),
            position=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    def batch_from_step(self, obs: jax.Array, actions: jax.Array, step) -> FrameRecord:
        """The record of one iteration: ``obs [B, S * c, H, W]`` acted on with ``actions``,
        and the env step (an ``AtariStep``) that followed."""
        return FrameRecord(
            frame=obs[:, -self.frame_channels :],
            action=actions.astype(jnp.int32),
            reward=step.reward.astype(jnp.float32),
            terminated=step.terminated.astype(bool),
            truncated=step.truncated.astype(bool),
            reset_step=step.reset_step.astype(bool),
        )

    # -- writing ------------------------------------------------------------

    def add_batch(self, state: PixelReplayState, batch: FrameRecord) -> PixelReplayState:
        """Writes one row (all environments) at the ring position."""
        rows = state.frames.shape[0]
        row = state.position

        def put(buffer, value):
            return jax.lax.dynamic_update_index_in_dim(buffer, value.astype(buffer.dtype), row, 0)

        return PixelReplayState(
            frames=put(state.frames, batch.frame),
            action=put(state.action, batch.action),
            reward=put(state.reward, batch.reward),
            terminated=put(state.terminated, batch.terminated),
            truncated=put(state.truncated, batch.truncated),
            valid=put(state.valid, jnp.logical_not(batch.reset_step)),
            first=put(state.first, state.next_first),
            next_first=batch.reset_step.astype(bool),
            position=(row + 1) % rows,
            size=jnp.minimum(state.size + 1, rows),
        )

    def mark_break(self, state: PixelReplayState) -> PixelReplayState:
        """The environments restarted (e.g. on resume): the newest row gets no successor
        from its own episode, and the next row starts a new one."""
        rows = state.frames.shape[0]
        newest = (state.position - 1) % rows
        valid = jax.lax.dynamic_update_index_in_dim(state.valid, jnp.zeros(state.valid.shape[1:], bool), newest, 0)
        return state._replace(valid=valid, next_first=jnp.ones_like(state.next_first))

    # -- reading ------------------------------------------------------------

    def _draw(self, state: PixelReplayState, key: jax.Array, n: int):
        """``n`` uniform (row, env) pairs among rows whose stacks are complete."""
        rows = state.frames.shape[0]
        newest = (state.position - 1) % rows
        oldest_age = jnp.where(state.size < rows, state.size - 1, rows - self.stack)
        env_key, age_key = jax.random.split(key)
        env = jax.random.randint(env_key, (n,), 0, self.num_envs)
        age = jax.random.randint(age_key, (n,), 1, jnp.maximum(oldest_age, 1) + 1)
        return (newest - age) % rows, env

    def sample_indices(self, state: PixelReplayState, key: jax.Array, batch_size: int):
        """``(rows [n], envs [n])`` of ``batch_size`` transitions, uniform with replacement."""
        first_key, loop_key = jax.random.split(key)
        row, env = self._draw(state, first_key, batch_size)

        def cond(carry):
            i, row, env, _ = carry
            return jnp.logical_and(i < MAX_REDRAWS, jnp.logical_not(state.valid[row, env].all()))

        def body(carry):
            i, row, env, key = carry
            key, sub = jax.random.split(key)
            new_row, new_env = self._draw(state, sub, batch_size)
            bad = jnp.logical_not(state.valid[row, env])
            return i + 1, jnp.where(bad, new_row, row), jnp.where(bad, new_env, env), key

        _, row, env, _ = jax.lax.while_loop(cond, body, (0, row, env, loop_key))
        return row, env

    def _stack_rows(self, state: PixelReplayState, row: jax.Array, env: jax.Array) -> jax.Array:
        """Rows ``[n, S]`` (oldest first) of the stack ending at ``row``: before the
        episode's first row, that first row again."""
        rows = state.frames.shape[0]
        chosen = [row]
        for back in range(1, self.stack):
            latest = chosen[-1]
            chosen.append(jnp.where(state.first[latest, env], latest, (row - back) % rows))
        return jnp.stack(chosen[::-1], axis=1)

    def _stacks(self, state: PixelReplayState, row: jax.Array, env: jax.Array) -> jax.Array:
        frames = state.frames[self._stack_rows(state, row, env), env[:, None]]  # [n, S, c, H, W]
        return frames.reshape((frames.shape[0], -1) + frames.shape[3:])

    def gather(self, state: PixelReplayState, row: jax.Array, env: jax.Array) -> Transition:
        """The transitions at ``(row, env)`` with both stacks rebuilt."""
        rows = state.frames.shape[0]
        return Transition(
            obs=self._stacks(state, row, env),
            action=state.action[row, env],
            reward=state.reward[row, env],
            next_obs=self._stacks(state, (row + 1) % rows, env),
            terminated=state.terminated[row, env],
            truncated=state.truncated[row, env],
        )

    def sample(self, state: PixelReplayState, key: jax.Array, batch_size: int) -> Transition:
        """Draws ``batch_size`` transitions uniformly, with replacement."""
        row, env = self.sample_indices(state, key, batch_size)
        return self.gather(state, row, env)


def nbytes(state: PixelReplayState) -> int:
    return sum(int(x.nbytes) for x in jax.tree_util.tree_leaves(state))
