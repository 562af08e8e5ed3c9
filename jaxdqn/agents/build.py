"""Builds the agent a config describes."""

from __future__ import annotations

import jax
import numpy as np
import optax

from jaxdqn import replay
from jaxdqn.agents import parts
from jaxdqn.agents.dqn import DQNAgent, TargetUpdate
from jaxdqn.agents.pqn import PQNAgent, pqn_schedule
from jaxdqn.agents.schedule import Schedule
from jaxdqn.agents.learner import Learner
from jaxdqn.config import Config
from jaxdqn.envs import TaskSet, TaskSpec
from jaxdqn.envs.envpool_env import AtariOptions
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
    return NetworkSpec(
        torso=n.torso,
        hidden_sizes=tuple(n.hidden_sizes),
        dueling=n.dueling,
        cnn_channels=n.cnn_channels,
        cnn_hidden=n.cnn_hidden,
        layer_norm=n.layer_norm,
        task_input_layer=n.task_input_layers,
        task_conditioning=n.task_conditioning,
        **support,
    )


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


# What benchmarks/bench_atari.py measured faster per backend (results/atari*.md):
# on GPU the compiled loop (envpool's XLA handles) beats the host loop's per-step
# dispatches; on CPU the host loop wins by far, because XLA:CPU runs convolutions
# much slower inside the scanned loop than in a plain compiled update. envpool has
# no TPU kernels, so TPUs step on the host.
ATARI_STEPPING = {"cpu": "host", "gpu": "xla", "tpu": "host"}


def atari_stepping(cfg: Config) -> str:
    """``atari.stepping``, with ``auto`` resolved for the default backend."""
    choice = cfg.atari.stepping
    if choice != "auto":
        return choice
    return ATARI_STEPPING.get(jax.default_backend(), "host")


def atari_options(cfg: Config, evaluation: bool = False) -> AtariOptions:
    """envpool settings of the training pools, or of the evaluation protocol's pools."""
    a = cfg.atari
    options = AtariOptions(
        stepping=atari_stepping(cfg),
        num_threads=a.num_threads,
        img_height=a.img_height,
        img_width=a.img_width,
        gray_scale=a.gray_scale,
        frame_skip=a.frame_skip,
        stack_num=a.stack_num,
        noop_max=a.noop_max,
        fire_reset=a.fire_reset,
        repeat_action_probability=a.repeat_action_probability,
        max_episode_steps=a.max_episode_steps,
        full_action_space=a.full_action_space,
        episodic_life=a.episodic_life,
        reward_clip=a.reward_clip,
        seed=cfg.seed,
    )
    return options.for_evaluation(seed=cfg.seed + 0x5EED) if evaluation else options


def eval_epsilon(cfg: Config, tasks: TaskSet) -> float:
    """Exploration while evaluating: ``atari.eval_epsilon`` for Atari, else ``train.eval_epsilon``."""
    return cfg.atari.eval_epsilon if tasks.is_atari else cfg.train.eval_epsilon


def build_agent(cfg: Config) -> DQNAgent | PQNAgent:
    """The system ``cfg.system`` names, over the config's tasks."""
    d, t = cfg.dqn, cfg.train
    tasks = TaskSet(task_specs(cfg), t.num_envs, atari=atari_options(cfg))
    if cfg.system == "pqn":
        p = cfg.pqn
        return PQNAgent(build_learner(cfg, tasks), tasks, schedule(cfg), p.rollout_length, p.epochs, p.minibatches, p.q_lambda)
    mesh = make_mesh(cfg.multitask.mode, tasks.num_tasks, d.batch_size)
    buffer = replay
    if tasks.is_atari:  # frames stored once; see jaxdqn/replay/pixels.py
        buffer = PixelReplay(t.num_envs, stack=cfg.atari.stack_num, frame_channels=tasks.atari.frame_channels)
    target = TargetUpdate(d.target_update, d.target_update_period * steps_per_round_factor(cfg), d.polyak_tau)
    return DQNAgent(build_learner(cfg, tasks), tasks, schedule(cfg), mesh, buffer=buffer, target=target)


def build_eval_tasks(cfg: Config) -> TaskSet:
    """Evaluation envs; for Atari a separate pool with the evaluation protocol's settings."""
    return TaskSet(task_specs(cfg), cfg.train.eval_episodes, atari=atari_options(cfg, evaluation=True))
