"""The config schema: one frozen dataclass per section, each field with its default, what it allows and its help.

``field(default, low=, high=, choices=, help=)`` records what a key allows in the field's metadata;
:mod:`jaxdqn.config.checker` checks values against it and :func:`describe_keys` prints it for ``--help``.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any


def field(default, *, low=None, high=None, low_open=False, choices=None, help=""):
    meta = {"low": low, "high": high, "low_open": low_open, "choices": choices, "help": help}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    env_id: str = field("CartPole-v1", help="environment id (gymnax, pgx MinAtar such as minatar-breakout, or envpool Atari)")
    env_params: dict = field({}, help="overrides of the environment's parameters, e.g. {length: 0.8}")
    name: str = field("", help="label in metrics and plots (default: env_id)")
    weight: float = field(1.0, low=0.0, help="w_i in the hard-sharing loss sum_i w_i L_i")
    seed_offset: int = field(-1, low=-1, help="this task's RNG stream is seed + seed_offset (default: its index)")
    reward_scale: float = field(
        1.0, low=0.0, low_open=True, help="the learner's rewards are the env's times this (episode returns in metrics stay raw)"
    )


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    torso: str = field("mlp", choices=("mlp", "minatar_cnn", "nature_cnn"), help="feature extractor")
    hidden_sizes: tuple[int, ...] = field((120, 84), help="MLP layer widths")
    dueling: bool = field(False, help="dueling head: V(s) + A(s,a) - mean_a A(s,a)")
    cnn_channels: int = field(16, low=1, help="minatar_cnn only: channels of its 3x3 convolution (Young & Tian: 16)")
    cnn_hidden: int = field(128, low=1, help="minatar_cnn only: units of its dense layer (Young & Tian: 128)")
    layer_norm: bool = field(False, help="LayerNorm on every hidden layer's pre-activations (as PQN uses)")
    task_input_layers: bool = field(
        False,
        help="hard sharing: the torso's first layer is per task and reads only the task's own channels or features "
        "(D'Eramo et al. 2020); the rest of the torso is shared",
    )
    task_conditioning: str = field(
        "none",
        choices=("none", "embedding", "film"),
        help="a learned per-task vector added to the torso's last hidden layer (embedding), or a per-task scale and shift of it (film)",
    )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam with gradient clipping; shared by the dqn: and distill: sections."""

    learning_rate: float = field(2.5e-4, low=0.0, low_open=True, help="Adam step size")
    lr_decay: bool = field(False, help="decay the learning rate linearly to 0 by the end of training")
    adam_eps: float = field(1e-8, low=0.0, low_open=True, help="Adam epsilon")
    max_grad_norm: float = field(10.0, low=0.0, low_open=True, help="gradient clipping by global norm")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Per-task replay; shared by the dqn: and distill: sections."""

    batch_size: int = field(128, low=1, help="replay items per task per gradient step")
    replay_capacity: int = field(10_000, low=1, help="replay items kept per task")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """When learning starts and how often it runs; shared by the dqn: and distill: sections."""

    learning_starts: int = field(10_000, low=0, help="env steps per task before the first update")
    update_every: int = field(10, low=1, help="env steps per task (all parallel envs) between rounds of updates")
    updates_per_round: int = field(1, low=1, help="gradient steps per round")


LEARNING_SECTIONS = (OptimizerConfig, ReplayConfig, ScheduleConfig)


def with_defaults(cls: type, name: str, **defaults) -> type:
    """``cls`` (named ``name``) with other default values: the same keys, checks and help."""
    hints = typing.get_type_hints(cls)
    own = []
    for f in dataclasses.fields(cls):
        if f.name in defaults:
            own.append((f.name, hints[f.name], dataclasses.field(default=defaults.pop(f.name), metadata=f.metadata)))
    if defaults:
        raise TypeError(f"{cls.__name__} has no fields {sorted(defaults)}")
    new = dataclasses.make_dataclass(name, own, bases=(cls,), frozen=True)
    new.__module__, new.__doc__ = cls.__module__, cls.__doc__
    return new


def learning_values(section: Any) -> dict:
    """The optimizer, replay and schedule values of a section that has them (dqn:, distill:)."""
    return {f.name: getattr(section, f.name) for cls in LEARNING_SECTIONS for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class DQNConfig(ScheduleConfig, ReplayConfig, OptimizerConfig):
    gamma: float = field(0.99, low=0.0, high=1.0, help="discount")
    double: bool = field(False, help="Double DQN target (online net selects, target net evaluates)")
    loss: str = field(
        "huber",
        choices=("huber", "squared", "hl_gauss"),
        help="loss on the TD error; hl_gauss: cross-entropy against the target smoothed into a histogram "
        "over dqn.hl_gauss_bins bins of [hl_gauss_min, hl_gauss_max] (Farebrother et al. 2024)",
    )
    hl_gauss_bins: int = field(51, low=2, help="hl_gauss: bins of the value support")
    hl_gauss_min: float = field(-10.0, help="hl_gauss: lower end of the value support (targets below are clipped)")
    hl_gauss_max: float = field(10.0, help="hl_gauss: upper end of the value support (targets above are clipped)")
    hl_gauss_sigma: float = field(0.75, low=0.0, low_open=True, help="hl_gauss: the Gaussian's width, in bin widths")
    huber_delta: float = field(1.0, low=0.0, low_open=True, help="Huber threshold")
    target_update: str = field("hard", choices=("hard", "polyak"), help="how the target network follows")
    target_update_period: int = field(500, low=1, help="hard copy every this many gradient steps")
    polyak_tau: float = field(0.005, low=0.0, high=1.0, low_open=True, help="target <- tau*online + (1-tau)*target")
    epsilon_start: float = field(1.0, low=0.0, high=1.0, help="exploration at step 0")
    epsilon_end: float = field(0.05, low=0.0, high=1.0, help="exploration after the decay")
    epsilon_decay_steps: int = field(250_000, low=1, help="env steps per task of the linear decay")
    popart: bool = field(False, help="PopArt: per-task normalisation of values, with outputs preserved when statistics change")
    popart_step_size: float = field(
        3e-4,
        low=0.0,
        high=1.0,
        low_open=True,
        help="PopArt: each TD target moves its task's mean and second moment this far (rlax.art); batch_size * it must be <= 1",
    )
    popart_scale_lb: float = field(1e-4, low=0.0, low_open=True, help="PopArt: lower bound of each task's sigma")
    popart_scale_ub: float = field(1e6, low=0.0, low_open=True, help="PopArt: upper bound of each task's sigma")


@dataclasses.dataclass(frozen=True)
class PQNConfig:
    """PQN (Gallici et al. 2024): no replay, no target network; Q(lambda) targets over a short
    rollout of every env, then epochs of minibatch steps on it. It reads dqn.gamma, dqn.loss,
    the optimizer keys and the epsilon schedule of the dqn section."""

    rollout_length: int = field(32, low=1, help="pqn: env steps of every env per rollout")
    epochs: int = field(2, low=1, help="pqn: passes over each rollout")
    minibatches: int = field(32, low=1, help="pqn: minibatches per epoch (they split num_envs x rollout_length)")
    q_lambda: float = field(0.65, low=0.0, high=1.0, help="pqn: lambda of the Q(lambda) targets")
    optimizer: str = field("radam", choices=("radam", "adam"), help="pqn: RAdam (as PQN) or Adam, after clipping")


@dataclasses.dataclass(frozen=True)
class MultitaskConfig:
    mode: str = field("independent", choices=("independent", "hard", "soft"), help="how tasks share parameters")
    hard_heads: str = field(
        "per_task", choices=("per_task", "shared"), help="hard sharing: one head per task, or one masked head"
    )
    soft_lambda: float = field(0.0, low=0.0, help="soft sharing: lambda in lambda*sum_{i!=j}||theta_i-theta_j||^2")
    soft_penalty_on: str = field("all", choices=("all", "torso"), help="soft sharing: which parameters are pulled together")
    gradient_surgery: str = field(
        "none",
        choices=("none", "pcgrad"),
        help="hard sharing: pcgrad projects each task's gradient of the shared parameters off the others' it conflicts with",
    )
    hard_steps_per_round: str = field(
        "one",
        choices=("one", "tasks"),
        help="hard sharing: one gradient step per round on every task's batch (compute-matched), or T of them "
        "(tasks), so the shared torso takes as many optimizer steps as each independent network; the target "
        "period is scaled by T to keep its env steps",
    )
    task_batching: str = field(
        "auto",
        choices=("auto", "vmap", "unroll"),
        help="how networks run over the task axis; auto: the plain network for one task, vmap for several",
    )


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging (the ``wandb`` extra); off unless ``project`` is set."""

    project: str = field("", help="W&B project; empty: no W&B logging (wandb is then never imported)")
    entity: str = field("", help="W&B entity (team or user; empty: your default)")
    mode: str = field(
        "online", choices=("online", "offline"), help="offline: write the run locally, sync later with `wandb sync`"
    )
    tags: tuple[str, ...] = field((), help="W&B tags of the run")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    total_env_steps: int = field(500_000, low=1, help="env steps per task")
    num_envs: int = field(10, low=1, help="parallel environments per task")
    log_every: int = field(10_000, low=1, help="env steps per task between host visits (metrics, progress)")
    eval_every: int = field(100_000, low=0, help="env steps per task between evaluations (0: only at the end)")
    eval_episodes: int = field(10, low=1, help="episodes per task per evaluation")
    eval_epsilon: float = field(0.0, low=0.0, high=1.0, help="exploration while evaluating (0: greedy)")
    checkpoint_every: int = field(100_000, low=0, help="env steps per task between checkpoints (0: only at the end)")
    keep_checkpoints: int = field(3, low=1, help="how many recent checkpoints to keep")
    output_dir: str = field("runs", help="parent folder of run directories")
    tensorboard: bool = field(True, help="also write TensorBoard event files")
    wandb: WandbConfig = field(WandbConfig())
    progress: bool = field(True, help="show a progress bar")
    seeds: tuple[int, ...] = field(
        (),
        help="run these seeds together, vmapped in one compiled call, each written to RUN_DIR/seed_S as a run of "
        "its own (empty: one run with the top-level seed)",
    )


