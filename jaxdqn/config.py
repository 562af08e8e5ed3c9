"""Run configuration: YAML -> frozen dataclasses, checked key by key.

Every field declares what it allows (a range or a list of choices) in its
metadata. Loading reports the first problem as one sentence naming the key,
the value and what is allowed. ``key.sub=value`` overrides from the command
line are applied to the raw mapping before checking, so they get the same
checks as the file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from jaxdqn.errors import ConfigError


def _field(default, *, low=None, high=None, low_open=False, choices=None, help=""):
    meta = {"low": low, "high": high, "low_open": low_open, "choices": choices, "help": help}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    env_id: str = _field("CartPole-v1", help="environment id (gymnax, pgx MinAtar such as minatar-breakout, or envpool Atari)")
    env_params: dict = _field({}, help="overrides of the environment's parameters, e.g. {length: 0.8}")
    name: str = _field("", help="label in metrics and plots (default: env_id)")
    weight: float = _field(1.0, low=0.0, help="w_i in the hard-sharing loss sum_i w_i L_i")
    seed_offset: int = _field(-1, low=-1, help="this task's RNG stream is seed + seed_offset (default: its index)")
    reward_scale: float = _field(
        1.0, low=0.0, low_open=True, help="the learner's rewards are the env's times this (episode returns in metrics stay raw)"
    )


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    torso: str = _field("mlp", choices=("mlp", "minatar_cnn", "nature_cnn"), help="feature extractor")
    hidden_sizes: tuple[int, ...] = _field((120, 84), help="MLP layer widths")
    dueling: bool = _field(False, help="dueling head: V(s) + A(s,a) - mean_a A(s,a)")
    cnn_channels: int = _field(16, low=1, help="minatar_cnn only: channels of its 3x3 convolution (Young & Tian: 16)")
    cnn_hidden: int = _field(128, low=1, help="minatar_cnn only: units of its dense layer (Young & Tian: 128)")
    layer_norm: bool = _field(False, help="LayerNorm on every hidden layer's pre-activations (as PQN uses)")
    task_input_layers: bool = _field(
        False,
        help="hard sharing: the torso's first layer is per task and reads only the task's own channels or features "
        "(D'Eramo et al. 2020); the rest of the torso is shared",
    )
    task_conditioning: str = _field(
        "none",
        choices=("none", "embedding", "film"),
        help="a learned per-task vector added to the torso's last hidden layer (embedding), or a per-task scale and shift of it (film)",
    )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam with gradient clipping; shared by the dqn: and distill: sections."""

    learning_rate: float = _field(2.5e-4, low=0.0, low_open=True, help="Adam step size")
    lr_decay: bool = _field(False, help="decay the learning rate linearly to 0 by the end of training")
    adam_eps: float = _field(1e-8, low=0.0, low_open=True, help="Adam epsilon")
    max_grad_norm: float = _field(10.0, low=0.0, low_open=True, help="gradient clipping by global norm")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Per-task replay; shared by the dqn: and distill: sections."""

    batch_size: int = _field(128, low=1, help="replay items per task per gradient step")
    replay_capacity: int = _field(10_000, low=1, help="replay items kept per task")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """When learning starts and how often it runs; shared by the dqn: and distill: sections."""

    learning_starts: int = _field(10_000, low=0, help="env steps per task before the first update")
    update_every: int = _field(10, low=1, help="env steps per task (all parallel envs) between rounds of updates")
    updates_per_round: int = _field(1, low=1, help="gradient steps per round")


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
    gamma: float = _field(0.99, low=0.0, high=1.0, help="discount")
    double: bool = _field(False, help="Double DQN target (online net selects, target net evaluates)")
    loss: str = _field(
        "huber",
        choices=("huber", "squared", "hl_gauss"),
        help="loss on the TD error; hl_gauss: cross-entropy against the target smoothed into a histogram "
        "over dqn.hl_gauss_bins bins of [hl_gauss_min, hl_gauss_max] (Farebrother et al. 2024)",
    )
    hl_gauss_bins: int = _field(51, low=2, help="hl_gauss: bins of the value support")
    hl_gauss_min: float = _field(-10.0, help="hl_gauss: lower end of the value support (targets below are clipped)")
    hl_gauss_max: float = _field(10.0, help="hl_gauss: upper end of the value support (targets above are clipped)")
    hl_gauss_sigma: float = _field(0.75, low=0.0, low_open=True, help="hl_gauss: the Gaussian's width, in bin widths")
    huber_delta: float = _field(1.0, low=0.0, low_open=True, help="Huber threshold")
    target_update: str = _field("hard", choices=("hard", "polyak"), help="how the target network follows")
    target_update_period: int = _field(500, low=1, help="hard copy every this many gradient steps")
    polyak_tau: float = _field(0.005, low=0.0, high=1.0, low_open=True, help="target <- tau*online + (1-tau)*target")
    epsilon_start: float = _field(1.0, low=0.0, high=1.0, help="exploration at step 0")
    epsilon_end: float = _field(0.05, low=0.0, high=1.0, help="exploration after the decay")
    epsilon_decay_steps: int = _field(250_000, low=1, help="env steps per task of the linear decay")
    popart: bool = _field(False, help="PopArt: per-task normalisation of values, with outputs preserved when statistics change")
    popart_step_size: float = _field(
        3e-4,
        low=0.0,
        high=1.0,
        low_open=True,
        help="PopArt: each TD target moves its task's mean and second moment this far (rlax.art); batch_size * it must be <= 1",
    )
    popart_scale_lb: float = _field(1e-4, low=0.0, low_open=True, help="PopArt: lower bound of each task's sigma")
    popart_scale_ub: float = _field(1e6, low=0.0, low_open=True, help="PopArt: upper bound of each task's sigma")


@dataclasses.dataclass(frozen=True)
class PQNConfig:
    """PQN (Gallici et al. 2024): no replay, no target network; Q(lambda) targets over a short
    rollout of every env, then epochs of minibatch steps on it. It reads dqn.gamma, dqn.loss,
    the optimizer keys and the epsilon schedule of the dqn section."""

    rollout_length: int = _field(32, low=1, help="pqn: env steps of every env per rollout")
    epochs: int = _field(2, low=1, help="pqn: passes over each rollout")
    minibatches: int = _field(32, low=1, help="pqn: minibatches per epoch (they split num_envs x rollout_length)")
    q_lambda: float = _field(0.65, low=0.0, high=1.0, help="pqn: lambda of the Q(lambda) targets")
    optimizer: str = _field("radam", choices=("radam", "adam"), help="pqn: RAdam (as PQN) or Adam, after clipping")


@dataclasses.dataclass(frozen=True)
class MultitaskConfig:
    mode: str = _field("independent", choices=("independent", "hard", "soft"), help="how tasks share parameters")
    hard_heads: str = _field(
        "per_task", choices=("per_task", "shared"), help="hard sharing: one head per task, or one masked head"
    )
    soft_lambda: float = _field(0.0, low=0.0, help="soft sharing: lambda in lambda*sum_{i!=j}||theta_i-theta_j||^2")
    soft_penalty_on: str = _field("all", choices=("all", "torso"), help="soft sharing: which parameters are pulled together")
    gradient_surgery: str = _field(
        "none",
        choices=("none", "pcgrad"),
        help="hard sharing: pcgrad projects each task's gradient of the shared parameters off the others' it conflicts with",
    )
    hard_steps_per_round: str = _field(
        "one",
        choices=("one", "tasks"),
        help="hard sharing: one gradient step per round on every task's batch (compute-matched), or T of them "
        "(tasks), so the shared torso takes as many optimizer steps as each independent network; the target "
        "period is scaled by T to keep its env steps",
    )
    task_batching: str = _field(
        "auto",
        choices=("auto", "vmap", "unroll"),
        help="how networks run over the task axis; auto: the plain network for one task, vmap for several",
    )


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging (the ``wandb`` extra); off unless ``project`` is set."""

    project: str = _field("", help="W&B project; empty: no W&B logging (wandb is then never imported)")
    entity: str = _field("", help="W&B entity (team or user; empty: your default)")
    mode: str = _field(
        "online", choices=("online", "offline"), help="offline: write the run locally, sync later with `wandb sync`"
    )
    tags: tuple[str, ...] = _field((), help="W&B tags of the run")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    total_env_steps: int = _field(500_000, low=1, help="env steps per task")
    num_envs: int = _field(10, low=1, help="parallel environments per task")
    log_every: int = _field(10_000, low=1, help="env steps per task between host visits (metrics, progress)")
    eval_every: int = _field(100_000, low=0, help="env steps per task between evaluations (0: only at the end)")
    eval_episodes: int = _field(10, low=1, help="episodes per task per evaluation")
    eval_epsilon: float = _field(0.0, low=0.0, high=1.0, help="exploration while evaluating (0: greedy)")
    checkpoint_every: int = _field(100_000, low=0, help="env steps per task between checkpoints (0: only at the end)")
    keep_checkpoints: int = _field(3, low=1, help="how many recent checkpoints to keep")
    output_dir: str = _field("runs", help="parent folder of run directories")
    tensorboard: bool = _field(True, help="also write TensorBoard event files")
    wandb: WandbConfig = _field(WandbConfig())
    progress: bool = _field(True, help="show a progress bar")
    seeds: tuple[int, ...] = _field(
        (),
        help="run these seeds together, vmapped in one compiled call, each written to RUN_DIR/seed_S as a run of "
        "its own (empty: one run with the top-level seed)",
    )


