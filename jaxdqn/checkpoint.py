"""Checkpoints with orbax: the whole training state, the online parameters, metadata.

A run's ``checkpoints/`` folder holds one subfolder per saved env step, each
with three items:

- ``state``: the full ``TrainState`` (params, target params, optimizer state,
  replay, env state, counters, RNG keys), enough to resume exactly;
- ``params``: the online parameters alone, what evaluation and teachers need;
- ``meta``: JSON with the resolved config, network spec, task ids, action
  counts, env steps and the latest evaluation return.

orbax writes each step into a temporary folder and renames it only when
complete, and deletes old steps only after a newer one is committed, so an
interrupted save leaves the previous checkpoint intact. A save that fails to
write (disk full, quota, permissions) removes its temporary folder and raises
a ``CheckpointWriteError`` whose one line names the step, the reason and the
checkpoint that is still the latest.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxdqn.errors import CheckpointError, CheckpointWriteError


def _path_str(path) -> str:
    parts = []
    for entry in path:
        for attr in ("name", "key", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return ".".join(parts)


def leaf_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"params.torso.Dense_0.kernel": (shape, dtype), ...}`` for arrays or array metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))[0]
    return {_path_str(p): (tuple(x.shape), str(x.dtype)) for p, x in leaves}


def leaf_problems(have: Any, wanted: Any, wanting: str = "the network") -> list[str]:
    """How ``have`` fails to fit ``wanted``: the first leaf that differs (the network's parameters
    before optimizer and replay state, torso before head, layers in order, a kernel before its
    bias) and how many more do; empty when every leaf fits."""
    a, b = leaf_shapes(have), leaf_shapes(wanted)

    def position(name: str):
        parts = name.split(".")
        module, _, leaf = name.rpartition(".")
        return (parts[0] not in ("params", "torso", "head"), "torso" not in parts, module, leaf != "kernel", leaf)

    bad = []
    for name in sorted(set(a) | set(b), key=position):
        if name not in a:
            bad.append(f"the checkpoint has no leaf '{name}' that {wanting} needs")
        elif name not in b:
            bad.append(f"the checkpoint has a leaf '{name}' that {wanting} does not have")
        elif a[name] != b[name]:
            bad.append(
                f"leaf '{name}' has shape {a[name][0]} ({a[name][1]}) in the checkpoint, "
                f"but {wanting} expects {b[name][0]} ({b[name][1]})"
            )
    if len(bad) > 1:
        return [f"{bad[0]} (and {len(bad) - 1} more leaves differ)"]
    return bad


def check_fits(stored: Any, expected: Any, what: str, wanting: str = "the network", hint: str = "") -> None:
    """Raises a ``CheckpointError`` naming the first leaf whose name, shape or dtype differs."""
    problems = leaf_problems(stored, expected, wanting)
    if problems:
        raise CheckpointError(f"{what}: {problems[0]}{hint}")


def _manager(directory: Path, keep: int | None = None) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "params": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=keep is not None),
    )


def _abstract(tree: Any) -> Any:
    """Restore targets; a leaf without a sharding goes to this process's first device, so a
    checkpoint written over several devices or processes reads back on one."""
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def target(leaf):
        struct = ocp.utils.to_shape_dtype_struct(leaf)
        if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
            return jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=here)
        return struct

    return jax.tree_util.tree_map(target, tree)


def write_failure_reason(err: BaseException) -> str | None:
    """Why a write failed ("No space left on device", ...), or ``None`` if ``err`` is not a
    failed write. Python file writes raise ``OSError``; tensorstore (the arrays) raises a
    ``ValueError`` whose message ends in ``[os_error_code='28']``."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    match = re.search(r"os_error_code='?(\d+)", str(err))
    return os.strerror(int(match.group(1))) if match else None


class _DropWriteFailureTracebacks(logging.Filter):
    """orbax logs a failed background write with a traceback from each of its threads;
    ``Checkpointer.save`` reports the failure in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and write_failure_reason(record.exc_info[1]))


_ABSL_FILTER = _DropWriteFailureTracebacks()


class Checkpointer:
    """Saves and restores the checkpoints of one run directory."""

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.manager = _manager(self.directory, keep)
        logging.getLogger("absl").addFilter(_ABSL_FILTER)  # adding the same filter twice is a no-op

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Writes ``step``; a failed write leaves the previous checkpoints as they were."""
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    params=ocp.args.StandardSave(state.params),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
            self.manager.wait_until_finished()
        except Exception as err:
            reason = write_failure_reason(err)
            if reason is None:
                raise
            self._finish_background_writes()
            for partial in self.directory.glob(f"{step}.*tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
            latest = self.latest_step()
            kept = f"the checkpoint at env step {latest} is intact and still the latest" if latest is not None else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"could not write the checkpoint at env step {step} in {self.directory}: {reason}; {kept}"
            ) from err

    def _finish_background_writes(self) -> None:
        """After a failed save orbax's other writer threads may still run; they end when
        the manager closes. A fresh manager takes its place for any later save."""
        try:
            self.manager.close()
        except Exception:  # the same failure again, already being reported
            pass
        self.manager = _manager(self.directory, self.keep)

    def latest_step(self) -> int | None:
        """The newest step whose items were all written (half-written folders are skipped)."""
        steps = complete_steps(self.directory)
        return steps[-1] if steps else None

    def restore_state(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores the full training state into the structure of ``target``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint to resume from in {self.directory}")
        stored = self.manager.item_metadata(step)["state"]
        check_fits(
            stored.tree if hasattr(stored, "tree") else stored, target, f"checkpoint {self.directory}/{step}",
            wanting="this run's training state",
            hint="; was it written with another config, or by an older jaxdqn?",
        )
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()),
        )
        return restored.state, restored.meta

    def close(self) -> None:
        self.manager.close()


ITEMS = ("state", "params", "meta")


def complete_steps(directory: Path) -> list[int]:
    """Step folders (named by their env step) that hold every item, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name) for p in directory.iterdir() if p.name.isdigit() and all((p / item).is_dir() for item in ITEMS)
    )


def resolve(path: str | Path) -> tuple[Path, int]:
    """A run directory, its ``checkpoints`` folder or one step folder -> (checkpoints dir, step)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {str(path)!r} does not exist")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "meta").is_dir() and path.name.isdigit():
        return path.parent.absolute(), int(path.name)
    steps = complete_steps(path)
    if not steps:
        raise CheckpointError(f"no checkpoint found in {str(path)!r}")
    return path.absolute(), steps[-1]


def read_meta(path: str | Path) -> dict:
    directory, step = resolve(path)
    with _manager(directory) as manager:
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def stored_param_shapes(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Leaf names, shapes and dtypes of a checkpoint's ``params`` item, read without loading arrays."""
    directory, step = resolve(path)
    with _manager(directory) as manager:
        stored = manager.item_metadata(step)["params"]
    return leaf_shapes(stored.tree if hasattr(stored, "tree") else stored)


def load_params(path: str | Path, target: Any) -> tuple[Any, dict]:
    """Online parameters and metadata of a checkpoint, checked against ``target``'s shapes."""
    directory, step = resolve(path)
    with _manager(directory) as manager:
        stored = manager.item_metadata(step)["params"]
        check_fits(stored.tree if hasattr(stored, "tree") else stored, target, f"checkpoint {directory}/{step}")
        restored = manager.restore(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()),
        )
    return restored.params, restored.meta
