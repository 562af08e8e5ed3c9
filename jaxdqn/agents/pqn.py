"""PQN over T tasks: replay-free parallel Q(lambda) (Gallici et al. 2024, "Simplifying Deep
Temporal Difference Learning").

An iteration is the :class:`~jaxdqn.agents.system.System`'s: every task's ``num_envs``
environments act epsilon-greedily and step, and the step is recorded, here into a
*rollout store*: the replay module with room for exactly one rollout
(``num_envs x rollout_length`` transitions per task), so that after ``rollout_length``
iterations it holds the rollout in order, slot ``t * num_envs + n`` for env ``n`` at
step ``t``. Then the schedule calls for learning (once per rollout) and PQN

1. computes Q(lambda) targets over the rollout with the current network
   (:func:`q_lambda_targets`), once. The parameters do not change during a rollout, so
   ``max_a Q(s_{t+1}, a)`` is the acting pass of step ``t + 1``, kept in the store with each
   step; only the rollout's last next states, and the true last states of truncated
   episodes, take a forward pass of their own (:meth:`PQNAgent.rollout_targets`);
2. takes ``epochs`` passes over the rollout, each split into ``minibatches`` random
   minibatches per task, and takes a gradient step on each with the learner's
   :meth:`~jaxdqn.agents.Learner.step` (value loss, PopArt, gradient surgery, loss terms
   and optimizer are the learner's parts, as in DQN).

There is no target network: the targets come from the online parameters of the rollout's
end. Everything else (the task axis, the modes, checkpoints, resume, evaluation, use as a
teacher or transfer source) is shared with DQN.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import rlax

from jaxdqn import losses, replay
from jaxdqn.agents.learner import Learner
from jaxdqn.agents.schedule import Schedule
from jaxdqn.agents.system import Metrics, System
from jaxdqn.envs import TaskSet


class RolloutStep(NamedTuple):
    """One env's step in the rollout store."""

    transition: replay.Transition
    q: jax.Array  # [A] the Q-values (unnormalised) the step acted on
    is_transition: jax.Array  # [] bool: False for envpool's auto-reset steps, which are left out of the loss


class PQNState(NamedTuple):
    params: Any
    opt_state: Any  # with PopArt: agents.parts.PopArtOptState
    env_state: Any
    obs: jax.Array  # [T, num_envs, *obs_shape]
    replay: replay.ReplayState  # the rollout store: leaves [T, num_envs * rollout_length, ...]
    keys: jax.Array  # [T, 2]
    env_steps: jax.Array  # [] env steps per task so far
    updates: jax.Array  # [] gradient steps so far
    episode_return: jax.Array  # [T, num_envs]
    episode_length: jax.Array  # [T, num_envs]


