"""One compiled DQN iteration over T tasks, and greedy evaluation.

An iteration: every task's ``num_envs`` environments act epsilon-greedily,
step, and write their transitions into the task's replay; then, when the
update schedule says so, every task takes ``updates_per_round`` gradient steps
and the target network follows. ``run(state, n)`` scans ``n`` iterations in one
jitted call; the host visits between calls to log, evaluate and checkpoint.

All randomness of task ``i`` comes from its own key ``keys[i]``, so task ``i``
of an independent multi-task run follows the same stream as a single-task run
seeded with that key.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdqn import replay, sharding
from jaxdqn.agents.learner import Learner, epsilon_greedy, linear_epsilon
from jaxdqn.envs import TaskSet


class ChunkStats(NamedTuple):
    """Sums over the iterations since the host last looked (reset per chunk)."""

    return_sum: jax.Array  # [T] returns of episodes that ended
    length_sum: jax.Array  # [T]
    episodes: jax.Array  # [T] number of episodes that ended
    loss_sum: jax.Array  # [T]
    q_sum: jax.Array  # [T]
    penalty_sum: jax.Array  # []
    updates: jax.Array  # [] gradient steps taken


class TrainState(NamedTuple):
    params: Any
    target_params: Any  # with PopArt: unnormalised (statistics folded in, Learner.target_source)
    opt_state: Any  # with PopArt: learner.PopArtOptState, which also holds the per-task statistics
    env_state: Any
    obs: jax.Array  # [T, num_envs, *obs_shape]
    replay: replay.ReplayState  # leaves [T, capacity, ...]
    keys: jax.Array  # [T, 2] one PRNG key per task
    env_steps: jax.Array  # [] env steps per task so far
    updates: jax.Array  # [] gradient steps so far
    episode_return: jax.Array  # [T, num_envs] of the episodes in progress
    episode_length: jax.Array  # [T, num_envs]
    stats: ChunkStats


def _empty_stats(num_tasks: int) -> ChunkStats:
    zeros = jnp.zeros((num_tasks,), jnp.float32)
    return ChunkStats(zeros, zeros, zeros, zeros, zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When to explore, learn and refresh the target (all counted in env steps per task)."""

    num_envs: int
    batch_size: int
    replay_capacity: int
    learning_starts: int
    update_every: int
    updates_per_round: int
    target_update: str
    target_update_period: int
    polyak_tau: float
    epsilon_start: float
    epsilon_end: float
    epsilon_decay_steps: int

    @property
    def iterations_per_round(self) -> int:
        return max(1, self.update_every // self.num_envs)

    @property
    def updates_per_iteration_round(self) -> int:
        """Gradient steps per round, scaled up when one iteration spans several rounds."""
        return self.updates_per_round * max(1, self.num_envs // self.update_every)


@dataclasses.dataclass(frozen=True, eq=False)
class DQNAgent:
    learner: Learner
    tasks: TaskSet
    schedule: Schedule
    mesh: Any = None  # jax.sharding.Mesh when the run spans several devices (see jaxdqn.sharding)
    # Replay with pure init / add_batch / sample: jaxdqn.replay (whole transitions) by
    # default; jaxdqn.pixel_replay.PixelReplay stores Atari frames once. A buffer with a
    # ``batch_from_step(obs, actions, step)`` method builds what it stores itself.
    buffer: Any = replay

    def place(self, state: TrainState) -> TrainState:
        """Puts the state on the mesh (a no-op on one device)."""
        l = self.learner
        return sharding.place_state(state, self.mesh, self.num_tasks, l.mode, l.shared_head)

    @property
    def num_tasks(self) -> int:
        return self.tasks.num_tasks

    @functools.partial(jax.jit, static_argnums=0)
    def init(self, task_keys: jax.Array) -> TrainState:
        """Fresh state; ``task_keys [T, 2]`` seed everything task ``i`` does.

        Compiled so that every leaf gets a buffer of its own (``run`` donates them).
        """
        split = jax.vmap(lambda k: jax.random.split(k, 3))(task_keys)
        next_keys, init_keys, reset_keys = split[:, 0], split[:, 1], split[:, 2]
        env_state, obs = self.tasks.reset(reset_keys)
        params = self.learner.init_params(init_keys, obs[0])
        example = replay.Transition(
            obs=obs[0, 0],
            action=jnp.zeros((), jnp.int32),
            reward=jnp.zeros((), jnp.float32),
            next_obs=obs[0, 0],
            terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool),
        )
        one_buffer = self.buffer.init(example, self.schedule.replay_capacity)
        buffers = replay.stack_tasks(one_buffer, self.num_tasks)
        zeros = jnp.zeros((self.num_tasks, self.tasks.num_envs), jnp.float32)
        return TrainState(
            params=params,
            target_params=params,
            opt_state=self.learner.init_opt_state(params),
            env_state=env_state,
            obs=obs,
            replay=buffers,
            keys=next_keys,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            episode_return=zeros,
            episode_length=zeros,
            stats=_empty_stats(self.num_tasks),
        )

    def epsilon(self, env_steps: jax.Array) -> jax.Array:
        s = self.schedule
        return linear_epsilon(env_steps, s.epsilon_start, s.epsilon_end, s.epsilon_decay_steps)

    # -- learning -----------------------------------------------------------

    def _gradient_step(self, state: TrainState, update_keys: jax.Array) -> TrainState:
        batch = jax.vmap(self.buffer.sample, in_axes=(0, 0, None))(state.replay, update_keys, self.schedule.batch_size)
        if self.learner.mode == "hard" and sharding.batch_sharding(self.mesh) is not None:
            batch = jax.lax.with_sharding_constraint(batch, sharding.batch_sharding(self.mesh))
        surgery = {}
        if self.learner.gradient_surgery != "none":  # PCGrad's orders: a stream of their own from each task's key
            surgery["keys"] = jax.vmap(lambda k: jax.random.fold_in(k, 1))(update_keys)
        params, opt_state, info = self.learner.update(state.params, state.target_params, state.opt_state, batch, **surgery)
        updates = state.updates + 1
        s = self.schedule
        source = self.learner.target_source(params, opt_state)
        if s.target_update == "hard":
            target = optax.periodic_update(source, state.target_params, updates, s.target_update_period)
        else:
            target = optax.incremental_update(source, state.target_params, s.polyak_tau)
        stats = state.stats._replace(
            loss_sum=state.stats.loss_sum + info.task_loss,
            q_sum=state.stats.q_sum + info.q_mean,
            penalty_sum=state.stats.penalty_sum + info.penalty,
            updates=state.stats.updates + 1,
        )
        return state._replace(params=params, target_params=target, opt_state=opt_state, updates=updates, stats=stats)

    def _learn(self, state: TrainState, keys: jax.Array) -> TrainState:
        n = self.schedule.updates_per_iteration_round
        per_update = jax.vmap(lambda k: jax.random.split(k, n))(keys)  # [T, n, 2]

        def body(i, st):
            return self._gradient_step(st, per_update[:, i])

        return jax.lax.fori_loop(0, n, body, state)

    def learn_unrolled(self, state: TrainState, keys: jax.Array) -> TrainState:
        """The same gradient steps as ``_learn``, unrolled instead of looped, for callers
        that decide on the host when to learn (jaxdqn.host_loop): XLA:CPU runs
        convolutions many times slower inside loops and conditionals."""
        n = self.schedule.updates_per_iteration_round
        per_update = jax.vmap(lambda k: jax.random.split(k, n))(keys)  # [T, n, 2]
        for i in range(n):
            state = self._gradient_step(state, per_update[:, i])
        return state

    # -- one iteration ------------------------------------------------------
    #
    # iteration = act -> env step -> record -> learn_if_due. The pieces are public so
    # that a host-stepped loop (jaxdqn.host_loop) can step the envs outside compiled
    # code and still do exactly the same acting, recording and learning.

    def act(self, state: TrainState):
        """Epsilon-greedy actions on ``state.obs`` -> (state with fresh keys,
        actions ``[T, B]``, env keys ``[T, 2]``, update keys ``[T, 2]``)."""
        split = jax.vmap(lambda k: jax.random.split(k, 4))(state.keys)
        keys, act_keys, env_keys, update_keys = split[:, 0], split[:, 1], split[:, 2], split[:, 3]
        mask = jnp.asarray(self.tasks.action_mask)

        q = self.learner.q_values(state.params, state.obs)
        epsilon = self.epsilon(state.env_steps)
        actions = jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(act_keys, q, epsilon, mask)
        return state._replace(keys=keys), actions, env_keys, update_keys

    def _replay_batch(self, obs: jax.Array, actions: jax.Array, step) -> Any:
        make = getattr(self.buffer, "batch_from_step", None)
        if make is not None:
            return jax.vmap(make)(obs, actions, step)
        return replay.Transition(obs, actions, step.reward, step.next_obs, step.terminated, step.truncated)

    def record(self, state: TrainState, actions: jax.Array, env_state, step) -> TrainState:
        """Stores the step from ``state.obs`` in replay, counts finished episodes, moves on."""
        buffers = jax.vmap(self.buffer.add_batch)(state.replay, self._replay_batch(state.obs, actions, step))

        reward, done, counted = self.tasks.episode_signals(step)
        ep_return = state.episode_return + reward
        ep_length = state.episode_length + counted
        stats = state.stats._replace(
            return_sum=state.stats.return_sum + jnp.where(done, ep_return, 0.0).sum(axis=1),
            length_sum=state.stats.length_sum + jnp.where(done, ep_length, 0.0).sum(axis=1),
            episodes=state.stats.episodes + done.sum(axis=1),
        )
        return state._replace(
            env_state=env_state,
            obs=step.obs,
            replay=buffers,
            env_steps=state.env_steps + self.tasks.num_envs,
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0.0, ep_length),
            stats=stats,
        )

    def learn_due(self, env_steps):
        """Whether an iteration that ends at ``env_steps`` learns (a jax array, or a Python int on the host)."""
        s = self.schedule
        return (env_steps >= s.learning_starts) & ((env_steps // s.num_envs) % s.iterations_per_round == 0)

    def learn_if_due(self, state: TrainState, update_keys: jax.Array, env_steps: jax.Array | None = None) -> TrainState:
        """Gradient steps if the schedule calls for them at ``env_steps`` (default: the state's count)."""
        env_steps = state.env_steps if env_steps is None else env_steps
        return jax.lax.cond(self.learn_due(env_steps), self._learn, lambda st, _: st, state, update_keys)

    def iteration(self, state: TrainState) -> TrainState:
        state, actions, env_keys, update_keys = self.act(state)
        env_state, step = self.tasks.step(env_keys, state.env_state, actions)
        state = self.record(state, actions, env_state, step)
        return self.learn_if_due(state, update_keys)

    @functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=(1,))
    def run(self, state: TrainState, num_iterations: int) -> TrainState:
        """``num_iterations`` iterations in one compiled call."""
        state = state._replace(stats=_empty_stats(self.num_tasks))
        state, _ = jax.lax.scan(lambda st, _: (self.iteration(st), None), state, None, length=num_iterations)
        return state


def evaluate(
    learner: Learner, tasks: TaskSet, params, keys: jax.Array, epsilon: float
) -> jax.Array:
    """Returns ``[T, E]`` of one episode in each of ``tasks.num_envs`` (= E) envs per task.

    Episodes end at termination or at the env's time limit; envs that finish
    early stop counting reward while the others play on.
    """
    mask = jnp.asarray(tasks.action_mask)
    reset_keys, loop_keys = jax.vmap(lambda k: jax.random.split(k, 2), out_axes=1)(keys)
    env_state, obs = tasks.reset(reset_keys)
    shape = (tasks.num_tasks, tasks.num_envs)

    def cond(carry):
        *_, finished, t = carry
        return jnp.logical_and(t < tasks.max_steps, jnp.logical_not(finished.all()))

    def body(carry):
        env_state, obs, keys, returns, finished, t = carry
        split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
        keys, act_keys, env_keys = split[:, 0], split[:, 1], split[:, 2]
        q = learner.q_values(params, obs)
        actions = jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(act_keys, q, epsilon, mask)
        env_state, step = tasks.step(env_keys, env_state, actions)
        returns = returns + jnp.where(finished, 0.0, step.reward)
        finished = finished | step.terminated | step.truncated
        return env_state, step.obs, keys, returns, finished, t + 1

    carry = (env_state, obs, loop_keys, jnp.zeros(shape), jnp.zeros(shape, bool), 0)
    return jax.lax.while_loop(cond, body, carry)[3]