@dataclasses.dataclass(frozen=True)
class AtariConfig:
    """envpool settings of every Atari task (env ids like Pong-v5); see docs/atari.md."""

    stepping: str = _field(
        "auto",
        choices=("auto", "host", "xla"),
        help="host: send/recv overlapped with the update; xla: envpool handles inside the compiled step; "
        "auto: the faster one on this backend (benchmarks/bench_atari.py)",
    )
    num_threads: int = _field(0, low=0, help="envpool worker threads per task (0: one per environment)")
    img_height: int = _field(84, low=1, help="frame height after resizing")
    img_width: int = _field(84, low=1, help="frame width after resizing")
    gray_scale: bool = _field(True, help="grey frames (false: RGB, 3 channels per frame)")
    frame_skip: int = _field(4, low=1, help="emulator frames per agent step (the action repeats; max over the last two)")
    stack_num: int = _field(4, low=1, help="frames stacked into one observation")
    noop_max: int = _field(30, low=1, help="episodes start after a random number of no-ops, up to this many")
    fire_reset: bool = _field(True, help="press FIRE after a reset in games that have it")
    repeat_action_probability: float = _field(
        0.25, low=0.0, high=1.0, help="sticky actions: the emulator repeats the previous action with this probability"
    )
    max_episode_steps: int = _field(
        27_000, low=1, help="episode cap in agent steps (27,000 = 108,000 frames); truncation bootstraps"
    )
    full_action_space: bool = _field(False, help="all 18 actions in every game (needed when tasks share one head)")
    episodic_life: bool = _field(True, help="training only: a lost life ends the episode for the TD target (no bootstrap)")
    reward_clip: bool = _field(True, help="training only: rewards clipped to their sign for the learner")
    eval_epsilon: float = _field(
        0.05, low=0.0, high=1.0, help="exploration while evaluating Atari tasks (train.eval_epsilon is for the others)"
    )


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = _field("run", help="run name; the run directory is OUTPUT_DIR/NAME-TIMESTAMP")
    seed: int = _field(0, low=0, help="random seed")
    system: str = _field("dqn", choices=("dqn", "pqn"), help="dqn: replay and a target network; pqn: replay-free Q(lambda)")
    tasks: tuple[TaskConfig, ...] = _field((TaskConfig(),), help="the tasks trained together")
    network: NetworkConfig = _field(NetworkConfig())
    dqn: DQNConfig = _field(DQNConfig())
    pqn: PQNConfig = _field(PQNConfig())
    multitask: MultitaskConfig = _field(MultitaskConfig())
    train: TrainConfig = _field(TrainConfig())
    atari: AtariConfig = _field(AtariConfig())

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)


