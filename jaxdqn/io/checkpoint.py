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

After a save, process 0 writes ``checksums.json`` into the step folder: the size
and CRC-32 of every file orbax wrote. Reading a checkpoint checks them first, so a
truncated, altered or missing file is named in one line (:class:`CheckpointError`)
instead of surfacing as an orbax traceback, or not at all (orbax does not check
the bytes of its array chunks). ``--resume`` then falls back to the newest older
checkpoint that reads back whole. Checkpoints written before this have no
``checksums.json`` and are read as they are.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
import zlib
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


CHECKSUMS = "checksums.json"


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_checksums(step_dir: Path) -> None:
    """Size and CRC-32 of every file under ``step_dir``, written atomically to ``checksums.json``."""
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    record = {str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)] for p in files}
    tmp = step_dir / f".{CHECKSUMS}.tmp"
    tmp.write_text(json.dumps(record, indent=0))
    os.replace(tmp, step_dir / CHECKSUMS)


def damaged_file(step_dir: Path) -> str | None:
    """What is wrong with a checkpoint's files (``"FILE: reason"``), or ``None`` if they are as
    written (or the checkpoint predates checksums)."""
    record_path = step_dir / CHECKSUMS
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as err:
        return f"{CHECKSUMS}: unreadable ({err})"
    for name, (size, crc) in record.items():
        path = step_dir / name
        if not path.is_file():
            return f"{name}: missing"
        if path.stat().st_size != size:
            return f"{name}: {path.stat().st_size} bytes, written with {size}"
        if _crc32(path) != crc:
            return f"{name}: its bytes changed since it was written (CRC-32 mismatch)"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def check_readable(directory: Path, step: int) -> None:
    """Raises a one-line :class:`CheckpointError` naming the damaged file of checkpoint ``step``."""
    problem = damaged_file(directory / str(step))
    if problem is not None:
        raise CheckpointError(f"checkpoint {directory}/{step} is damaged: {problem}")


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
            if jax.process_index() == 0:
                write_checksums(self.directory / str(step))
        except Exception as err:
            reason = write_failure_reason(err)
            if reason is None:
                raise
            self._finish_background_writes()
            self._remove_partial(step)
            latest = self.latest_step()
            kept = (
                f"the checkpoint at env step {latest} is intact and still the latest"
                if latest is not None
                else "no earlier checkpoint exists"
            )
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

    def _remove_partial(self, step: int, settle_s: float = 2.0) -> None:
        """Removes the half-written folder of ``step``. A writer thread of the failed save
        that the closed manager did not join may still add files as the folder goes, so
        removal repeats until the folder stays gone for a moment (or ``settle_s`` passes)."""
        deadline, quiet = time.monotonic() + settle_s, 0
        while quiet < 3 and time.monotonic() < deadline:
            partials = list(self.directory.glob(f"{step}.*tmp*"))
            for partial in partials:
                shutil.rmtree(partial, ignore_errors=True)
            quiet = 0 if partials else quiet + 1
            time.sleep(0.02)

    def latest_step(self) -> int | None:
        """The newest step whose items were all written (half-written folders are skipped)."""
        steps = complete_steps(self.directory)
        return steps[-1] if steps else None

    def restore_state(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores the full training state into the structure of ``target``: from ``step``,
        or from the newest checkpoint that reads back whole, saying in one line (on stderr)
        which newer ones it skipped and why."""
        if step is not None:
            check_readable(self.directory, step)
            return self._restore(target, step)
        steps = complete_steps(self.directory)
        if not steps:
            raise CheckpointError(f"no checkpoint to resume from in {self.directory}")
        for candidate in reversed(steps):
            problem = damaged_file(self.directory / str(candidate))
            if problem is None:
                try:
                    return self._restore(target, candidate)
                except CheckpointError:  # does not fit this run: not a damage an older one would mend
                    raise
                except Exception as err:  # orbax could not read it
                    problem = _first_line(err)
            aside = self._set_aside(candidate)
            print(f"--resume: skipping checkpoint {self.directory}/{candidate} ({problem}); moved to {aside}", file=sys.stderr)
        raise CheckpointError(
            f"no checkpoint in {self.directory} reads back whole (tried {', '.join(map(str, reversed(steps)))})"
        )

    def _set_aside(self, step: int) -> Path:
        """Renames a damaged checkpoint out of the run's steps (kept for a person to look at)."""
        n = 0
        while (aside := self.directory / f"{step}.damaged{'-' + str(n) if n else ''}").exists():
            n += 1
        os.replace(self.directory / str(step), aside)
        self.manager.reload()
        return aside

    def _restore(self, target: Any, step: int) -> tuple[Any, dict]:
        stored = self.manager.item_metadata(step)["state"]
        check_fits(
            stored.tree if hasattr(stored, "tree") else stored,
            target,
            f"checkpoint {self.directory}/{step}",
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
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and all((p / item).is_dir() for item in ITEMS))


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
        seeds = sorted(p.parent.name for p in path.glob("seed_*/checkpoints"))
        if seeds:
            raise CheckpointError(
                f"{str(path)!r} is a train.seeds run: name one seed's run, e.g. {str(path / seeds[0])!r} "
                f"(it holds {', '.join(seeds)})"
            )
        raise CheckpointError(f"no checkpoint found in {str(path)!r}")
    return path.absolute(), steps[-1]


class _Unreadable:
    """Turns what orbax raises while reading checkpoint ``step`` into one line naming it."""

    def __init__(self, directory: Path, step: int):
        self.where = f"{directory}/{step}"

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is not None and isinstance(err, Exception) and not isinstance(err, CheckpointError):
            raise CheckpointError(f"checkpoint {self.where} could not be read: {_first_line(err)}") from None
        return False


def _readable(path: str | Path) -> tuple[Path, int]:
    directory, step = resolve(path)
    check_readable(directory, step)
    return directory, step


def read_meta(path: str | Path) -> dict:
    directory, step = _readable(path)
    with _Unreadable(directory, step), _manager(directory) as manager:
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def stored_param_shapes(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Leaf names, shapes and dtypes of a checkpoint's ``params`` item, read without loading arrays."""
    directory, step = _readable(path)
    with _Unreadable(directory, step), _manager(directory) as manager:
        stored = manager.item_metadata(step)["params"]
    return leaf_shapes(stored.tree if hasattr(stored, "tree") else stored)


def load_params(path: str | Path, target: Any) -> tuple[Any, dict]:
    """Online parameters and metadata of a checkpoint, checked against ``target``'s shapes."""
    directory, step = _readable(path)
    with _Unreadable(directory, step), _manager(directory) as manager:
        stored = manager.item_metadata(step)["params"]
        check_fits(stored.tree if hasattr(stored, "tree") else stored, target, f"checkpoint {directory}/{step}")
        restored = manager.restore(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()),
        )
    return restored.params, restored.meta
