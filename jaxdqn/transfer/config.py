"""YAML configs of distillation runs and of transfer runs, checked key by key.

A distillation config names its teachers (checkpoints), the student network
and how to distil; the student's tasks are the teachers' tasks. A transfer
config is an ordinary training config plus a ``transfer:`` block naming the
method and the source checkpoint(s). Both use the same checks and
``KEY=VALUE`` overrides as training configs (:mod:`jaxdqn.config`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from jaxdqn import config as config_lib
from jaxdqn.config import (
    Config,
    NetworkConfig,
    OptimizerConfig,
    ReplayConfig,
    ScheduleConfig,
    TrainConfig,
    build,
    field,
    with_defaults,
)
from jaxdqn.errors import ConfigError

DISTILL_LOSSES = ("kl", "mse", "nll")
TRANSFER_METHODS = ("scratch", "finetune", "progressive", "distill")


# --------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    checkpoint: str = field("", help="teacher checkpoint: a run directory, its checkpoints/ folder or one step folder")
    task: int = field(0, low=0, help="which task of the teacher checkpoint this teacher plays (its index)")
    name: str = field("", help="label of the student's task (default: the teacher's task label)")


@dataclasses.dataclass(frozen=True)
class _DistillSettings(ScheduleConfig, ReplayConfig, OptimizerConfig):
    """How to distil; the optimizer, replay and schedule keys are the dqn: section's."""

    loss: str = field(
        "kl",
        choices=DISTILL_LOSSES,
        help="kl: KL(teacher || student) of softened policies; mse: Q regression; nll: teacher's greedy action",
    )
    tau_teacher: float = field(0.01, low=0.0, low_open=True, help="kl: teacher softmax temperature (low sharpens)")
    tau_student: float = field(1.0, low=0.0, low_open=True, help="kl and nll: student softmax temperature")
    actor: str = field(
        "teacher",
        choices=("teacher", "student"),
        help="who acts to fill replay: the teacher, or the student (online distillation)",
    )
    actor_epsilon: float = field(0.05, low=0.0, high=1.0, help="exploration of the acting policy")


# A student learns faster than a DQN agent from scratch: its own defaults for the shared keys.
DistillSettings = with_defaults(_DistillSettings, "DistillSettings", learning_rate=1e-3, batch_size=64, learning_starts=1_000)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    name: str = field("distill", help="run name; the run directory is OUTPUT_DIR/NAME-TIMESTAMP")
    seed: int = field(0, low=0, help="random seed")
    teachers: tuple[TeacherConfig, ...] = field((), help="one teacher per student task")
    network: NetworkConfig = field(NetworkConfig())
    distill: DistillSettings = field(DistillSettings())
    train: TrainConfig = field(TrainConfig())


def _check_distill(cfg: DistillConfig) -> None:
    if not cfg.teachers:
        raise ConfigError("config key 'teachers': got an empty list; allowed: one or more teachers, each {checkpoint: PATH}")
    for i, teacher in enumerate(cfg.teachers):
        if not teacher.checkpoint:
            raise ConfigError(f"config key 'teachers[{i}].checkpoint': missing; allowed: a checkpoint path")
    config_lib.check_train(cfg.train, seeds_allowed=False)
    config_lib.check_update_every(cfg.distill.update_every, "distill", cfg.train.num_envs)
    config_lib.check_network(cfg.network)
    config_lib.check_batch_fits(cfg.distill, "distill", "states")


def distill_from_dict(data: dict) -> DistillConfig:
    cfg = build(DistillConfig, data or {}, "")
    _check_distill(cfg)
    return cfg


read_yaml = config_lib.read_yaml


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    # config_lib.apply_overrides creates a missing "tasks" list for training
    # configs; "teachers" gets the same convenience here.
    for text in overrides:
        if text.split("=", 1)[0].strip().startswith("teachers.") and "teachers" not in data:
            data = {**data, "teachers": [{}]}
    return config_lib.apply_overrides(data, overrides)


