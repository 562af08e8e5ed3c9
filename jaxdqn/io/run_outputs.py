"""Run outputs: metrics as CSV (one row per task per host visit) and TensorBoard events.

``metrics.csv`` is in long form: each host visit writes one row per task and
one row with ``task = "mean"`` (the mean over tasks), so ``jaxdqn plot`` and
pandas read every task and the average the same way.

A resumed run continues from its checkpoint's env step, and a hard kill can
leave rows (and TensorBoard events) of later steps behind. The writer of a
run that starts at env step S is opened with ``keep_through=S``: rows beyond
S are dropped (the file is rewritten atomically) and TensorBoard is told to
hide events from step S + 1 on (``purge_step``), so every logged step appears
exactly once.
"""

from __future__ import annotations

import csv
import math
import os
import secrets
import time
from pathlib import Path

from jaxdqn.errors import JaxdqnError

COLUMNS = (
    "env_steps",
    "updates",
    "task",
    "episode_return",
    "episode_length",
    "episodes",
    "loss",
    "q_mean",
    "epsilon",
    "penalty",
    "eval_return",
    "eval_return_std",
    "steps_per_sec",
    "wall_time",
)

MEAN_TASK = "mean"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def keep_rows_through(path: Path, env_steps: int) -> int:
    """Rewrites ``metrics.csv`` (temporary file + rename) with only the complete rows
    at ``env_steps`` or before; returns how many rows were dropped."""
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a hard kill can cut the last line
    kept, dropped = [], 0
    for row in csv.DictReader(complete.splitlines()):
        try:
            keep = float(row["env_steps"]) <= env_steps
        except (KeyError, TypeError, ValueError):  # a damaged row
            keep = False
        if keep:
            kept.append(row)
        else:
            dropped += 1
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return dropped


class MetricsWriter:
    """Appends rows to ``metrics.csv`` and mirrors them to TensorBoard.

    ``keep_through``: the env step the run starts from (0, or the restored
    checkpoint's); rows and events written beyond it by an earlier process are
    dropped. ``None`` appends to whatever the file holds.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, keep_through: int | None = None, wandb=None):
        self.path = Path(run_dir) / "metrics.csv"
        self._wandb = start_wandb(Path(run_dir), wandb) if wandb is not None and wandb.project else None
        if keep_through is not None and self.path.exists():
            keep_rows_through(self.path, keep_through)
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if is_new:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge_step = None if keep_through is None else keep_through + 1
            # tensorboardX names event files by the second and opens them with "wb": the
            # suffix keeps a writer opened within the same second from replacing the last one's file
            self._tb = SummaryWriter(
                str(Path(run_dir) / "tensorboard"), purge_step=purge_step, filename_suffix=f".{time.time_ns()}"
            )

    def write(self, common: dict, per_task: dict[str, dict]) -> None:
        """``common`` holds run-wide values; ``per_task[label]`` each task's values."""
        rows = [{**common, "task": label, **values} for label, values in per_task.items()]
        numeric = [k for k in COLUMNS if k not in common and k != "task"]
        mean_row = {**common, "task": MEAN_TASK}
        for key in numeric:
            values = [v[key] for v in per_task.values() if key in v]
            if values:
                mean_row[key] = _mean(values)
        rows.append(mean_row)
        for row in rows:
            self._csv.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        self._file.flush()
        if self._tb is not None:
            step = int(common["env_steps"])
            for row in rows:
                for key in numeric:
                    value = row.get(key)
                    if value is not None and not (isinstance(value, float) and math.isnan(value)):
                        self._tb.add_scalar(f"{row['task']}/{key}", value, step)
            for key in ("steps_per_sec", "updates"):
                if common.get(key) is not None:
                    self._tb.add_scalar(f"run/{key}", common[key], step)
            self._tb.flush()
        if self._wandb is not None:
            scalars = {
                f"{row['task']}/{key}": row[key]
                for row in rows
                for key in numeric
                if row.get(key) is not None and not (isinstance(row[key], float) and math.isnan(row[key]))
            }
            scalars.update({f"run/{k}": common[k] for k in ("steps_per_sec", "updates") if common.get(k) is not None})
            self._wandb.log(scalars, step=int(common["env_steps"]))

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.10g}"
    return value


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of a run's ``metrics.csv`` with numbers parsed (empty cells become NaN)."""
    path = Path(run_dir) / "metrics.csv"
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                if key == "task":
                    parsed[key] = value
                else:
                    parsed[key] = float(value) if value not in ("", None) else math.nan
            rows.append(parsed)
    return rows


def read_run_metrics(run_dir: str | Path, metric: str) -> list[dict]:
    """``read_metrics`` for a directory a person named: clear errors if it is not a run or lacks ``metric``."""
    path = Path(run_dir)
    if not (path / "metrics.csv").is_file():
        raise JaxdqnError(f"{str(path)!r} has no metrics.csv; is it a run directory?")
    rows = read_metrics(path)
    if rows and metric not in rows[0]:
        raise JaxdqnError(f"metric {metric!r} is not a column of {path / 'metrics.csv'}; columns: {', '.join(rows[0])}")
    return rows


def start_wandb(run_dir: Path, settings):
    """A W&B run for ``run_dir`` with its resolved config; a resumed run continues the same W&B run
    (its id is kept in ``wandb_id.txt``)."""
    try:
        import wandb
    except ImportError:
        raise JaxdqnError(
            "train.wandb.project is set, but wandb is not installed; install the extra: pip install 'jaxdqn[wandb]'"
        ) from None
    import yaml

    id_file = run_dir / "wandb_id.txt"
    if not id_file.is_file():
        id_file.write_text(secrets.token_hex(6))
    config_file = run_dir / "config.yaml"
    resolved = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return wandb.init(
        project=settings.project,
        entity=settings.entity or None,
        mode=settings.mode,
        tags=list(settings.tags),
        name=run_dir.name,
        id=id_file.read_text().strip(),
        resume="allow",
        dir=str(run_dir),
        config=resolved,
    )
