"""What a checkpoint holds, read back: its metadata, and the learner and parameters it was trained with.

A checkpoint written by ``jaxdqn train`` (or ``jaxdqn distill`` / ``jaxdqn
transfer``) holds its parameters and a ``meta`` record with the resolved
config, network spec, task ids, action counts, observation shape, env steps
and evaluation return. :func:`read_info` reads the record alone;
:func:`load_source` rebuilds the learner (a progressive network's frozen
columns included) and loads its online parameters. Evaluation, ``inspect``,
teachers and transfer sources all load checkpoints through here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from jaxdqn import config as config_lib
from jaxdqn.agents.build import build_learner, network_spec, task_keys, task_specs
from jaxdqn.agents.learner import Learner
from jaxdqn.envs import TaskSet
from jaxdqn.errors import CheckpointError, ConfigError
from jaxdqn.io import checkpoint
from jaxdqn.networks import NetworkSpec
from jaxdqn.networks.progressive import FrozenColumn, ProgressiveQNetwork

Params = Any


@dataclasses.dataclass(frozen=True, eq=False)
class CheckpointInfo:
    """What a checkpoint's metadata says about it (nothing loaded but the JSON)."""

    path: str  # the step folder
    meta: dict

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "train")

    @property
    def network_spec(self) -> NetworkSpec:
        return NetworkSpec.from_dict(self.meta["network"])

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["obs_shape"])

    @property
    def num_tasks(self) -> int:
        return len(self.meta["tasks"])

    @property
    def labels(self) -> list[str]:
        return list(self.meta.get("task_labels", self.meta["tasks"]))

    def label(self, task: int) -> str:
        return self.labels[task]

    def task_num_actions(self, task: int) -> int:
        return int(self.meta["task_num_actions"][task])

    def check_task(self, task: int, key: str) -> None:
        if not 0 <= task < self.num_tasks:
            raise ConfigError(
                f"config key '{key}': got {task}; allowed: a task index of {self.path} "
                f"(0..{self.num_tasks - 1}: {', '.join(self.labels)})"
            )


def read_info(path: str) -> CheckpointInfo:
    directory, step = checkpoint.resolve(path)
    where = f"{directory}/{step}"
    return CheckpointInfo(where, checkpoint.read_meta(where))


@dataclasses.dataclass(frozen=True, eq=False)
class Source(CheckpointInfo):
    """A loaded checkpoint: metadata, training config, learner layout and online parameters."""

    cfg: config_lib.Config | None = None
    learner: Learner | None = None
    params: Params = None  # every task, as stored (leading task axis where the mode has one)

    def task_params(self, task: int) -> Params:
        """One task's parameters without a task axis (shared parts as they are)."""
        return self.learner.task_params(self.params, task)


def as_numpy(tree: Params) -> Params:
    """A parameter tree as host numpy arrays (frozen columns and fit checks hold them off the device)."""
    return jax.tree_util.tree_map(np.asarray, tree)


def stored_config(meta: dict, where: str) -> config_lib.Config:
    try:
        return config_lib.from_dict(meta["config"], strict=False)
    except (KeyError, ConfigError) as err:
        raise CheckpointError(f"checkpoint {where}: its stored config cannot be read ({err})") from None


def is_progressive(meta: dict) -> bool:
    return (meta.get("transfer") or {}).get("method") == "progressive"


def progressive_network(
    spec: NetworkSpec, num_actions: int, sources: Sequence["Source"], source_task: int, adapter_size: int, scale_init: float
) -> ProgressiveQNetwork:
    """A new column over task ``source_task``'s torso of each source (frozen)."""
    columns = tuple(
        FrozenColumn(src.network_spec, as_numpy(src.task_params(source_task)["torso"]), src.obs_shape) for src in sources
    )
    return ProgressiveQNetwork(spec, num_actions, columns, adapter_size, scale_init)


def stored_learner(meta: dict, cfg: config_lib.Config, tasks: TaskSet, where: str) -> Learner:
    """The learner a checkpoint was trained with: its config's, and for a progressive
    network the frozen columns loaded again from the sources its metadata names."""
    learner = build_learner(cfg, tasks)
    if not is_progressive(meta):
        return learner
    settings = meta["transfer"]
    sources = [load_source(path, f"progressive column of {where}:") for path in settings["sources"]]
    p = settings.get("progressive", {})
    network = progressive_network(
        network_spec(cfg), tasks.num_actions, sources, settings.get("source_task", 0), p["adapter_size"], p["scale_init"]
    )
    return dataclasses.replace(learner, network=network)


def online_params(path: str, cfg: config_lib.Config, learner: Learner, tasks: TaskSet) -> tuple[Params, dict]:
    """The online parameters a checkpoint holds for ``learner`` (shaped as it initialises them), and its metadata."""
    example = jax.ShapeDtypeStruct((1,) + tuple(tasks.obs_shape), tasks.obs_dtype)
    target = jax.eval_shape(learner.init_params, task_keys(cfg), example)
    return checkpoint.load_params(path, target)


def load_source(path: str, what: str = "checkpoint") -> Source:
    """Loads a checkpoint (train, distill or transfer, progressive included): run dir, checkpoints dir or step dir."""
    info = read_info(path)
    where, meta = info.path, info.meta
    cfg = stored_config(meta, where)
    tasks = TaskSet(task_specs(cfg), 1)
    learner = stored_learner(meta, cfg, tasks, where)
    params, meta = online_params(where, cfg, learner, tasks)
    return Source(path=where, meta=meta, cfg=cfg, learner=learner, params=jax.device_get(params))


def refuse_progressive(source: CheckpointInfo, use: str) -> None:
    """A progressive network's torso is not a plain torso: it cannot seed ``use``."""
    if is_progressive(source.meta):
        raise CheckpointError(
            f"source checkpoint {source.path} is a progressive network; it can be a teacher (jaxdqn distill) or the "
            f"source of transfer.method: distill, but not {use}"
        )
