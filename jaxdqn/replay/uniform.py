"""Uniform experience replay as a pytree with pure ``init / add / sample``.

One buffer holds one task's transitions; multi-task runs ``jax.vmap`` these
functions over a leading task axis. Every field keeps the dtype it arrives in,
so ``uint8`` pixels stay ``uint8`` until the network.

Episode boundaries are exact because each transition stores its own
``next_obs``: the environment adapters hand over the true last observation of
an episode, never the first observation of the next one. ``terminated`` (the
episode really ended: no bootstrap) and ``truncated`` (a time limit cut it:
bootstrap from ``next_obs``) are stored as separate flags.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    truncated: jax.Array


class ReplayState(NamedTuple):
    storage: Transition  # every leaf has a leading capacity axis
    position: jax.Array  # next slot to write, int32
    size: jax.Array  # number of filled slots, int32


def batch_from_step(obs: jax.Array, actions: jax.Array, step) -> Transition:
    """The transitions of one env step of a batch of envs: ``obs [B, ...]`` acted on with
    ``actions``, then ``step`` (an :class:`~jaxdqn.envs.base.EnvStep`)."""
    return Transition(obs, actions, step.reward, step.next_obs, step.terminated, step.truncated)


def init(example: Transition, capacity: int) -> ReplayState:
    """Empty buffer whose slots have the shapes and dtypes of one ``example``."""
    storage = jax.tree_util.tree_map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return ReplayState(storage, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def stack_tasks(buffer, num_tasks: int):
    """``num_tasks`` copies of an empty buffer on a leading task axis (any buffer pytree)."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_tasks,) + x.shape), buffer)


def capacity(state: ReplayState) -> int:
    return jax.tree_util.tree_leaves(state.storage)[0].shape[0]


def add_batch(state: ReplayState, batch: Transition) -> ReplayState:
    """Writes a batch ``[B, ...]`` of transitions at the ring position."""
    cap = capacity(state)
    batch_size = jax.tree_util.tree_leaves(batch)[0].shape[0]
    slots = (state.position + jnp.arange(batch_size)) % cap
    storage = jax.tree_util.tree_map(lambda buf, x: buf.at[slots].set(x), state.storage, batch)
    return ReplayState(
        storage,
        (state.position + batch_size) % cap,
        jnp.minimum(state.size + batch_size, cap),
    )


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Transition:
    """Draws ``batch_size`` transitions uniformly, with replacement, from the filled slots."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree_util.tree_map(lambda buf: buf[idx], state.storage)


def nbytes(state: ReplayState) -> int:
    return sum(int(x.nbytes) for x in jax.tree_util.tree_leaves(state.storage))
