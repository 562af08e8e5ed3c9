"""Atari games from envpool behind the batched-env interface.

One envpool pool per task (each game is its own emulator pool). A pool is
stepped in one of two ways:

- ``xla``: the pool's XLA handle (``env.xla()``) is stepped inside the jitted
  training iteration. Handles cannot be vmapped, so the pools of a group are
  stepped one after another.
- ``host``: the host calls ``send``/``recv`` itself (see ``jaxdqn.running.runners``),
  so the emulators run in envpool's threads while the learner's compiled
  update runs.

Either way the pool is reset synchronously on the host first (``env.reset()``,
here through an ``io_callback`` so that jitted code can ask for it): stepping a
pool that was never reset reads garbage.

How envpool ends episodes, and what this adapter makes of it
-------------------------------------------------------------
envpool resets an environment on the step *after* the one that ended its
episode: the ending step returns the final observation with ``terminated``
or ``truncated`` set; the next step ignores its action and returns the first
observation of the new episode with reward 0. That extra step is reported
here with ``reset_step = True``: it is not a transition, and no loss may learn
from it (``jaxdqn.replay.pixels`` drops it; PQN's rollout store keeps its place
and gives it weight 0). ``obs`` and ``next_obs`` of every
step are both what envpool returned, so the agent acts on the final
observation once (the action is ignored) before it sees the new episode.

The pools themselves run without envpool's ``episodic_life`` and
``reward_clip``; both are applied here, for training only:

- a lost life sets ``terminated`` (no bootstrap through it), but the game plays
  on, exactly as in evaluation: no extra reset, no no-ops, no FIRE press, and
  the frame stack goes on, so the observations the agent learns from are the
  ones it acts on and evaluation plays the same game it trained on;
- rewards are clipped to their sign in ``reward``; ``score`` keeps the raw
  game reward for the metrics.

``truncated`` is the episode cap (``max_episode_steps``, 27,000 agent steps =
108,000 frames by default) when the game did not also end: truncation
bootstraps, termination does not.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from jaxdqn.config.schema import AtariConfig
from jaxdqn.errors import ConfigError

STEPPING_MODES = ("xla", "host")

# Room for one pool's XLA handle (envpool's is 8 bytes), zero-padded to a fixed
# width so that a checkpoint's env state has the same shape in both stepping modes.
HANDLE_BYTES = 16


@functools.lru_cache(maxsize=1)
def registered_ids() -> tuple[str, ...]:
    """envpool's Atari ids (``Pong-v5``, ...); empty when envpool is not installed."""
    try:
        from envpool.registration import registry
    except ImportError:
        return ()
    return tuple(sorted(k for k, v in registry.specs.items() if v[0] == "envpool.atari"))


ATARI_EXTRA = "pip install 'jaxdqn[atari]'"


def needs_atari_extra(env_id: str) -> bool:
    """Whether ``env_id`` names an Atari game (``Pong-v5``) while envpool, the ``atari``
    extra, is not installed."""
    if not ATARI_ID.fullmatch(env_id) or registered_ids():
        return False
    from jaxdqn.envs.atari_scores import game_name, reference_scores

    return game_name(env_id) in reference_scores()


ATARI_ID = re.compile(r"[A-Za-z0-9]+-v5")  # envpool's Atari ids; no gymnax or pgx id has this form


def is_atari_id(env_id: str) -> bool:
    """Whether ``env_id`` is one of envpool's Atari games (envpool is imported only for ids of that form)."""
    return bool(ATARI_ID.fullmatch(env_id)) and env_id in registered_ids()


# What benchmarks/bench_atari.py measured faster per backend (results/atari*.md):
# on GPU the compiled loop (envpool's XLA handles) beats the host loop's per-step
# dispatches; on CPU the host loop wins by far, because XLA:CPU runs convolutions
# much slower inside the scanned loop than in a plain compiled update. envpool has
# no TPU kernels, so TPUs step on the host.
ATARI_STEPPING = {"cpu": "host", "gpu": "xla", "tpu": "host"}


def resolved(options: AtariConfig) -> AtariConfig:
    """``options`` with ``stepping: auto`` replaced by the faster mode on the default backend."""
    if options.stepping != "auto":
        return options
    return dataclasses.replace(options, stepping=ATARI_STEPPING.get(jax.default_backend(), "host"))


def pool_seed(base: int, task_index: int) -> int:
    """A 31-bit envpool seed for task ``task_index`` (envpool seeds env ``j`` with ``seed + j``)."""
    state = np.random.SeedSequence([base, task_index, 0xA7A21]).generate_state(1)[0]
    return int(state % (2**31 - 2**16))


