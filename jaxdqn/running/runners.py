"""What drives a chunk of training iterations (the runners), and Atari's host-stepped loop.

``make_runner(agent)`` gives the object ``jaxdqn.running.train`` calls each chunk:

- gymnax tasks, and Atari with ``atari.stepping: xla``: the agent's own
  compiled ``run`` (envs stepped inside the scanned iteration);
- Atari with ``atari.stepping: host``: ``HostRunner``, a Python loop around
  three compiled pieces of the same iteration::

      act (jit) -> send actions to envpool -> learn (jit, dispatched) -> recv -> record (jit)

  JAX dispatches ``learn`` asynchronously, so the gradient steps run on the
  device while envpool's threads step the emulators. The host decides when
  to learn (it counts the steps itself), so the update is compiled with no
  conditional or loop around it, which XLA:CPU needs to run convolutions at
  full speed. The only difference from the compiled iteration: a round of
  updates samples replay before the transitions of its own iteration are
  written (they are written right after), so the newest ``num_envs``
  transitions wait one iteration to be drawable.

Ctrl-C during a host-stepped chunk: every compiled piece donates the state it
is given, the caller's included, so the caller's state is gone once the chunk
has begun. ``HostRunner.run`` therefore defers Ctrl-C to the end of the
iteration in flight and raises ``ChunkInterrupted`` carrying the state reached
there, which the training loop saves. A second Ctrl-C stops at once, unsaved.

envpool cannot save its emulators, so ``after_restore`` (on resume) resets
the Atari pools and starts new episodes; replay is kept, with a break marked
so that no transition joins the old and the new episodes. A resumed Atari run
therefore does not replay the uninterrupted trajectory bit for bit (gymnax
runs do).
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.running import preemption
from jaxdqn.agents.dqn import DQNAgent, TrainState
from jaxdqn.envs import TaskSet


def _concat(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def observe_envpool(tasks: TaskSet, env_states, raws):
    """(env states, AtariStep ``[T, B, ...]``) from one ``recv`` of every group's pools."""
    new_states, steps = [], []
    for (group, _), group_state, raw in zip(tasks.groups, env_states, raws):
        group_state, step = group.from_raw(group_state, raw)
        new_states.append(group_state)
        steps.append(step)
    return tuple(new_states), _concat(steps)


def reset_atari(tasks: TaskSet):
    """Synchronous reset of every pool -> (env states per group, obs ``[T, B, ...]``)."""
    states, obs = [], []
    for group, _ in tasks.groups:
        group_obs, lives = group.host_reset()
        states.append(group.fresh_state(lives))
        obs.append(jnp.asarray(group_obs))
    return tuple(states), jnp.concatenate(obs, axis=0)


class ChunkInterrupted(KeyboardInterrupt):
    """Ctrl-C inside a chunk; ``state`` is the state at the end of the last whole
    iteration (``None`` after a second Ctrl-C: nothing usable to save)."""

    def __init__(self, state: TrainState | None):
        super().__init__()
        self.state = state


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Yields a flag set by Ctrl-C instead of raising; a second Ctrl-C raises at once."""
    requested = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
    if not main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield requested  # Ctrl-C is ignored or someone else's: leave it so
        return

    def handler(signum, frame):
        if requested.is_set():
            raise ChunkInterrupted(None)
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


class Runner:
    """Chunks through the system's compiled ``run``."""

    def __init__(self, agent):
        self.agent = agent

    def run(self, state, num_iterations: int):
        """-> (state, the chunk's metrics)."""
        return self.agent.run(state, num_iterations)

    def after_restore(self, state):
        """A state restored from a checkpoint, ready to continue (see the module notes)."""
        agent = self.agent
        if not agent.tasks.is_atari:
            return state
        env_state, obs = reset_atari(agent.tasks)
        return state._replace(
            env_state=env_state,
            obs=obs,
            episode_return=jnp.zeros_like(state.episode_return),
            episode_length=jnp.zeros_like(state.episode_length),
            replay=agent.mark_break(state.replay),
        )


class HostRunner(Runner):
    """Atari pools stepped by the host with ``send``/``recv`` around compiled pieces."""

    def __init__(self, agent: DQNAgent):
        super().__init__(agent)
        tasks = agent.tasks

        def act(state):
            state, actions, q, _, update_keys = agent.act(state)
            return state, actions, q, update_keys

        def record(state, metrics, actions, q, raws):
            env_state, step = observe_envpool(tasks, state.env_state, raws)
            return agent.record(state, metrics, actions, q, env_state, step)

        self._act = jax.jit(act, donate_argnums=0)
        self._learn = jax.jit(agent.learn_unrolled, donate_argnums=(0, 1))
        self._record = jax.jit(record, donate_argnums=(0, 1))
        self._empty_metrics = jax.jit(agent.empty_metrics)

    def run(self, state, num_iterations: int):
        agent, groups = self.agent, self.agent.tasks.groups
        env_steps = int(state.env_steps)
        with _ctrl_c_deferred() as ctrl_c:
            metrics = self._empty_metrics()
            for _ in range(num_iterations):
                state, actions, q, update_keys = self._act(state)
                host_actions = np.asarray(actions)  # waits for acting only
                for group, sl in groups:
                    group.host_send(host_actions[sl])
                env_steps += agent.tasks.num_envs
                due = agent.learn_due(env_steps)  # same rule as the compiled iteration, at the count it ends at
                if due and agent.learn_overlaps_env_step:
                    state, metrics = self._learn(state, metrics, update_keys)  # runs while the emulators step
                raws = tuple(group.host_recv() for group, _ in groups)
                state, metrics = self._record(state, metrics, actions, q, raws)
                if due and not agent.learn_overlaps_env_step:
                    state, metrics = self._learn(state, metrics, update_keys)
                if ctrl_c.is_set():
                    raise ChunkInterrupted(state)
                if preemption.requested():  # the loop saves this iteration's state and stops
                    break
        return state, metrics


def make_runner(agent: DQNAgent) -> Runner:
    tasks = agent.tasks
    if tasks.is_atari and tasks.atari.stepping == "host":
        return HostRunner(agent)
    return Runner(agent)
