"""Whether a checkpoint fits a use: its network, action sets and observation shape against a target's.

Every check lists all the differences it finds, so a refused checkpoint is
fixed in one go.
"""

from __future__ import annotations

from typing import Sequence

from jaxdqn import config as config_lib
from jaxdqn.agents.build import network_spec, task_specs
from jaxdqn.envs import TaskSet
from jaxdqn.errors import CheckpointError
from jaxdqn.networks import NetworkSpec
from jaxdqn.running.stored import CheckpointInfo, read_info


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