def make_pool(env_id: str, num_envs: int, options: AtariConfig, seed: int):
    """One synchronous envpool pool (every ``recv`` returns all ``num_envs`` envs)."""
    import envpool

    return envpool.make(
        env_id,
        env_type="gymnasium",
        num_envs=num_envs,
        batch_size=num_envs,
        num_threads=options.num_threads,
        seed=seed,
        max_episode_steps=options.max_episode_steps,
        img_height=options.img_height,
        img_width=options.img_width,
        gray_scale=options.gray_scale,
        stack_num=options.stack_num,
        frame_skip=options.frame_skip,
        noop_max=options.noop_max,
        use_fire_reset=options.fire_reset,
        repeat_action_probability=options.repeat_action_probability,
        full_action_space=options.full_action_space,
        episodic_life=False,
        reward_clip=False,
    )


class AtariStep(NamedTuple):
    """``EnvStep``'s fields plus what Atari needs on top (leaves ``[..., num_envs]``)."""

    obs: jax.Array  # what envpool returned; the agent acts on it next
    next_obs: jax.Array  # the same array (envpool resets one step later)
    reward: jax.Array  # what the learner sees: clipped in training
    terminated: jax.Array  # game over, or (training, episodic_life) a lost life
    truncated: jax.Array  # the episode cap, when nothing terminated
    score: jax.Array  # raw game reward, for the metrics
    episode_end: jax.Array  # the game ended (game over or cap): envpool resets on the next step
    reset_step: jax.Array  # this step was that reset: not a transition; obs starts a new episode


class AtariState(NamedTuple):
    """Per group: XLA handles ``[G, HANDLE_BYTES]`` (zeros when stepped on the host),
    lives ``[G, B]`` and whether the last step ended the episode ``[G, B]``."""

    handle: jax.Array
    lives: jax.Array
    ended: jax.Array


class RawStep(NamedTuple):
    """What one ``recv`` of one pool says, as arrays ``[B, ...]``."""

    obs: jax.Array
    reward: jax.Array
    game_over: jax.Array
    trunc: jax.Array
    lives: jax.Array


def raw_from_gymnasium(obs, reward, trunc, info, xp=jnp) -> RawStep:
    """A pool's ``recv`` in env order (``xp``: ``jnp`` inside jit, ``np`` on the host).

    A synchronous pool already answers in env order; sorting by ``env_id`` keeps
    each environment in its own replay column even if it did not.
    """
    # info["terminated"] is the emulator's game-over flag. envpool's own
    # ``terminated`` is ``done & ~trunc`` and would call a game lost on the
    # capped step a truncation.
    order = xp.argsort(info["env_id"])
    return RawStep(
        obs[order],
        reward[order].astype(xp.float32),
        info["terminated"][order].astype(bool),
        trunc[order].astype(bool),
        info["lives"][order].astype(xp.int32),
    )


def to_step(options: AtariConfig, lives: jax.Array, ended: jax.Array, raw: RawStep):
    """(lives, ended, AtariStep) after ``raw``, given the lives and ``ended`` flag before it.

    Pure and shape-agnostic: works on ``[B]`` or ``[G, B]`` arrays, numpy or jax.
    """
    reset_step = ended
    game_over = jnp.logical_and(raw.game_over, jnp.logical_not(reset_step))
    cap = jnp.logical_and(raw.trunc, jnp.logical_not(raw.game_over))
    life_lost = jnp.logical_and(raw.lives < lives, jnp.logical_not(reset_step))
    terminated = game_over
    if options.episodic_life:
        terminated = jnp.logical_or(terminated, life_lost)
    truncated = jnp.logical_and(cap, jnp.logical_not(terminated))
    reward = jnp.sign(raw.reward) if options.reward_clip else raw.reward
    episode_end = jnp.logical_or(game_over, cap)
    step = AtariStep(
        obs=raw.obs,
        next_obs=raw.obs,
        reward=reward.astype(jnp.float32),
        terminated=terminated,
        truncated=truncated,
        score=raw.reward.astype(jnp.float32),
        episode_end=episode_end,
        reset_step=reset_step,
    )
    return raw.lives, episode_end, step


