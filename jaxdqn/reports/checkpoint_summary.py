"""A checkpoint in words (``jaxdqn inspect``) and its parameter counts, from its metadata alone."""

from __future__ import annotations

import numpy as np

from jaxdqn.io import checkpoint
from jaxdqn.running.stored import CheckpointInfo, is_progressive, read_info
from jaxdqn.task_axis import TaskAxis


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
