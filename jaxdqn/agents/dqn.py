"""One compiled DQN iteration over T tasks, and greedy evaluation.

An iteration (:class:`jaxdqn.agents.system.System`): every task's
``num_envs`` environments act epsilon-greedily, step, and write their
transitions into the task's replay; then, when the schedule says so, every
task takes ``updates_per_round`` gradient steps and the target network
follows. ``run(state, n) -> (state, metrics)`` scans ``n`` iterations in one
jitted call; the host visits between calls to log, evaluate and checkpoint.

All randomness of task ``i`` comes from its own key ``keys[i]``, so task ``i``
of an independent multi-task run follows the same stream as a single-task run
seeded with that key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdqn import replay
from jaxdqn.agents.learner import Learner
from jaxdqn.agents.schedule import Schedule
from jaxdqn.agents.system import ReplayBuffer, System
from jaxdqn.envs import TaskSet


class TrainState(NamedTuple):
    params: Any
    target_params: Any  # with PopArt: unnormalised (statistics folded in, Learner.target_source)
    opt_state: Any  # with PopArt: agents.parts.PopArtOptState, which also holds the per-task statistics
    env_state: Any
    obs: jax.Array  # [T, num_envs, *obs_shape]
    replay: replay.ReplayState  # leaves [T, capacity, ...]
    keys: jax.Array  # [T, 2] one PRNG key per task
    env_steps: jax.Array  # [] env steps per task so far
    updates: jax.Array  # [] gradient steps so far
    episode_return: jax.Array  # [T, num_envs] of the episodes in progress
    episode_length: jax.Array  # [T, num_envs]


@dataclasses.dataclass(frozen=True)
class TargetUpdate:
    """How the target network follows the online one."""

    kind: str = "hard"  # "hard": copy every ``period`` gradient steps; "polyak": move by ``tau`` every step
    period: int = 500
    tau: float = 0.005

    def __call__(self, params, target_params, updates: jax.Array):
        if self.kind == "hard":
            return optax.periodic_update(params, target_params, updates, self.period)
        return optax.incremental_update(params, target_params, self.tau)


@dataclasses.dataclass(frozen=True, eq=False)
class DQNAgent(System):
    learner: Learner
    tasks: TaskSet
    schedule: Schedule
    mesh: Any = None  # jax.sharding.Mesh when the run spans several devices (see jaxdqn.parallel.sharding)
    # A ReplayBuffer (jaxdqn.agents.system): jaxdqn.replay.uniform (whole transitions) by default;
    # jaxdqn.replay.pixels.PixelReplay stores Atari frames once.
    buffer: ReplayBuffer = replay
    target: TargetUpdate = TargetUpdate()

    state_type = TrainState
    learn_metrics = (("loss", True), ("q_mean", True), ("penalty", False))

    def init_learning(self, init_keys: jax.Array, obs: jax.Array) -> dict:
        params = self.learner.init_params(init_keys, obs[0])
        return {"params": params, "target_params": params, "opt_state": self.learner.init_opt_state(params)}

    def replay_example(self, obs: jax.Array) -> replay.Transition:
        return replay.Transition(
            obs=obs[0, 0],
            action=jnp.zeros((), jnp.int32),
            reward=jnp.zeros((), jnp.float32),
            next_obs=obs[0, 0],
            terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool),
        )

    def replay_items(self, state: TrainState, actions: jax.Array, q: jax.Array, step) -> Any:
        return jax.vmap(self.buffer.batch_from_step)(state.obs, actions, step)

    def gradient_step(self, state: TrainState, batch, keys: jax.Array) -> tuple[TrainState, dict]:
        surgery = None
        if self.learner.surgery is not None:  # its random orders: a stream of their own from each task's key
            surgery = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        params, opt_state, info = self.learner.update(
            state.params, state.target_params, state.opt_state, batch, keys=surgery, count=state.updates
        )
        # with PopArt the target follows the unnormalised parameters (Learner.target_source)
        target = self.target(self.learner.target_source(params, opt_state), state.target_params, state.updates + 1)
        state = state._replace(params=params, target_params=target, opt_state=opt_state)
        return state, {"loss": info.task_loss, "q_mean": info.q_mean, "penalty": info.penalty}
