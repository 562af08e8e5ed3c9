"""What DQN and distillation share: collect, learn on schedule, run a chunk.

A *system* trains over T tasks and offers the host loop a small protocol:

- ``init(task_keys) -> state``: a fresh state, task ``i`` seeded by ``task_keys[i]``;
- ``run(state, n) -> (state, metrics)``: ``n`` iterations in one compiled call, the
  chunk's metrics (sums, see :func:`chunk_rows`) returned from the scan, not
  kept in the state;
- ``learner.q_values(params, obs)``: Q-values for evaluation and acting;
- ``place(state)``: the state on the run's device mesh.

An iteration is ``collect`` (act epsilon-greedily -> step the envs -> record
into replay and count finished episodes) followed by ``learn_if_due`` (when
the :class:`~jaxdqn.agents.schedule.Schedule` says so, ``n`` gradient steps,
each sampling replay and calling the system's :meth:`System.gradient_step`).
:class:`jaxdqn.agents.DQNAgent` and :class:`jaxdqn.transfer.distill.Distiller`
differ only in their learner fields, what replay stores, who acts and the
gradient step.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from jaxdqn.parallel import distributed, sharding

from jaxdqn import replay
from jaxdqn.agents.learner import epsilon_greedy

Metrics = dict  # name -> summed array ([T] per task, or [] run-wide)

EPISODE_METRICS = ("return_sum", "length_sum", "episodes")


class ReplayBuffer(Protocol):
    """What a system needs of its replay: pure functions of one task's buffer state
    (:mod:`jaxdqn.replay.uniform` itself, or :class:`jaxdqn.replay.pixels.PixelReplay`)."""

    def init(self, example: Any, capacity: int) -> Any: ...

    def batch_from_step(self, obs: jax.Array, actions: jax.Array, step: Any) -> Any:
        """What the buffer stores of one env step of a batch of envs."""

    def add_batch(self, state: Any, items: Any) -> Any: ...

    def sample(self, state: Any, key: jax.Array, batch_size: int) -> Any: ...


class SystemLearner(Protocol):
    """What a system needs of its learner (:class:`jaxdqn.agents.learner.Learner`)."""

    mode: str  # "independent", "hard" or "soft"
    per_task_optimizer: bool

    @property
    def task_axis(self) -> Any: ...

    def q_values(self, params: Any, obs: jax.Array) -> jax.Array: ...


class System:
    """The shared machinery. A subclass is a frozen dataclass with the fields
    ``tasks`` (a :class:`~jaxdqn.envs.TaskSet`), ``schedule`` (a
    :class:`~jaxdqn.agents.schedule.Schedule`), ``mesh`` (a ``jax.sharding.Mesh``
    or ``None``), ``buffer`` (a :class:`ReplayBuffer`) and ``learner`` (a
    :class:`SystemLearner`), and fills in the hooks below."""

    learner: SystemLearner
    buffer: ReplayBuffer

    state_type: Any = None  # the state's NamedTuple
    learn_metrics: tuple[tuple[str, bool], ...] = ()  # (name, per task?) summed over gradient steps
    # The host-stepped loop may learn while the emulators run the step that made learning due,
    # before that step is recorded: replay then samples without it. A system that learns from
    # exactly the steps of its rollout sets this False, and learns after the step is recorded.
    learn_overlaps_env_step: bool = True

    # -- hooks ------------------------------------------------------------------

    def init_learning(self, init_keys: jax.Array, obs: jax.Array) -> dict:  # pragma: no cover - abstract
        """The state's learner fields (params, optimizer state, ...)."""
        raise NotImplementedError

    def replay_example(self, obs: jax.Array) -> Any:  # pragma: no cover - abstract
        """One replay item (no task or batch axis) for ``obs [T, B, ...]``."""
        raise NotImplementedError

    def replay_items(self, state, actions: jax.Array, q: jax.Array, step) -> Any:  # pragma: no cover - abstract
        """What replay stores of the step from ``state.obs`` (leaves ``[T, B, ...]``), given the
        step's ``actions [T, B]`` and the Q-values ``q [T, B, A]`` they were chosen on."""
        raise NotImplementedError

    def acting_q(self, state) -> jax.Array:
        """Q-values ``[T, B, A]`` of the acting policy on ``state.obs``."""
        return self.learner.q_values(state.params, state.obs)

    def mark_break(self, store):
        """``store`` (leaves ``[T, ...]``) after the environments restarted, as when an Atari run
        resumes: what was recorded last must not be followed by what comes next."""
        return jax.vmap(self.buffer.mark_break)(store)

    def gradient_step(self, state, batch, keys: jax.Array) -> tuple[Any, dict]:  # pragma: no cover - abstract
        """One gradient step on a sampled ``batch`` (``keys [T, 2]``: the step's sampling keys,
        for a step that needs randomness of its own) -> (state, values of ``learn_metrics``)."""
        raise NotImplementedError

    # -- state --------------------------------------------------------------------

    @property
    def num_tasks(self) -> int:
        return self.tasks.num_tasks

    @functools.partial(jax.jit, static_argnums=0)
    def init(self, task_keys: jax.Array):
        """Fresh state; ``task_keys [T, 2]`` seed everything task ``i`` does.

        Compiled so that every leaf gets a buffer of its own (``run`` donates them).
        """
        split = jax.vmap(lambda k: jax.random.split(k, 3))(task_keys)
        next_keys, init_keys, reset_keys = split[:, 0], split[:, 1], split[:, 2]
        env_state, obs = self.tasks.reset(reset_keys)
        learning = self.init_learning(init_keys, obs)
        one_buffer = self.buffer.init(self.replay_example(obs), self.schedule.replay_capacity)
        zeros = jnp.zeros((self.num_tasks, self.tasks.num_envs), jnp.float32)
        return self.state_type(
            **learning,
            env_state=env_state,
            obs=obs,
            replay=replay.stack_tasks(one_buffer, self.num_tasks),
            keys=next_keys,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            episode_return=zeros,
            episode_length=zeros,
        )

    def state_labels(self, state):
        """The :mod:`jaxdqn.task_axis` label of every leaf of ``state`` (or of its shapes)."""
        return self.learner.task_axis.state_labels(state, self.learner.per_task_optimizer)

    def place(self, state):
        """Puts the state on the mesh (a no-op on one device)."""
        if self.mesh is None:
            return state
        return sharding.place_state(state, self.mesh, self.state_labels(state))

    def empty_metrics(self) -> Metrics:
        per_task = jnp.zeros((self.num_tasks,), jnp.float32)
        metrics = {name: per_task for name in EPISODE_METRICS}
        for name, is_per_task in self.learn_metrics:
            metrics[name] = per_task if is_per_task else jnp.zeros((), jnp.float32)
        metrics["updates"] = jnp.zeros((), jnp.int32)
        return metrics

    def epsilon(self, env_steps: jax.Array) -> jax.Array:
        return self.schedule.epsilon(env_steps)

    # -- collect: act -> env step -> record ------------------------------------------
    #
    # The pieces are public so that a host-stepped loop (jaxdqn.running.runners) can step the
    # envs outside compiled code and still act, record and learn exactly the same way.

    def act(self, state):
        """Epsilon-greedy actions on ``state.obs`` -> (state with fresh keys, actions ``[T, B]``,
        the Q-values ``[T, B, A]`` they were chosen on, env keys ``[T, 2]``, update keys ``[T, 2]``)."""
        split = jax.vmap(lambda k: jax.random.split(k, 4))(state.keys)
        keys, act_keys, env_keys, update_keys = split[:, 0], split[:, 1], split[:, 2], split[:, 3]
        mask = jnp.asarray(self.tasks.action_mask)
        q = self.acting_q(state)
        epsilon = self.epsilon(state.env_steps)
        actions = jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(act_keys, q, epsilon, mask)
        return state._replace(keys=keys), actions, q, env_keys, update_keys

    def record(self, state, metrics: Metrics, actions: jax.Array, q: jax.Array, env_state, step):
        """Stores the step from ``state.obs`` (acted on with ``actions`` chosen on ``q``) in replay,
        counts finished episodes, moves on."""
        buffers = jax.vmap(self.buffer.add_batch)(state.replay, self.replay_items(state, actions, q, step))
        reward, done, counted = self.tasks.episode_signals(step)
        ep_return = state.episode_return + reward
        ep_length = state.episode_length + counted
        metrics = {
            **metrics,
            "return_sum": metrics["return_sum"] + jnp.where(done, ep_return, 0.0).sum(axis=1),
            "length_sum": metrics["length_sum"] + jnp.where(done, ep_length, 0.0).sum(axis=1),
            "episodes": metrics["episodes"] + done.sum(axis=1),
        }
        state = state._replace(
            env_state=env_state,
            obs=step.obs,
            replay=buffers,
            env_steps=state.env_steps + self.tasks.num_envs,
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0.0, ep_length),
        )
        return state, metrics

    def collect(self, state, metrics: Metrics):
        """One env step of every env -> (state, metrics, update keys)."""
        state, actions, q, env_keys, update_keys = self.act(state)
        env_state, step = self.tasks.step(env_keys, state.env_state, actions)
        state, metrics = self.record(state, metrics, actions, q, env_state, step)
        return state, metrics, update_keys

    # -- learn ---------------------------------------------------------------------------

    def _sample(self, state, keys: jax.Array):
        batch = jax.vmap(self.buffer.sample, in_axes=(0, 0, None))(state.replay, keys, self.schedule.batch_size)
        if self.learner.mode == "hard" and sharding.batch_sharding(self.mesh) is not None:
            batch = jax.lax.with_sharding_constraint(batch, sharding.batch_sharding(self.mesh))
        return batch

    def _one_update(self, carry, keys: jax.Array):
        state, metrics = carry
        state, info = self.gradient_step(state, self._sample(state, keys), keys)
        return state._replace(updates=state.updates + 1), self.count_update(metrics, info)

    @staticmethod
    def count_update(metrics: Metrics, info: dict) -> Metrics:
        """The chunk's sums after one gradient step with the values ``info`` of ``learn_metrics``."""
        metrics = {**metrics, **{name: metrics[name] + value for name, value in info.items()}}
        return {**metrics, "updates": metrics["updates"] + 1}

    def _update_keys(self, keys: jax.Array) -> jax.Array:
        n = self.schedule.updates_per_iteration_round
        return jax.vmap(lambda k: jax.random.split(k, n))(keys)  # [T, n, 2]

    def learn(self, state, metrics: Metrics, keys: jax.Array):
        """A round of gradient steps (a loop inside the compiled iteration)."""
        per_update = self._update_keys(keys)
        return jax.lax.fori_loop(
            0, per_update.shape[1], lambda i, carry: self._one_update(carry, per_update[:, i]), (state, metrics)
        )

    def learn_unrolled(self, state, metrics: Metrics, keys: jax.Array):
        """The same gradient steps as ``learn``, unrolled instead of looped, for callers
        that decide on the host when to learn (jaxdqn.running.runners): XLA:CPU runs
        convolutions many times slower inside loops and conditionals."""
        per_update = self._update_keys(keys)
        carry = (state, metrics)
        for i in range(per_update.shape[1]):
            carry = self._one_update(carry, per_update[:, i])
        return carry

    def learn_due(self, env_steps):
        return self.schedule.learn_due(env_steps)

    def learn_if_due(self, state, metrics: Metrics, update_keys: jax.Array):
        """Gradient steps if the schedule calls for them at the state's env step count."""
        return jax.lax.cond(self.learn_due(state.env_steps), self.learn, lambda st, m, _: (st, m), state, metrics, update_keys)

    # -- a chunk -------------------------------------------------------------------------

    def iteration(self, state, metrics: Metrics):
        state, metrics, update_keys = self.collect(state, metrics)
        return self.learn_if_due(state, metrics, update_keys)

    def chunk(self, state, num_iterations: int):
        """``num_iterations`` iterations, scanned -> (state, the chunk's metrics); traced, not compiled
        (``run`` compiles it; :class:`jaxdqn.agents.seeds.Seeded` compiles it vmapped over seeds)."""
        (state, metrics), _ = jax.lax.scan(
            lambda carry, _: (self.iteration(*carry), None), (state, self.empty_metrics()), None, length=num_iterations
        )
        return state, metrics

    @functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=(1,))
    def run(self, state, num_iterations: int):
        """``num_iterations`` iterations in one compiled call -> (state, the chunk's metrics)."""
        return self.chunk(state, num_iterations)


def chunk_rows(labels: list[str], metrics: Metrics) -> dict[str, dict]:
    """One metrics row per task from a chunk's sums: episode means and per-update means.

    ``episode_return`` and ``episode_length`` are means over the episodes that
    ended in the chunk; every learning metric is its mean over the chunk's
    gradient steps (NaN where there were none).
    """
    metrics = distributed.fetch(metrics)  # gathered: each process holds only its own tasks' sums
    updates = int(metrics["updates"])
    learn_names = [k for k in metrics if k not in EPISODE_METRICS and k != "updates"]
    rows = {}
    for i, label in enumerate(labels):
        episodes = float(metrics["episodes"][i])
        row = {
            "episode_return": float(metrics["return_sum"][i]) / episodes if episodes else math.nan,
            "episode_length": float(metrics["length_sum"][i]) / episodes if episodes else math.nan,
            "episodes": episodes,
        }
        for name in learn_names:
            value = metrics[name][i] if getattr(metrics[name], "ndim", 0) else metrics[name]
            row[name] = float(value) / updates if updates else math.nan
        rows[label] = row
    return rows