class AtariGroup:
    """Tasks that play the same Atari game, one envpool pool each."""

    def __init__(self, env_id: str, seeds: Sequence[int], num_envs: int, options: AtariConfig):
        options = resolved(options)
        if options.stepping not in STEPPING_MODES:
            raise ConfigError(
                f"config key 'atari.stepping': got {options.stepping!r}; allowed: {', '.join(map(repr, STEPPING_MODES))}"
            )
        self.env_id = env_id
        self.options = options
        self.num_envs = num_envs
        self.pools = [make_pool(env_id, num_envs, options, s) for s in seeds]
        self.obs_shape = tuple(int(d) for d in self.pools[0].observation_space.shape)
        self.obs_dtype = jnp.dtype(jnp.uint8)
        self.num_actions = int(self.pools[0].action_space.n)
        self.max_steps = options.max_episode_steps
        self._xla = [pool.xla() for pool in self.pools] if options.stepping == "xla" else None

    @property
    def size(self) -> int:
        return len(self.pools)

    # -- host side ----------------------------------------------------------

    def host_reset(self) -> tuple[np.ndarray, np.ndarray]:
        """Synchronous reset of every pool -> (obs ``[G, B, *obs_shape]``, lives ``[G, B]``)."""
        obs, lives = [], []
        for pool in self.pools:
            o, info = pool.reset()
            order = np.argsort(info["env_id"])
            obs.append(o[order])
            lives.append(np.asarray(info["lives"], np.int32)[order])
        return np.stack(obs), np.stack(lives)

    def host_send(self, actions: np.ndarray) -> None:
        """``actions [G, B]`` go to the pools; they step in envpool's threads."""
        for pool, a in zip(self.pools, actions):
            pool.send(np.asarray(a, np.int32))

    def host_recv(self) -> RawStep:
        """Waits for every pool's step -> ``RawStep`` with leaves ``[G, B, ...]`` (numpy)."""
        raws = []
        for pool in self.pools:
            obs, reward, _, trunc, info = pool.recv()
            raws.append(raw_from_gymnasium(obs, reward, trunc, info, xp=np))
        return RawStep(*(np.stack(xs) for xs in zip(*raws)))

    def _handles(self) -> np.ndarray:
        handles = np.zeros((self.size, HANDLE_BYTES), np.uint8)
        for g, (handle, *_) in enumerate(self._xla or []):
            handle = np.asarray(handle, np.uint8).ravel()
            if handle.size > HANDLE_BYTES:
                raise RuntimeError(f"envpool's XLA handle has {handle.size} bytes; jaxdqn keeps room for {HANDLE_BYTES}")
            handles[g, : handle.size] = handle
        return handles

    def fresh_state(self, lives: jax.Array) -> AtariState:
        return AtariState(jnp.asarray(self._handles()), jnp.asarray(lives, jnp.int32), jnp.zeros(lives.shape, bool))

    # -- the batched-env interface -------------------------------------------

    def reset(self, keys: jax.Array):
        """Resets every pool on the host -> (state, obs ``[G, B, *obs_shape]``).

        ``keys`` are not used: envpool draws no-op starts from the seed each
        pool was made with.
        """
        del keys
        shapes = (
            jax.ShapeDtypeStruct((self.size, self.num_envs) + self.obs_shape, jnp.uint8),
            jax.ShapeDtypeStruct((self.size, self.num_envs), jnp.int32),
        )
        obs, lives = io_callback(self.host_reset, shapes, ordered=True)
        return self.fresh_state(lives), obs

    def from_raw(self, state: AtariState, raw: RawStep):
        """(state, AtariStep) from one ``recv`` of every pool (``[G, B, ...]``)."""
        lives, ended, step = to_step(self.options, state.lives, state.ended, raw)
        return AtariState(state.handle, lives, ended), step

    def step(self, keys: jax.Array, state: AtariState, actions: jax.Array):
        """``actions [G, B]`` -> (state, AtariStep ``[G, B, ...]``), stepped through XLA."""
        del keys
        if self._xla is None:
            raise ConfigError(
                f"{self.env_id}: this pool steps on the host (atari.stepping='host'); "
                "it cannot be stepped inside a compiled function"
            )
        handles, raws = [], []
        for g, (first_handle, recv, send, _) in enumerate(self._xla):
            size = np.asarray(first_handle).size
            handle = send(state.handle[g, :size], actions[g].astype(jnp.int32))
            handle, (obs, reward, _, trunc, info) = recv(handle)
            handles.append(jnp.pad(handle.astype(jnp.uint8).ravel(), (0, HANDLE_BYTES - size)))
            raws.append(raw_from_gymnasium(obs, reward, trunc, info))
        raw = RawStep(*(jnp.stack(xs) for xs in zip(*raws)))
        return self.from_raw(state._replace(handle=jnp.stack(handles)), raw)

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