def _describe_allowed(f: dataclasses.Field, kind: type) -> str:
    meta = f.metadata
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"{noun} in {'(' if meta.get('low_open') else '['}{low}, {high}]"
    if low is not None:
        return f"{noun} {'>' if meta.get('low_open') else '>='} {low}"
    return noun


def _check_scalar(value: Any, kind: type, f: dataclasses.Field, key: str) -> Any:
    allowed = _describe_allowed(f, kind)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"config key '{key}': got {value!r} ({type(value).__name__}); allowed: {allowed}")
    if kind is float and not math.isfinite(value):  # nan passes every range comparison
        raise ConfigError(f"config key '{key}': got {value!r}; allowed: a finite number ({allowed})")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"config key '{key}': got {value!r}; allowed: {allowed}")
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    if too_low or (high is not None and value > high):
        raise ConfigError(f"config key '{key}': got {value!r}; allowed: {allowed}")
    return value


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"config key '{where}{unknown[0]}': unknown key; allowed keys here: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _convert(hints[name], value, fields[name], key)
    return cls(**values)


def _convert(kind, value, f: dataclasses.Field, key: str):
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, key)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': got {value!r}; allowed: a list")
        if dataclasses.is_dataclass(item_kind):
            return tuple(_build(item_kind, v, f"{key}[{i}]") for i, v in enumerate(value))
        return tuple(_check_scalar(v, item_kind, f, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': got {value!r}; allowed: a mapping")
        _check_finite_entries(value, key)
        return dict(value)
    return _check_scalar(value, kind, f, key)


def _check_finite_entries(mapping: dict, key: str) -> None:
    """Free-form mappings (env params) get no per-key range, but nan and inf are never meant."""
    for name, value in mapping.items():
        if isinstance(value, dict):
            _check_finite_entries(value, f"{key}.{name}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}.{name}': got {value!r}; allowed: a finite number")


def _check_consistency(cfg: Config) -> None:
    from jaxdqn.envs.taskset import check_env_id

    for i, task in enumerate(cfg.tasks):
        check_env_id(task.env_id, f"tasks[{i}].env_id")
    if not cfg.tasks:
        raise ConfigError("config key 'tasks': got an empty list; allowed: one or more tasks")
    from jaxdqn.envs import envpool_env, known_env_ids

    atari = [envpool_env.is_atari_id(task.env_id) for task in cfg.tasks]
    if any(atari) and not all(atari):
        i = atari.index(not atari[0])
        kind = "an Atari game (envpool)" if atari[i] else "a gymnax environment"
        same_kind = [e for e in known_env_ids() if envpool_env.is_atari_id(e) == atari[0]]
        raise ConfigError(
            f"config key 'tasks[{i}].env_id': got {cfg.tasks[i].env_id!r}, {kind}; the tasks of one run are all "
            f"Atari games or all gymnax environments, and tasks[0] is {cfg.tasks[0].env_id!r}; "
            f"allowed here: {', '.join(same_kind)}"
        )
    from jaxdqn.envs import gymnax_env

    from jaxdqn.envs import pgx_env

    for i, task in enumerate(cfg.tasks):
        if task.env_id in gymnax_env.registered_ids():
            gymnax_env.make_params(task.env_id, task.env_params, key=f"tasks[{i}].env_params")
        elif pgx_env.is_pgx_id(task.env_id):
            pgx_env.make_params(task.env_id, task.env_params, key=f"tasks[{i}].env_params")
    check_train(cfg.train)
    if cfg.train.seeds and any(atari):
        raise ConfigError(
            f"config key 'train.seeds': got {list(cfg.train.seeds)}; allowed with gymnax and MinAtar tasks only: "
            "envpool's Atari pools cannot be copied per seed (run one seed per process instead)"
        )
    if cfg.system == "dqn":
        check_update_every(cfg.dqn.update_every, "dqn", cfg.train.num_envs)
        check_batch_fits(cfg.dqn, "dqn", "transitions")
    if cfg.dqn.epsilon_end > cfg.dqn.epsilon_start:
        raise ConfigError(
            f"config key 'dqn.epsilon_end': got {cfg.dqn.epsilon_end}; allowed: at most dqn.epsilon_start ({cfg.dqn.epsilon_start})"
        )
    m, d = cfg.multitask, cfg.dqn
    if m.gradient_surgery != "none" and m.mode != "hard":
        raise ConfigError(
            f"config key 'multitask.gradient_surgery': got {m.gradient_surgery!r}; allowed: 'none' unless "
            f"multitask.mode is 'hard' (got {m.mode!r})"
        )
    if d.popart and m.mode == "hard" and m.hard_heads == "shared":
        raise ConfigError(
            "config key 'dqn.popart': got True; allowed: false when multitask.hard_heads is 'shared' "
            "(one head cannot keep per-task statistics; use hard_heads: per_task)"
        )
    if cfg.system == "dqn" and d.popart and d.popart_step_size * d.batch_size > 1.0:
        raise ConfigError(
            f"config key 'dqn.popart_step_size': got {d.popart_step_size}; allowed: at most 1 / dqn.batch_size "
            f"({1.0 / d.batch_size:.3g}), since every target of a batch moves the statistics this far"
        )
    if d.popart and d.loss == "hl_gauss":
        raise ConfigError(
            "config key 'dqn.popart': got True; allowed: false with dqn.loss 'hl_gauss' (PopArt normalises regressed values)"
        )
    if d.loss == "hl_gauss" and d.hl_gauss_min >= d.hl_gauss_max:
        raise ConfigError(
            f"config key 'dqn.hl_gauss_min': got {d.hl_gauss_min}; allowed: below dqn.hl_gauss_max ({d.hl_gauss_max})"
        )
    if d.popart and d.popart_scale_lb > d.popart_scale_ub:
        raise ConfigError(
            f"config key 'dqn.popart_scale_lb': got {d.popart_scale_lb}; allowed: at most dqn.popart_scale_ub ({d.popart_scale_ub})"
        )
    shared_head = cfg.multitask.mode == "hard" and cfg.multitask.hard_heads == "shared"
    if shared_head and cfg.num_tasks > 1 and not cfg.atari.full_action_space:
        from jaxdqn.envs import envpool_env

        if any(envpool_env.is_atari_id(task.env_id) for task in cfg.tasks):
            raise ConfigError(
                "config key 'atari.full_action_space': got False; allowed: true when Atari tasks share one head "
                "(multitask.hard_heads: shared), so that action i means the same button in every game"
            )


def check_train(t: TrainConfig, seeds_allowed: bool = True) -> None:
    """The train: section's intervals fit together (``seeds_allowed``: whether this kind of run takes ``train.seeds``)."""
    if t.seeds and not seeds_allowed:
        raise ConfigError(
            f"config key 'train.seeds': got {list(t.seeds)}; allowed: [] (distillation and transfer runs take one seed)"
        )
    if len(set(t.seeds)) != len(t.seeds):
        raise ConfigError(f"config key 'train.seeds': got {list(t.seeds)}; allowed: distinct seeds")
    for key in ("log_every", "total_env_steps"):
        value = getattr(t, key)
        if value % t.num_envs:
            raise ConfigError(f"config key 'train.{key}': got {value}; allowed: a multiple of train.num_envs ({t.num_envs})")
    for key in ("eval_every", "checkpoint_every"):
        value = getattr(t, key)
        if value % t.log_every:
            raise ConfigError(
                f"config key 'train.{key}': got {value}; allowed: 0 or a multiple of train.log_every ({t.log_every})"
            )


def check_batch_fits(section: ReplayConfig, name: str, items: str) -> None:
    if section.batch_size > section.replay_capacity:
        raise ConfigError(
            f"config key '{name}.batch_size': got {section.batch_size}; allowed: at most {name}.replay_capacity "
            f"({section.replay_capacity}), the {items} a task's replay holds"
        )


def check_update_every(update_every: int, section: str, num_envs: int) -> None:
    if update_every % num_envs and num_envs % update_every:
        raise ConfigError(
            f"config key '{section}.update_every': got {update_every}; allowed: a multiple or a divisor of train.num_envs ({num_envs})"
        )


def no_effect(key: str, value: Any, where: str) -> ConfigError:
    return ConfigError(f"config key '{key}': got {value!r}, which has no effect {where}; remove it")


def check_network(n: NetworkConfig, prefix: str = "network") -> None:
    """Width keys belong to one torso: ``hidden_sizes`` to the MLP, ``cnn_*`` to the MinAtar CNN."""
    defaults = NetworkConfig()
    if n.torso != "mlp" and tuple(n.hidden_sizes) != defaults.hidden_sizes:
        raise no_effect(f"{prefix}.hidden_sizes", list(n.hidden_sizes), f"with {prefix}.torso: {n.torso} (only with mlp)")
    for key in ("cnn_channels", "cnn_hidden"):
        value = getattr(n, key)
        if n.torso != "minatar_cnn" and value != getattr(defaults, key):
            raise ConfigError(
                f"config key '{prefix}.{key}': got {value} with {prefix}.torso {n.torso!r}; "
                f"allowed: only with {prefix}.torso 'minatar_cnn' (leave it out for other torsos)"
            )


def _check_effective(cfg: Config) -> None:
    """Keys set away from their defaults where the chosen mode or torso ignores them."""
    m, default = cfg.multitask, MultitaskConfig()
    if m.mode != "hard":
        where = f"in multitask.mode: {m.mode} (only in hard)"
        for key in ("hard_heads", "hard_steps_per_round"):
            if getattr(m, key) != getattr(default, key):
                raise no_effect(f"multitask.{key}", getattr(m, key), where)
        if cfg.network.task_input_layers:
            raise no_effect("network.task_input_layers", True, where + "; every layer is already per task")
        for i, task in enumerate(cfg.tasks):
            if task.weight != TaskConfig().weight:
                raise no_effect(f"tasks[{i}].weight", task.weight, where)
    if m.mode != "soft":
        for key in ("soft_lambda", "soft_penalty_on"):
            if getattr(m, key) != getattr(default, key):
                raise no_effect(f"multitask.{key}", getattr(m, key), f"in multitask.mode: {m.mode} (only in soft)")
    if cfg.dqn.loss != "hl_gauss":
        for key in ("hl_gauss_bins", "hl_gauss_min", "hl_gauss_max", "hl_gauss_sigma"):
            if getattr(cfg.dqn, key) != getattr(DQNConfig(), key):
                raise no_effect(f"dqn.{key}", getattr(cfg.dqn, key), f"with dqn.loss: {cfg.dqn.loss} (only with hl_gauss)")
    if not cfg.dqn.popart:
        for key in ("popart_step_size", "popart_scale_lb", "popart_scale_ub"):
            if getattr(cfg.dqn, key) != getattr(DQNConfig(), key):
                raise no_effect(f"dqn.{key}", getattr(cfg.dqn, key), "with dqn.popart: false (only with PopArt)")
    _check_system_keys(cfg)
    check_network(cfg.network)


# dqn keys that only DQN's replay and target network read
DQN_ONLY_KEYS = (
    "batch_size",
    "replay_capacity",
    "learning_starts",
    "update_every",
    "updates_per_round",
    "double",
    "target_update",
    "target_update_period",
    "polyak_tau",
)


def _check_system_keys(cfg: Config) -> None:
    if cfg.system == "dqn":
        for f in dataclasses.fields(PQNConfig):
            if getattr(cfg.pqn, f.name) != f.default:
                raise no_effect(f"pqn.{f.name}", getattr(cfg.pqn, f.name), "with system: dqn (only with pqn)")
        return
    for key in DQN_ONLY_KEYS:
        if getattr(cfg.dqn, key) != getattr(DQNConfig(), key):
            raise no_effect(f"dqn.{key}", getattr(cfg.dqn, key), "with system: pqn (it has no replay and no target network)")
    if cfg.multitask.hard_steps_per_round != MultitaskConfig().hard_steps_per_round:
        raise no_effect("multitask.hard_steps_per_round", cfg.multitask.hard_steps_per_round, "with system: pqn")


def pqn_minibatch_size(cfg: Config) -> int:
    """Transitions per task in one PQN minibatch: ``num_envs * rollout_length / minibatches``."""
    return cfg.train.num_envs * cfg.pqn.rollout_length // cfg.pqn.minibatches


def _check_pqn(cfg: Config) -> None:
    if cfg.system != "pqn":
        return
    p, rollout = cfg.pqn, cfg.train.num_envs * cfg.pqn.rollout_length
    if rollout % p.minibatches:
        raise ConfigError(
            f"config key 'pqn.minibatches': got {p.minibatches}; allowed: a divisor of train.num_envs x pqn.rollout_length "
            f"({cfg.train.num_envs} x {p.rollout_length} = {rollout}), the transitions of one rollout"
        )
    if cfg.dqn.popart and cfg.dqn.popart_step_size * pqn_minibatch_size(cfg) > 1.0:
        raise ConfigError(
            f"config key 'dqn.popart_step_size': got {cfg.dqn.popart_step_size}; allowed: at most 1 / the PQN minibatch "
            f"({pqn_minibatch_size(cfg)} transitions)"
        )


def check(cfg: Config, strict: bool = True) -> Config:
    """Every check across keys: env ids and params, intervals, and (``strict``) keys without effect.

    Configs stored in checkpoints are read with ``strict=False``, so that runs
    written before a key became an error still load.
    """
    _check_consistency(cfg)
    _check_pqn(cfg)
    if strict:
        _check_effective(cfg)
    return cfg


def from_dict(data: dict, strict: bool = True) -> Config:
    return check(_build(Config, data or {}, ""), strict)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. dqn.gamma=0.95")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Sets ``a.b.c=value`` (list items by index: ``tasks.0.env_id=...``) in a nested mapping."""
    data = yaml.safe_load(yaml.safe_dump(data or {}))  # deep copy through plain types
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not an index of the list")
                node = node[int(part)]
            else:
                if part == "tasks" and "tasks" not in node:
                    node["tasks"] = [{}]
                node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: {last!r} is not an index of the list")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file; a missing, unreadable, empty or
    non-mapping file is a ``ConfigError`` (an empty file would otherwise train the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start}); is it a YAML file?") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        message = " ".join(str(err).split())  # one line
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {message}") from None
    if data is None:
        raise ConfigError(f"config file {str(path)!r} is empty; allowed: a YAML mapping of config keys (see configs/)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r}: got a {type(data).__name__} at the top level; allowed: a mapping of config keys"
        )
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    return from_dict(apply_overrides(read_yaml(path), overrides or []))


def to_dict(cfg: Any) -> Any:
    """Plain YAML-able mapping of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


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
