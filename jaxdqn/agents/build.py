"""Builds the agent a config describes."""

from __future__ import annotations

import collections
import dataclasses

import jax
import numpy as np
import optax

from jaxdqn import replay
from jaxdqn.agents import parts
from jaxdqn.agents.dqn import DQNAgent, TargetUpdate
from jaxdqn.agents.pqn import PQNAgent, pqn_schedule
from jaxdqn.agents.schedule import Schedule
from jaxdqn.agents.learner import Learner
from jaxdqn import config as config_lib
from jaxdqn.config import Config
from jaxdqn.envs import TaskSet, TaskSpec, envpool_env
from jaxdqn.networks import NetworkSpec, QNetwork
from jaxdqn.replay.pixels import PixelReplay
from jaxdqn.parallel.sharding import make_mesh


def task_specs(cfg: Config) -> list[TaskSpec]:
    return [TaskSpec(t.env_id, dict(t.env_params), t.name) for t in cfg.tasks]


def network_spec(cfg: Config) -> NetworkSpec:
    n, d = cfg.network, cfg.dqn
    support = {}
    if d.loss == "hl_gauss":
        support = dict(value_bins=d.hl_gauss_bins, value_min=d.hl_gauss_min, value_max=d.hl_gauss_max)
    return NetworkSpec.from_config(n, **support)


def steps_per_round_factor(cfg: Config) -> int:
    """``T`` when hard sharing takes one gradient step per task each round, else 1."""
    m = cfg.multitask
    return cfg.num_tasks if m.mode == "hard" and m.hard_steps_per_round == "tasks" else 1


def task_keys(cfg: Config) -> jax.Array:
    """``[T, 2]``: task ``i`` draws from ``PRNGKey(seed + offset_i)`` (offset: its index by default)."""
    offsets = [t.seed_offset if t.seed_offset >= 0 else i for i, t in enumerate(cfg.tasks)]
    return jax.numpy.stack([jax.random.PRNGKey(cfg.seed + o) for o in offsets])


def task_batching(cfg: Config) -> str:
    """``auto`` picks what benchmarks/bench_multitask.py measured fastest.

    With one task, the plain network (``unroll``): a vmap over a task axis of
    size 1 turns every matrix product into a batched one, which XLA's CPU
    backend runs slower. With several tasks, ``vmap`` on every backend (with
    convolutions computed as patches + matmul on CPU, see networks.PatchConv).
    """
    choice = cfg.multitask.task_batching
    if choice != "auto":
        return choice
    return "unroll" if cfg.num_tasks == 1 else "vmap"


def schedule(cfg: Config) -> Schedule:
    """The run's env-step / update arithmetic (see jaxdqn.agents.schedule)."""
    d, t = cfg.dqn, cfg.train
    if cfg.system == "pqn":
        p = cfg.pqn
        return pqn_schedule(
            t.num_envs, p.rollout_length, p.epochs, p.minibatches, d.epsilon_start, d.epsilon_end, d.epsilon_decay_steps
        )
    return Schedule(
        num_envs=t.num_envs,
        learning_starts=d.learning_starts,
        update_every=d.update_every,
        updates_per_round=d.updates_per_round * steps_per_round_factor(cfg),
        batch_size=d.batch_size,
        replay_capacity=d.replay_capacity,
        epsilon_start=d.epsilon_start,
        epsilon_end=d.epsilon_end,
        epsilon_decay_steps=d.epsilon_decay_steps,
    )


def total_updates(cfg: Config) -> int:
    """Gradient steps a full run takes (per task)."""
    return max(1, schedule(cfg).updates_by(cfg.train.total_env_steps))


def build_optimizer(cfg: Config) -> optax.GradientTransformation:
    """One task's optimizer (or the shared network's): clipping, then Adam, with the
    step size decaying linearly to 0 over the run when ``dqn.lr_decay`` is on."""
    d = cfg.dqn
    kind = cfg.pqn.optimizer if cfg.system == "pqn" else "adam"
    return parts.adam(d.learning_rate, d.adam_eps, d.max_grad_norm, lr_decay_updates(cfg), kind)


def lr_decay_updates(cfg: Config) -> int:
    """Updates over which the step size decays linearly to 0 (``0``: it stays constant)."""
    return total_updates(cfg) if cfg.dqn.lr_decay else 0


