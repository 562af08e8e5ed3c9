"""Rules across keys: env ids, intervals that depend on other keys, systems, and keys without effect.

Each rule lives here and nowhere else; :func:`from_dict` is the one way a mapping becomes a checked ``Config``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxdqn.config.checker import build
from jaxdqn.config.schema import (
    Config,
    DQNConfig,
    MultitaskConfig,
    NetworkConfig,
    PQNConfig,
    ReplayConfig,
    TaskConfig,
    TrainConfig,
)
from jaxdqn.errors import ConfigError


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
    return check(build(Config, data or {}, ""), strict)
