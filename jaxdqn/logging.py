"""Run outputs: metrics as CSV (one row per task per host visit) and TensorBoard events.

``metrics.csv`` is in long form: each host visit writes one row per task and
one row with ``task = "mean"`` (the mean over tasks), so ``jaxdqn plot`` and
pandas read every task and the average the same way.
"""

from __future__ import annotations

import csv
import math
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


class MetricsWriter:
    """Appends rows to ``metrics.csv`` and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.csv"
        is_new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if is_new:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

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

    def close(self) -> None:
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
