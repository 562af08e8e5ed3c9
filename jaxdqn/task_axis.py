"""Which leaves carry the task axis: one label tree, in optax's style.

Parameters are ``{"torso": ..., "head": ...}``. A :class:`TaskAxis` names the
parts every task shares; every leaf of every other part leads with the task
axis ``T``. ``labels(params)`` turns that into a label tree (``"task"`` or
``"shared"`` at each leaf, the form ``optax.multi_transform`` takes), and every
piece of code that needs to know where the task axis is (the learner's vmap,
per-task slicing, sharding, fine-tuning, checkpoint sources, the soft-sharing
penalty's selection) asks this module instead of parsing path strings.

| mode                      | torso   | head    |
| ------------------------- | ------- | ------- |
| independent, soft         | task    | task    |
| hard, one head per task   | shared  | task    |
| hard, one shared head     | shared  | shared  |

A layer whose name starts with ``task_`` (a per-task input layer, task
conditioning; see :mod:`jaxdqn.networks`) carries the task axis in every mode,
also inside a shared part.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Params = Any

TASK = "task"
SHARED = "shared"
PARTS = ("torso", "head")
TASK_LAYER_PREFIX = "task_"  # layers named so are per task in every mode


@dataclasses.dataclass(frozen=True)
class TaskAxis:
    """``num_tasks`` tasks; the parameter parts in ``shared_parts`` have no task axis."""

    num_tasks: int
    shared_parts: tuple[str, ...] = ()

    @classmethod
    def for_mode(cls, mode: str, num_tasks: int, shared_head: bool = False) -> "TaskAxis":
        if mode == "hard":
            return cls(num_tasks, ("torso", "head") if shared_head else ("torso",))
        return cls(num_tasks, ())

    # -- label trees ----------------------------------------------------------

    def part_label(self, part: str) -> str:
        return SHARED if part in self.shared_parts else TASK

    def leaf_label(self, part: str, keys: tuple[str, ...]) -> str:
        """The label of the leaf at ``keys`` inside ``part``."""
        if any(str(k).startswith(TASK_LAYER_PREFIX) for k in keys):
            return TASK
        return self.part_label(part)

    def labels(self, params: Params) -> Params:
        """``params``' tree with ``"task"`` or ``"shared"`` at every leaf."""
        return {
            part: jax.tree_util.tree_map_with_path(lambda path, _, p=part: self.leaf_label(p, _path_keys(path)), sub)
            for part, sub in params.items()
        }

    def vmap_axes(self, params: Params) -> Params:
        """``in_axes`` tree of ``params`` for ``jax.vmap`` over tasks (``None`` = shared)."""
        return jax.tree_util.tree_map(lambda label: 0 if label == TASK else None, self.labels(params))

    @property
    def all_per_task(self) -> bool:
        return not self.shared_parts

    # -- moving between layouts ----------------------------------------------

    def _map(self, params: Params, on_task, on_shared) -> Params:
        return jax.tree_util.tree_map(lambda label, x: on_task(x) if label == TASK else on_shared(x), self.labels(params), params)

    def task_slice(self, params: Params, i: int) -> Params:
        """Task ``i``'s parameters without a task axis (shared parts as they are)."""
        return self._map(params, lambda x: x[i], lambda x: x)

    def from_per_task(self, per_task: Params) -> Params:
        """Parameters stacked for every task -> this layout (shared parts: task 0's)."""
        return self._map(per_task, lambda x: x, lambda x: x[0])

    def broadcast(self, one_task: Params, like: Params) -> Params:
        """One task's parameters put into every task's slot of ``like`` (same dtypes)."""
        return jax.tree_util.tree_map(
            lambda label, s, f: jnp.broadcast_to(jnp.asarray(s, f.dtype), f.shape) if label == TASK else jnp.asarray(s, f.dtype),
            self.labels(like),
            one_task,
            like,
        )

    def stored_leaf_per_task(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether a stored leaf named like ``"torso.Dense_0.kernel"`` leads with the task axis."""
        part, *keys = name.split(".")
        return self.leaf_label(part, tuple(keys)) == TASK and bool(shape) and shape[0] == self.num_tasks

    # -- whole training states -------------------------------------------------

    def state_labels(self, state: Any, per_task_optimizer: bool) -> Any:
        """A label per leaf of a training state (a NamedTuple with ``params``, ...).

        Parameter-shaped fields (``params``, ``target_params``) take
        :meth:`labels`; optimizer state subtrees shaped like the parameters take
        the same labels, its other leaves lead with the task axis exactly when
        the optimizer runs once per task; every other leaf (env state, replay,
        keys, episode counters) leads with the task axis unless it is a scalar.
        """
        params_labels = self.labels(state.params)
        params_def = jax.tree_util.tree_structure(state.params)

        def opt_labels(opt_state):
            def is_params(x):
                return jax.tree_util.tree_structure(x) == params_def and not _is_array(x)

            other = TASK if per_task_optimizer else SHARED
            return jax.tree_util.tree_map(lambda x: params_labels if is_params(x) else other, opt_state, is_leaf=is_params)

        out = {}
        for name, value in state._asdict().items():
            if name in ("params", "target_params"):
                out[name] = params_labels
            elif name == "opt_state":
                out[name] = opt_labels(value)
            else:
                out[name] = jax.tree_util.tree_map(lambda x: TASK if getattr(x, "ndim", 0) >= 1 else SHARED, value)
        labels = type(state)(**out)
        # flatten to the state's own leaves (params-label subtrees expand in place)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state), jax.tree_util.tree_leaves(labels))


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def part_mask(params: Params, parts: tuple[str, ...] | None) -> Params | None:
    """``True`` on the leaves of ``parts`` (``None``: every leaf), as ``optax.masked`` takes."""
    if parts is None:
        return None
    return {part: jax.tree_util.tree_map(lambda _, p=part: p in parts, sub) for part, sub in params.items()}
