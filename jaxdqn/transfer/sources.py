"""Teachers and sources are checkpoints: read them, check they fit, use them.

A checkpoint written by ``jaxdqn train`` (or ``jaxdqn distill``) holds its
parameters and a ``meta`` record with the resolved config, network spec, task
ids, action counts, observation shape, env steps and evaluation return. This
module turns one task of such a checkpoint into a fixed Q-function (a teacher,
or a frozen progressive column) and refuses a checkpoint that does not fit,
with a message that lists every difference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.io import checkpoint
from jaxdqn import config as config_lib
from jaxdqn.agents.build import build_learner, network_spec, task_keys, task_specs
from jaxdqn.agents.learner import Learner
from jaxdqn.envs import TaskSet
from jaxdqn.errors import CheckpointError, ConfigError
from jaxdqn.networks import NetworkSpec, QNetwork
from jaxdqn.task_axis import TaskAxis
from jaxdqn.transfer.finetune import as_numpy
from jaxdqn.transfer.progressive import FrozenColumn, ProgressiveQNetwork

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

    def fixed_q(self, task: int, num_actions: int | None = None) -> "FixedQ":
        """Task ``task`` of this checkpoint as a frozen Q-function."""
        n = self.task_num_actions(task)
        return FixedQ(
            network=self.learner.network,
            params=jax.tree_util.tree_map(jnp.asarray, self.task_params(task)),
            obs_shape=self.obs_shape,
            task_actions=n,
            num_actions=n if num_actions is None else num_actions,
        )


def _stored_config(meta: dict, where: str) -> config_lib.Config:
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


def load_source(path: str, what: str = "checkpoint") -> Source:
    """Loads a checkpoint (train, distill or transfer, progressive included): run dir, checkpoints dir or step dir."""
    info = read_info(path)
    where, meta = info.path, info.meta
    cfg = _stored_config(meta, where)
    tasks = TaskSet(task_specs(cfg), 1)
    learner = stored_learner(meta, cfg, tasks, where)
    example = jax.ShapeDtypeStruct((1,) + tuple(tasks.obs_shape), tasks.obs_dtype)
    target = jax.eval_shape(learner.init_params, task_keys(cfg), example)
    params, meta = checkpoint.load_params(where, target)
    return Source(path=where, meta=meta, cfg=cfg, learner=learner, params=jax.device_get(params))


def refuse_progressive(source: CheckpointInfo, use: str) -> None:
    """A progressive network's torso is not a plain torso: it cannot seed ``use``."""
    if is_progressive(source.meta):
        raise CheckpointError(
            f"source checkpoint {source.path} is a progressive network; it can be a teacher (jaxdqn distill) or the "
            f"source of transfer.method: distill, but not {use}"
        )


def param_counts(info: CheckpointInfo) -> tuple[int, int]:
    """(stored parameters, parameters of one task's network)."""
    shapes = checkpoint.stored_param_shapes(info.path)
    mode = info.meta.get("mode", "independent")
    shared_head = (info.meta.get("config", {}).get("multitask", {}) or {}).get("hard_heads") == "shared"
    axis = TaskAxis.for_mode(mode, info.num_tasks, shared_head)
    total = per_task = 0
    for name, (shape, _) in shapes.items():
        size = int(np.prod(shape)) if shape else 1
        total += size
        per_task += size // max(1, info.num_tasks) if axis.stored_leaf_per_task(name, shape) else size
    return total, per_task