def q_lambda_targets(
    reward: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    q_next: jax.Array,
    action_mask: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """Q(lambda) targets of one env's rollout of ``L`` steps, every ``[L]`` (``q_next [L, A]``:
    Q-values of each step's true next state; ``action_mask [A]``).

    ``G_t = r_t + gamma_t [(1 - lambda_t) max_a Q(s_{t+1}, a) + lambda_t G_{t+1}]`` with
    ``gamma_t = gamma (1 - terminated_t)`` and ``lambda_t = lambda (1 - done_t)``, done meaning
    terminated or truncated, and ``G_{L-1} = r + gamma_{L-1} max_a Q(s_L, a)``
    (``rlax.lambda_returns``). A termination stops the bootstrap; a truncation bootstraps
    from the true last state, and in both cases the trace stops, because the rollout's next
    step belongs to a new episode. (PQN's reference code treats every end as a termination.)

    ``rlax.q_lambda`` computes the same targets inside its TD error, but with a max over all
    actions (padded actions of a multi-task run must not bootstrap) and from the Q-values of
    the moment (PQN fixes its targets for all epochs of a rollout), so the targets are built
    here from ``rlax.lambda_returns`` with the masked max of :func:`jaxdqn.losses.masked_max`.
    """
    v_next = jax.vmap(losses.masked_max, in_axes=(0, None))(q_next, action_mask)
    discount = gamma * (1.0 - terminated.astype(jnp.float32))
    done = jnp.logical_or(terminated, truncated)
    trace = lam * (1.0 - done.astype(jnp.float32))
    return jax.lax.stop_gradient(rlax.lambda_returns(reward, discount, v_next, trace))


@dataclasses.dataclass(frozen=True, eq=False)
class PQNAgent(System):
    """``schedule`` counts as PQN does: ``update_every = learning_starts = replay_capacity =
    num_envs * rollout_length``, ``updates_per_round = epochs * minibatches`` and
    ``batch_size`` the minibatch (see :func:`pqn_schedule`)."""

    learner: Learner
    tasks: TaskSet
    schedule: Schedule
    rollout_length: int = 32
    epochs: int = 2
    minibatches: int = 32
    q_lambda: float = 0.65
    mesh: Any = None
    buffer: Any = replay

    state_type = PQNState
    learn_overlaps_env_step = False  # the targets need the rollout's last step
    learn_metrics = (("loss", True), ("q_mean", True), ("penalty", False))

    def init_learning(self, init_keys: jax.Array, obs: jax.Array) -> dict:
        params = self.learner.init_params(init_keys, obs[0])
        return {"params": params, "opt_state": self.learner.init_opt_state(params)}

    @property
    def num_actions(self) -> int:
        return jnp.shape(self.learner.action_mask)[-1]

    def replay_example(self, obs: jax.Array) -> RolloutStep:
        scalar, flag = jnp.zeros((), jnp.float32), jnp.zeros((), bool)
        transition = replay.Transition(obs[0, 0], jnp.zeros((), jnp.int32), scalar, obs[0, 0], flag, flag)
        return RolloutStep(transition, jnp.zeros((self.num_actions,), jnp.float32), flag)

    def replay_items(self, state: PQNState, actions: jax.Array, q: jax.Array, step) -> RolloutStep:
        # An envpool pool resets on the step after an episode's end: that step (``reset_step``)
        # goes from the final frame to the next episode's first with reward 0. It is not a
        # transition, so it keeps its place in the rollout but has no weight in the loss. The
        # step before it ended an episode, so no Q(lambda) trace reaches it.
        transitions = jax.vmap(replay.batch_from_step)(state.obs, actions, step)
        return RolloutStep(transitions, q, self.tasks.is_transition(step))

    def mark_break(self, store: replay.ReplayState) -> replay.ReplayState:
        """The environments restarted (an Atari run resumed): the newest step of every env
        gets no successor from its own episode, so it is marked truncated. Its target then
        bootstraps from its own next state, which the store holds, and its trace stops."""
        n = self.tasks.num_envs

        def one_task(task_store):
            rollout = task_store.storage.transition
            newest = (task_store.position - n + jnp.arange(n)) % rollout.truncated.shape[0]
            truncated = rollout.truncated.at[newest].set(True)
            storage = task_store.storage._replace(transition=rollout._replace(truncated=truncated))
            return task_store._replace(storage=storage)

        return jax.vmap(one_task)(store)

    def acting_q(self, state: PQNState) -> jax.Array:
        """Unnormalised Q-values (with PopArt, the same greedy actions as the normalised ones),
        so that the targets can reuse them."""
        return self.learner.q_values(self.learner.target_source(state.params, state.opt_state), state.obs)

    # -- learning -----------------------------------------------------------

    def rollout_targets(self, params, opt_state, store: RolloutStep) -> jax.Array:
        """Q(lambda) targets ``[T, L * N]`` (unnormalised) of the rollout in the store.

        ``Q(s_{t+1})`` is the acting pass of step ``t + 1`` (``store.q``), made with these
        same parameters: they change only here, after the rollout. Where step ``t`` ended an
        episode, ``s_{t+1}`` is the next episode's first state instead: a termination does not
        bootstrap, so its value is never used, and a truncation bootstraps from the true last
        state, which takes a forward pass here, for the earlier steps that have one. The
        rollout's last step takes one pass over all its next states, truncated or not: they
        were not acted on yet.
        """
        num_tasks, n, length = self.num_tasks, self.tasks.num_envs, self.rollout_length
        source = self.learner.target_source(params, opt_state)

        def by_step(x):  # [T, L*N, ...] -> [L, T, N, ...]
            return jnp.swapaxes(x.reshape((num_tasks, length, n) + x.shape[2:]), 0, 1)

        rollout = store.transition
        acted_q, next_obs, truncated = by_step(store.q), by_step(rollout.next_obs), by_step(rollout.truncated)
        last_q = self.learner.q_values(source, next_obs[-1])  # [T, N, A]: true next states, truncated or not

        def true_next_q(step):
            q, obs, cut = step
            # Under a seed axis (vmap) the cond becomes a select and the pass runs for every step it covers.
            return jax.lax.cond(cut.any(), lambda: jnp.where(cut[..., None], self.learner.q_values(source, obs), q), lambda: q)

        earlier_q = jax.lax.map(true_next_q, (acted_q[1:], next_obs[:-1], truncated[:-1]))  # [L-1, T, N, A]
        q_next = jnp.concatenate([earlier_q, last_q[None]])  # [L, T, N, A]
        q_next = jnp.swapaxes(q_next, 0, 1).reshape((num_tasks, length * n) + q_next.shape[3:])  # [T, L*N, A]
        reward = rollout.reward
        if self.learner.reward_scale is not None:
            reward = reward * jnp.asarray(self.learner.reward_scale, jnp.float32)[:, None]

        def by_env(x):  # [T, L*N, ...] -> [T, N, L, ...]
            x = x.reshape((num_tasks, length, n) + x.shape[2:])
            return jnp.swapaxes(x, 1, 2)

        per_env = jax.vmap(  # over tasks, then envs
            jax.vmap(q_lambda_targets, in_axes=(0, 0, 0, 0, None, None, None)), in_axes=(0, 0, 0, 0, 0, None, None)
        )
        targets = per_env(
            by_env(reward),
            by_env(rollout.terminated),
            by_env(rollout.truncated),
            by_env(q_next),
            jnp.asarray(self.learner.action_mask),
            self.learner.gamma,
            self.q_lambda,
        )  # [T, N, L]
        return jnp.swapaxes(targets, 1, 2).reshape(num_tasks, length * n)

    def learn(self, state: PQNState, metrics: Metrics, keys: jax.Array):
        """Targets over the rollout, then ``epochs x minibatches`` gradient steps."""
        store = state.replay.storage
        targets = self.rollout_targets(state.params, state.opt_state, store)
        size, batch = self.tasks.num_envs * self.rollout_length, self.schedule.batch_size
        split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
        order_keys = jax.vmap(lambda k: jax.random.split(k, self.epochs))(split[:, 0])  # [T, E, 2]
        step_keys = self._update_keys(split[:, 1])  # [T, E * M, 2]
        orders = jax.vmap(jax.vmap(lambda k: jax.random.permutation(k, size)))(order_keys)  # [T, E, size]
        orders = orders.reshape(self.num_tasks, self.epochs * self.minibatches, batch)

        def one_step(i, carry):
            state, metrics = carry
            take = jax.vmap(lambda x, idx: x[idx])
            index = orders[:, i]
            minibatch = jax.tree_util.tree_map(lambda x: take(x, index), store.transition)
            weights = take(store.is_transition, index) if self.tasks.is_atari else None
            params, opt_state, info = self.learner.step(
                state.params,
                state.opt_state,
                take(targets, index),
                minibatch,
                keys=step_keys[:, i],
                count=state.updates,
                weights=weights,
            )
            metrics = self.count_update(metrics, {"loss": info.task_loss, "q_mean": info.q_mean, "penalty": info.penalty})
            return state._replace(params=params, opt_state=opt_state, updates=state.updates + 1), metrics

        return jax.lax.fori_loop(0, self.epochs * self.minibatches, one_step, (state, metrics))

    def learn_unrolled(self, state: PQNState, metrics: Metrics, keys: jax.Array):
        return self.learn(state, metrics, keys)


def pqn_schedule(
    num_envs: int,
    rollout_length: int,
    epochs: int,
    minibatches: int,
    epsilon_start: float = 1.0,
    epsilon_end: float = 0.05,
    epsilon_decay_steps: int = 1,
) -> Schedule:
    """PQN's counting as a :class:`Schedule`: one round of ``epochs * minibatches`` gradient
    steps per rollout, learning from the first full rollout on, the store one rollout long."""
    rollout = num_envs * rollout_length
    return Schedule(
        num_envs=num_envs,
        learning_starts=rollout,
        update_every=rollout,
        updates_per_round=epochs * minibatches,
        batch_size=rollout // minibatches,
        replay_capacity=rollout,
        epsilon_start=epsilon_start,
        epsilon_end=epsilon_end,
        epsilon_decay_steps=epsilon_decay_steps,
    )