def load_distill(path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
    return distill_from_dict(_apply_overrides(read_yaml(path), overrides or []))


# --------------------------------------------------------------------------
# Transfer
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    reinit_head: bool = field(False, help="start the head from a fresh initialisation instead of the source's")
    freeze_torso: str = field(
        "never",
        choices=("never", "first", "always"),
        help="keep the source torso fixed: never, for the first freeze_steps, or always",
    )
    freeze_steps: int = field(0, low=0, help="with freeze_torso: first, env steps per task during which the torso stays fixed")
    learning_rate: float = field(0.0, low=0.0, help="Adam step size of the fine-tuning run (0: dqn.learning_rate)")
    torso_lr_scale: float = field(1.0, low=0.0, help="the torso learns at learning_rate * torso_lr_scale")


@dataclasses.dataclass(frozen=True)
class ProgressiveSettings:
    adapter_size: int = field(16, low=1, help="width of each lateral adapter's projection (its bottleneck)")
    scale_init: float = field(0.01, help="initial value of each adapter's learned input scale (small, as Rusu et al. advise)")


@dataclasses.dataclass(frozen=True)
class AssistSettings:
    loss: str = field("mse", choices=DISTILL_LOSSES, help="distillation loss towards the source teacher")
    tau_teacher: float = field(0.01, low=0.0, low_open=True, help="kl: teacher softmax temperature")
    tau_student: float = field(1.0, low=0.0, low_open=True, help="kl and nll: student softmax temperature")
    beta_start: float = field(1.0, low=0.0, help="weight of the distillation term at the first update")
    beta_end: float = field(0.0, low=0.0, help="weight the distillation term decays towards")
    beta_schedule: str = field(
        "linear",
        choices=("constant", "linear", "exponential"),
        help="constant: beta_start; linear: reaches beta_end at beta_decay_steps; exponential: halves the distance to beta_end every beta_decay_steps",
    )
    beta_decay_steps: int = field(50_000, low=1, help="env steps per task of the decay (see beta_schedule)")


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    method: str = field(
        "finetune", choices=TRANSFER_METHODS, help="scratch (baseline), finetune, progressive or distill (distillation-assisted)"
    )
    sources: tuple[str, ...] = field(
        (), help="source checkpoints (progressive: one frozen column each; finetune and distill: exactly one)"
    )
    source_task: int = field(0, low=0, help="which task of each source checkpoint to transfer from (its index)")
    finetune: FinetuneSettings = field(FinetuneSettings())
    progressive: ProgressiveSettings = field(ProgressiveSettings())
    distill: AssistSettings = field(AssistSettings())


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """A training config (``run``) and what to transfer into it (``transfer``)."""

    run: Config
    transfer: TransferSettings

    @property
    def name(self) -> str:
        return self.run.name


def _check_transfer(t: TransferSettings) -> None:
    for method in ("finetune", "progressive", "distill"):
        block = getattr(t, method)
        changed = [f.name for f in dataclasses.fields(block) if getattr(block, f.name) != getattr(type(block)(), f.name)]
        if t.method != method and changed:
            key = f"transfer.{method}.{changed[0]}"
            raise config_lib.no_effect(key, getattr(block, changed[0]), f"with transfer.method: {t.method} (only with {method})")
    if t.method == "scratch":
        return
    if not t.sources:
        raise ConfigError(
            f"config key 'transfer.sources': got an empty list; allowed: one or more checkpoint paths (method {t.method!r} needs a source)"
        )
    if t.method in ("finetune", "distill") and len(t.sources) != 1:
        raise ConfigError(
            f"config key 'transfer.sources': got {len(t.sources)} checkpoints; allowed: exactly one with method {t.method!r}"
        )
    f = t.finetune
    if t.method == "finetune" and f.freeze_torso == "first" and f.freeze_steps == 0:
        raise ConfigError(
            "config key 'transfer.finetune.freeze_steps': got 0; allowed: > 0 with transfer.finetune.freeze_torso: first"
        )


def transfer_from_dict(data: dict) -> TransferConfig:
    data = dict(data or {})
    block = data.pop("transfer", None)
    if block is None:
        raise ConfigError("config key 'transfer': missing; a transfer config is a training config plus a 'transfer:' block")
    settings = build(TransferSettings, block, "transfer")
    _check_transfer(settings)
    return TransferConfig(run=config_lib.from_dict(data), transfer=settings)


def has_transfer_block(path: str | Path) -> bool:
    """Whether a YAML file (if it is a readable mapping) has a top-level ``transfer:`` key."""
    try:
        return "transfer" in read_yaml(path)
    except ConfigError:
        return False


def load_transfer(path: str | Path, overrides: list[str] | None = None) -> TransferConfig:
    return transfer_from_dict(config_lib.apply_overrides(read_yaml(path), overrides or []))


def transfer_to_dict(cfg: TransferConfig) -> dict:
    return {**config_lib.to_dict(cfg.run), "transfer": config_lib.to_dict(cfg.transfer)}


def dump(cfg: Any) -> str:
    data = transfer_to_dict(cfg) if isinstance(cfg, TransferConfig) else config_lib.to_dict(cfg)
    return yaml.safe_dump(data, sort_keys=False)


def describe_distill_keys() -> list[str]:
    return config_lib.describe_keys(DistillConfig)


def describe_transfer_keys() -> list[str]:
    return config_lib.describe_keys(TransferSettings, "transfer.")