@dataclasses.dataclass(frozen=True)
class AtariConfig:
    """envpool settings of every Atari task (env ids like Pong-v5); see docs/atari.md.

    The config's ``atari:`` section and what ``jaxdqn.envs.envpool_env`` builds its pools from:
    one struct, so a setting cannot be lost between the two.
    """

    stepping: str = field(
        "auto",
        choices=("auto", "host", "xla"),
        help="host: send/recv overlapped with the update; xla: envpool handles inside the compiled step; "
        "auto: the faster one on this backend (benchmarks/bench_atari.py)",
    )
    num_threads: int = field(0, low=0, help="envpool worker threads per task (0: one per environment)")
    img_height: int = field(84, low=1, help="frame height after resizing")
    img_width: int = field(84, low=1, help="frame width after resizing")
    gray_scale: bool = field(True, help="grey frames (false: RGB, 3 channels per frame)")
    frame_skip: int = field(4, low=1, help="emulator frames per agent step (the action repeats; max over the last two)")
    stack_num: int = field(4, low=1, help="frames stacked into one observation")
    noop_max: int = field(30, low=1, help="episodes start after a random number of no-ops, up to this many")
    fire_reset: bool = field(True, help="press FIRE after a reset in games that have it")
    repeat_action_probability: float = field(
        0.25, low=0.0, high=1.0, help="sticky actions: the emulator repeats the previous action with this probability"
    )
    max_episode_steps: int = field(
        27_000, low=1, help="episode cap in agent steps (27,000 = 108,000 frames); truncation bootstraps"
    )
    full_action_space: bool = field(False, help="all 18 actions in every game (needed when tasks share one head)")
    episodic_life: bool = field(True, help="training only: a lost life ends the episode for the TD target (no bootstrap)")
    reward_clip: bool = field(True, help="training only: rewards clipped to their sign for the learner")
    eval_epsilon: float = field(
        0.05, low=0.0, high=1.0, help="exploration while evaluating Atari tasks (train.eval_epsilon is for the others)"
    )

    def for_evaluation(self) -> "AtariConfig":
        """The evaluation protocol's pools: raw rewards, and lives do not end anything."""
        return dataclasses.replace(self, episodic_life=False, reward_clip=False)

    @property
    def frame_channels(self) -> int:
        return 1 if self.gray_scale else 3

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.stack_num * self.frame_channels, self.img_height, self.img_width)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = field("run", help="run name; the run directory is OUTPUT_DIR/NAME-TIMESTAMP")
    seed: int = field(0, low=0, help="random seed")
    system: str = field("dqn", choices=("dqn", "pqn"), help="dqn: replay and a target network; pqn: replay-free Q(lambda)")
    tasks: tuple[TaskConfig, ...] = field((TaskConfig(),), help="the tasks trained together")
    network: NetworkConfig = field(NetworkConfig())
    dqn: DQNConfig = field(DQNConfig())
    pqn: PQNConfig = field(PQNConfig())
    multitask: MultitaskConfig = field(MultitaskConfig())
    train: TrainConfig = field(TrainConfig())
    atari: AtariConfig = field(AtariConfig())

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)


def describe_keys(cls=Config, prefix: str = "") -> list[str]:
    """One line per key with its default and what it allows, for ``--help``."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            lines.extend(describe_keys(kind, key + "."))
            continue
        if typing.get_origin(kind) is tuple and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            lines.extend(describe_keys(typing.get_args(kind)[0], key + ".N."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {key} = {default!r}: {f.metadata.get('help', '')}")
    return lines