def describe(path: str) -> str:
    """Human-readable metadata of a checkpoint (``jaxdqn inspect``)."""
    info = read_info(path)
    meta = info.meta
    spec = info.network_spec
    lines = [f"checkpoint   {info.path}"]
    kind = info.kind
    if kind == "transfer":
        kind += f" ({meta.get('transfer', {}).get('method', '?')})"
    lines.append(f"kind         {kind}")
    net = f"{spec.torso}"
    if spec.torso == "mlp":
        net += f" hidden_sizes={list(spec.hidden_sizes)}"
    if spec.torso == "minatar_cnn":
        net += f" cnn_channels={spec.cnn_channels} cnn_hidden={spec.cnn_hidden}"
    net += f" dueling={str(spec.dueling).lower()}"
    if is_progressive(meta):
        net += " + progressive column over the sources below"
    try:
        total, per_task = param_counts(info)
        net += f"  ({per_task:,} parameters per task network, {total:,} stored)"
    except Exception:  # noqa: BLE001 - the counts are a convenience
        pass
    lines.append(f"network      {net}")
    lines.append(f"mode         {meta.get('mode', '?')}")
    lines.append(f"obs shape    {list(info.obs_shape)} (padded, as the network sees it)")
    lines.append(
        f"env steps    {meta.get('env_steps', '?'):,} per task"
        if isinstance(meta.get("env_steps"), int)
        else f"env steps    {meta.get('env_steps', '?')}"
    )
    evals = meta.get("eval_return")
    tasks_cfg = meta.get("config", {}).get("tasks", [])
    lines.append(f"tasks        {info.num_tasks}")
    for i, label in enumerate(info.labels):
        env_id = meta["tasks"][i]
        params = tasks_cfg[i].get("env_params", {}) if i < len(tasks_cfg) else {}
        n = info.task_num_actions(i)
        ev = f"{evals[i]:.2f}" if evals and i < len(evals) and evals[i] is not None else "not evaluated"
        lines.append(
            f"  [{i}] {label}: {env_id}{' ' + str(params) if params else ''}; actions {list(range(n))} "
            f"({n} of {meta.get('num_actions', n)}); eval return {ev}"
        )
    for i, t in enumerate(meta.get("teachers", []) or []):
        pct = t.get("percent")
        lines.append(
            f"teacher [{i}] {t.get('checkpoint')} task {t.get('task')}"
            + (f"; teacher return {t['eval_return']:.2f}" if t.get("eval_return") is not None else "")
            + (f"; student at {pct:.1f}% of it" if pct is not None else "")
        )
    tr = meta.get("transfer")
    if tr:
        for i, src in enumerate(tr.get("sources", [])):
            lines.append(f"source [{i}]  {src} (task {tr.get('source_task', 0)})")
    return "\n".join(lines)


def check_config_fits(path: str, cfg: config_lib.Config) -> str:
    """Whether a checkpoint's network and action sets fit a training config; raises if not."""
    info = read_info(path)
    tasks = TaskSet(task_specs(cfg), 1)
    problems = []
    if info.num_tasks not in (1, tasks.num_tasks):
        problems.append(f"the checkpoint has {info.num_tasks} tasks but the config has {tasks.num_tasks}")
    else:
        for i, label in enumerate(tasks.labels):
            j = i if info.num_tasks == tasks.num_tasks else 0
            problems += fit_problems(info, j, label, tasks.task_num_actions[i], tasks.obs_shape, network_spec(cfg))
    refuse("checkpoint", info, sorted(set(problems), key=problems.index))
    return f"{info.path} fits the config: network {network_spec(cfg).torso}, {tasks.num_tasks} task(s), same action sets and observation shape"


# --------------------------------------------------------------------------
# Fitting observations and checking compatibility
# --------------------------------------------------------------------------


def fit_obs(obs: jax.Array, shape: Sequence[int], lead: int = 1) -> jax.Array:
    """Cuts or zero-pads the trailing axes of ``obs`` (after ``lead`` batch axes) to ``shape``.

    Task sets pad observations with zeros at the end of each axis, so a
    network trained on a smaller padded shape sees exactly its own inputs.
    """
    shape = tuple(shape)
    if obs.ndim - lead != len(shape):
        raise CheckpointError(f"observations of rank {obs.ndim - lead} cannot feed a network trained on shape {list(shape)}")
    cut = obs[(slice(None),) * lead + tuple(slice(0, min(s, t)) for s, t in zip(obs.shape[lead:], shape))]
    pads = [(0, 0)] * lead + [(0, t - s) for s, t in zip(cut.shape[lead:], shape)]
    return jnp.pad(cut, pads) if any(p != (0, 0) for p in pads) else cut