def build_learner(cfg: Config, tasks: TaskSet) -> Learner:
    d, m = cfg.dqn, cfg.multitask
    network = QNetwork(network_spec(cfg), tasks.num_actions)
    return Learner(
        network=network,
        num_tasks=tasks.num_tasks,
        action_mask=np.asarray(tasks.action_mask),
        mode=m.mode,
        shared_head=m.hard_heads == "shared",
        task_weights=tuple(t.weight for t in cfg.tasks),
        gamma=d.gamma,
        double=d.double,
        reward_scale=tuple(t.reward_scale for t in cfg.tasks),
        optimizer=build_optimizer(cfg),
        value_loss=parts.value_loss_for(
            network.spec, "huber" if d.loss == "hl_gauss" else d.loss, d.huber_delta, d.hl_gauss_sigma
        ),
        popart=parts.PopArt(d.popart_step_size, d.popart_scale_lb, d.popart_scale_ub) if d.popart else None,
        surgery=parts.PCGrad() if m.gradient_surgery == "pcgrad" else None,
        soft=parts.SoftSharing(m.soft_lambda, m.soft_penalty_on) if m.mode == "soft" else None,
        task_batching=task_batching(cfg),
        obs_valid=tasks.obs_valid if cfg.network.task_input_layers else None,
    )


def eval_epsilon(cfg: Config, tasks: TaskSet) -> float:
    """Exploration while evaluating: ``atari.eval_epsilon`` for Atari, else ``train.eval_epsilon``."""
    return cfg.atari.eval_epsilon if tasks.is_atari else cfg.train.eval_epsilon


class RecentlyBuilt:
    """The last ``limit`` things built, by key: ``get(key, build)`` builds only what it lacks."""

    def __init__(self, limit: int = 8):
        self.limit = limit
        self._items: collections.OrderedDict = collections.OrderedDict()

    def get(self, key, build):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        item = self._items[key] = build()
        if len(self._items) > self.limit:
            self._items.popitem(last=False)
        return item


_agents = RecentlyBuilt()


def reuse_key(cfg: Config) -> str | None:
    """What an agent built from ``cfg`` depends on, as text; ``None`` when it must not be reused.

    An agent over pure-JAX tasks holds no state of its own (frozen settings and stateless
    envs), and its seed enters only through the task keys, so two configs equal up to
    ``seed`` and ``name`` give agents that compute the same. Atari pools are envpool
    processes with a state of their own: each run gets its own.
    """
    if any(envpool_env.is_atari_id(t.env_id) for t in cfg.tasks):
        return None
    return config_lib.dump(dataclasses.replace(cfg, seed=0, name=""))


def build_agent(cfg: Config) -> DQNAgent | PQNAgent:
    """The system ``cfg.system`` names, over the config's tasks.

    Configs equal up to their seed and name (see :func:`reuse_key`) get the same agent
    back, so that the programs compiled for one run (jit caches are keyed on the agent)
    serve the next in the same process: a resumed run, another seed, an evaluation.
    """
    key = reuse_key(cfg)
    return _new_agent(cfg) if key is None else _agents.get(key, lambda: _new_agent(cfg))


def _new_agent(cfg: Config) -> DQNAgent | PQNAgent:
    d, t = cfg.dqn, cfg.train
    tasks = TaskSet(task_specs(cfg), t.num_envs, atari=cfg.atari, atari_seed=cfg.seed)
    if cfg.system == "pqn":
        p = cfg.pqn
        return PQNAgent(build_learner(cfg, tasks), tasks, schedule(cfg), p.rollout_length, p.epochs, p.minibatches, p.q_lambda)
    mesh = make_mesh(cfg.multitask.mode, tasks.num_tasks, d.batch_size)
    buffer = replay
    if tasks.is_atari:  # frames stored once; see jaxdqn/replay/pixels.py
        buffer = PixelReplay(t.num_envs, stack=cfg.atari.stack_num, frame_channels=tasks.atari.frame_channels)
    target = TargetUpdate(d.target_update, d.target_update_period * steps_per_round_factor(cfg), d.polyak_tau)
    return DQNAgent(build_learner(cfg, tasks), tasks, schedule(cfg), mesh, buffer=buffer, target=target)


EVAL_SEED_OFFSET = 0x5EED  # evaluation pools draw their own episodes, apart from training's


def build_eval_tasks(cfg: Config) -> TaskSet:
    """Evaluation envs; for Atari a separate pool with the evaluation protocol's settings."""
    atari = cfg.atari.for_evaluation()
    return TaskSet(task_specs(cfg), cfg.train.eval_episodes, atari=atari, atari_seed=cfg.seed + EVAL_SEED_OFFSET)
