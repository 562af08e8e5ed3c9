"""Learning-curve figures from run directories."""

from __future__ import annotations

import math
from pathlib import Path

from jaxdqn.io.run_outputs import MEAN_TASK, read_run_metrics


def _series(rows: list[dict], task: str, metric: str) -> tuple[list[float], list[float]]:
    points = [(r["env_steps"], r[metric]) for r in rows if r["task"] == task and not math.isnan(r.get(metric, math.nan))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(run_dirs, output: Path | None = None, metric: str = "episode_return", tasks: list[str] | None = None) -> Path:
    """One panel per task (and the mean over tasks when there are several), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for run_dir in run_dirs:
        runs.append((Path(run_dir).name, read_run_metrics(run_dir, metric)))

    labels: list[str] = []
    for _, rows in runs:
        for r in rows:
            if r["task"] not in labels:
                labels.append(r["task"])
    task_labels = [label for label in labels if label != MEAN_TASK]
    panels = tasks if tasks else (task_labels + [MEAN_TASK] if len(task_labels) > 1 else task_labels)
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, panels):
        for name, rows in runs:
            x, y = _series(rows, task, metric)
            if x:
                ax.plot(x, y, label=name, marker="." if len(x) < 30 else None)
        ax.set_title("mean over tasks" if task == MEAN_TASK else task)
        ax.set_xlabel("env steps per task")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    output = Path(output) if output else Path(run_dirs[0]) / f"{metric}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