def network_differences(stored: NetworkSpec, wanted: NetworkSpec) -> list[str]:
    """Differences in the fields that shape both networks' parameters
    (a conv torso ignores ``hidden_sizes``, an MLP the ``cnn_*`` widths)."""
    out = []
    for name in (f for f in stored.relevant_fields() if f in wanted.relevant_fields()):
        a, b = getattr(stored, name), getattr(wanted, name)
        if _norm(a) != _norm(b):
            out.append(f"network {name} is {_show(a)} in the checkpoint but {_show(b)} in the config")
    return out


def _norm(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _show(value) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else repr(value)


def fit_problems(
    source: CheckpointInfo,
    task: int,
    target_label: str,
    target_actions: int | None,
    target_obs_shape: Sequence[int] | None,
    network: NetworkSpec | None = None,
) -> list[str]:
    """What differs between task ``task`` of ``source`` and a target task; empty if it fits.

    ``None`` for a requirement means it does not matter to the caller.
    """
    problems = []
    if network is not None:
        problems += network_differences(source.network_spec, network)
    if target_actions is not None and source.task_num_actions(task) != target_actions:
        problems.append(
            f"task {source.label(task)!r} has {source.task_num_actions(task)} actions in the checkpoint "
            f"but the target task {target_label!r} has {target_actions}"
        )
    if target_obs_shape is not None:
        if len(source.obs_shape) != len(target_obs_shape):
            problems.append(
                f"observations have shape {list(source.obs_shape)} in the checkpoint but {list(target_obs_shape)} "
                f"for the target task {target_label!r} (different rank)"
            )
        elif network is not None and tuple(source.obs_shape) != tuple(target_obs_shape):
            problems.append(
                f"observations have shape {list(source.obs_shape)} in the checkpoint but {list(target_obs_shape)} "
                f"for the target task {target_label!r}"
            )
    return problems


def refuse(what: str, source: CheckpointInfo, problems: list[str], hint: str = "") -> None:
    if problems:
        raise CheckpointError(f"{what} {source.path} does not fit: " + "; ".join(problems) + (f" ({hint})" if hint else ""))


# --------------------------------------------------------------------------
# Fixed Q-functions (teachers)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class FixedQ:
    """One checkpointed task as a Q-function whose parameters never change.

    The parameters are held here, outside any training state, so nothing
    that trains can reach them.
    """

    network: QNetwork
    params: Params  # one task, no task axis
    obs_shape: tuple[int, ...]  # what the network was trained on
    task_actions: int  # the task's own actions (the first task_actions outputs)
    num_actions: int  # width of the returned Q-values (extra columns are 0; callers mask them)

    def __call__(self, obs: jax.Array) -> jax.Array:
        """``obs [B, *shape]`` -> ``[B, num_actions]``."""
        q = self.network.apply(self.params, fit_obs(obs, self.obs_shape))[:, : self.task_actions]
        q = jax.lax.stop_gradient(q)
        if self.num_actions > self.task_actions:
            q = jnp.pad(q, ((0, 0), (0, self.num_actions - self.task_actions)))
        return q[:, : self.num_actions]


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherSet:
    """One fixed Q-function per task, shaped like a learner's ``q_values``."""

    members: tuple[FixedQ, ...]

    @property
    def num_tasks(self) -> int:
        return len(self.members)

    def q_values(self, params: Any, obs: jax.Array) -> jax.Array:
        """``obs [T, B, *obs_shape]`` -> ``[T, B, A]``. ``params`` is ignored (kept for
        the learner interface, so :mod:`jaxdqn.running.evaluate` can play a teacher)."""
        del params
        return jnp.stack([member(obs[i]) for i, member in enumerate(self.members)])
