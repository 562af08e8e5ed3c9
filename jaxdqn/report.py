"""Results over seeds and tasks: final returns, curves, interquartile means with intervals.

Reads run directories written by ``jaxdqn train`` (their ``metrics.csv``). The
aggregate over tasks and seeds follows Agarwal et al. (2021), "Deep RL at the Edge
of the Statistical Precipice": the interquartile mean (IQM) of normalised scores
with a stratified-bootstrap 95% interval, computed by ``rliable`` (the optional
``report`` extra: ``pip install 'jaxdqn[report]'``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from jaxdqn.errors import ConfigError
from jaxdqn.logging import read_metrics


def finished_runs(root: Path) -> dict[str, dict[int, Path]]:
    """``VARIANT_sSEED`` run directories under ``root`` that have a ``wall_time.txt``:
    variant -> seed -> directory."""
    runs: dict[str, dict[int, Path]] = defaultdict(dict)
    for run_dir in sorted(Path(root).glob("*_s*")):
        if (run_dir / "wall_time.txt").is_file() and (run_dir / "metrics.csv").is_file():
            variant, seed = run_dir.name.rsplit("_s", 1)
            if seed.isdigit():
                runs[variant][int(seed)] = run_dir
    return dict(runs)


def task_names(rows: list[dict]) -> list[str]:
    return [t for t in dict.fromkeys(r["task"] for r in rows) if t != "mean"]


def eval_curve(rows: list[dict], task: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, greedy evaluation return) of one task, in logged order."""
    points = [(r["env_steps"], r["eval_return"]) for r in rows if r["task"] == task and not math.isnan(r["eval_return"])]
    steps, values = zip(*points) if points else ((), ())
    return np.asarray(steps, float), np.asarray(values, float)


def final_returns(run_dir: Path) -> dict[str, float]:
    """Task -> the last greedy evaluation return of a run."""
    rows = read_metrics(run_dir)
    return {task: float(eval_curve(rows, task)[1][-1]) for task in task_names(rows)}


def curve_area(steps: np.ndarray, values: np.ndarray) -> float:
    """Area under a learning curve divided by its length in env steps (trapezoids from the
    first evaluation): the curve's mean return, so 'higher' means 'learned sooner or better'."""
    if len(steps) < 2:
        return float(values[0]) if len(values) else math.nan
    return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))


def steps_to(steps: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """The first evaluation's env step at which the return reached ``threshold`` (NaN: never)."""
    reached = np.nonzero(values >= threshold)[0]
    return float(steps[reached[0]]) if len(reached) else math.nan


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"intervals need rliable, which is not installed ({err}); install the extra: pip install 'jaxdqn[report]'"
        ) from None
    return library, metrics


def iqm_interval(scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Variant -> (IQM, low, high): the interquartile mean of ``scores[variant]``
    (``[runs, tasks]``, normalised) with a 95% stratified-bootstrap interval (rliable)."""
    library, metrics = _rliable()
    np.random.seed(seed)  # rliable draws its bootstrap from numpy's global generator
    points, intervals = library.get_interval_estimates(
        dict(scores), lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    return {k: (float(points[k][0]), float(intervals[k][0, 0]), float(intervals[k][1, 0])) for k in scores}


def normalised(scores: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(x - low) / (high - low)`` per task (the last axis)."""
    return (scores - low) / (high - low)


def plot_curves(
    groups: Mapping[str, Sequence[Path]], out: Path, title: Callable[[str], str] = str, xlabel: str = "env steps per task"
) -> None:
    """One panel per task: each group's greedy return, mean over its runs with a band of ± one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = {g: [read_metrics(d) for d in dirs] for g, dirs in groups.items() if dirs}
    tasks = task_names(next(iter(metrics.values()))[0])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for group, runs in metrics.items():
            curves = [eval_curve(rows, task) for rows in runs]
            n = min(len(c[1]) for c in curves)
            values = np.stack([c[1][:n] for c in curves])
            mean, std = values.mean(axis=0), values.std(axis=0)
            ax.plot(curves[0][0][:n], mean, label=f"{group} ({len(curves)})")
            ax.fill_between(curves[0][0][:n], mean - std, mean + std, alpha=0.2)
        ax.set_title(title(task))
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("greedy return")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_facts(run_dir: Path) -> dict:
    """Env steps/s (summed over tasks, mean over chunks after the first), wall time and commit."""
    rows = read_metrics(run_dir)
    rates = [r["steps_per_sec"] for r in rows if r["task"] == "mean"][1:]  # the first chunk compiles
    wall = float((run_dir / "wall_time.txt").read_text().split()[0])
    commit_file = run_dir / "commit.txt"
    commit = commit_file.read_text().split()[0][:10] if commit_file.is_file() else "?"
    return {"steps_per_sec": float(np.mean(rates)) if rates else math.nan, "wall_s": wall, "commit": commit}
