"""Builds the agent a config describes."""

from __future__ import annotations

import jax
import numpy as np

from jaxdqn.agents.dqn import DQNAgent, Schedule
from jaxdqn.agents.learner import Learner
from jaxdqn.config import Config
from jaxdqn.envs import TaskSet, TaskSpec
from jaxdqn.networks import NetworkSpec, QNetwork


def task_specs(cfg: Config) -> list[TaskSpec]:
    return [TaskSpec(t.env_id, dict(t.env_params), t.name) for t in cfg.tasks]


def network_spec(cfg: Config) -> NetworkSpec:
    n = cfg.network
    return NetworkSpec(torso=n.torso, hidden_sizes=tuple(n.hidden_sizes), dueling=n.dueling)


def task_keys(cfg: Config) -> jax.Array:
    """``[T, 2]``: task ``i`` draws from ``PRNGKey(seed + offset_i)`` (offset: its index by default)."""
    offsets = [t.seed_offset if t.seed_offset >= 0 else i for i, t in enumerate(cfg.tasks)]
    return jax.numpy.stack([jax.random.PRNGKey(cfg.seed + o) for o in offsets])


def task_batching(cfg: Config) -> str:
    """``auto`` picks what benchmarks/bench_multitask.py measured fastest per backend:
    vmapped convolutions over stacked kernels are slow on CPU, so they are unrolled there."""
    choice = cfg.multitask.task_batching
    if choice != "auto":
        return choice
    conv = cfg.network.torso != "mlp"
    return "unroll" if conv and jax.default_backend() == "cpu" else "vmap"


def total_updates(cfg: Config) -> int:
    """Gradient steps a full run takes (per task)."""
    d = cfg.dqn
    learning_steps = max(0, cfg.train.total_env_steps - d.learning_starts)
    return max(1, learning_steps * d.updates_per_round // d.update_every)


def build_learner(cfg: Config, tasks: TaskSet) -> Learner:
    d, m = cfg.dqn, cfg.multitask
    return Learner(
        network=QNetwork(network_spec(cfg), tasks.num_actions),
        num_tasks=tasks.num_tasks,
        action_mask=np.asarray(tasks.action_mask),
        mode=m.mode,
        shared_head=m.hard_heads == "shared",
        task_weights=tuple(t.weight for t in cfg.tasks),
        gamma=d.gamma,
        double=d.double,
        loss_kind=d.loss,
        huber_delta=d.huber_delta,
        learning_rate=d.learning_rate,
        lr_decay_updates=total_updates(cfg) if d.lr_decay else 0,
        adam_eps=d.adam_eps,
        max_grad_norm=d.max_grad_norm,
        soft_lambda=m.soft_lambda,
        soft_penalty_on=m.soft_penalty_on,
        task_batching=task_batching(cfg),
    )


def build_agent(cfg: Config) -> DQNAgent:
    d, t = cfg.dqn, cfg.train
    tasks = TaskSet(task_specs(cfg), t.num_envs)
    schedule = Schedule(
        num_envs=t.num_envs,
        batch_size=d.batch_size,
        replay_capacity=d.replay_capacity,
        learning_starts=d.learning_starts,
        update_every=d.update_every,
        updates_per_round=d.updates_per_round,
        target_update=d.target_update,
        target_update_period=d.target_update_period,
        polyak_tau=d.polyak_tau,
        epsilon_start=d.epsilon_start,
        epsilon_end=d.epsilon_end,
        epsilon_decay_steps=d.epsilon_decay_steps,
    )
    return DQNAgent(build_learner(cfg, tasks), tasks, schedule)


def build_eval_tasks(cfg: Config) -> TaskSet:
    return TaskSet(task_specs(cfg), cfg.train.eval_episodes)
