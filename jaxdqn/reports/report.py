"""Results over seeds and tasks: final returns, curves, interquartile means with intervals.

Reads run directories written by ``jaxdqn train`` (their ``metrics.csv``). The
aggregate over tasks and seeds follows Agarwal et al. (2021), "Deep RL at the Edge
of the Statistical Precipice": the interquartile mean (IQM) of normalised scores
with a stratified-bootstrap 95% interval, computed by ``rliable`` (the optional
``report`` extra: ``pip install 'jaxdqn[report]'``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from jaxdqn.errors import ConfigError
from jaxdqn.io.run_outputs import read_metrics


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
    points, intervals = library.get_interval_estimates(dict(scores), lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
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


# -- the ``jaxdqn report`` command ----------------------------------------------------------

NORMALISATIONS = ("auto", "human", "reference", "minmax", "none")
_SEED_SUFFIX = re.compile(r"^(.*)_s\d+$")


def group_name(run_dir: Path) -> str:
    """Runs of one method: the directory name without a ``_sSEED`` suffix, else the config's name."""
    match = _SEED_SUFFIX.match(run_dir.name)
    if match:
        return match.group(1)
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        import yaml

        return str((yaml.safe_load(config_file.read_text()) or {}).get("name", run_dir.name))
    return run_dir.name


def group_runs(run_dirs: Sequence[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    expanded = []
    for run_dir in map(Path, run_dirs):  # a train.seeds run stands for its seeds' runs
        seed_runs = sorted(run_dir.glob("seed_*/metrics.csv"))
        expanded += [m.parent for m in seed_runs] if not (run_dir / "metrics.csv").is_file() and seed_runs else [run_dir]
    for run_dir in expanded:
        if not (run_dir / "metrics.csv").is_file():
            raise ConfigError(f"{str(run_dir)!r} has no metrics.csv: not a run directory")
        groups[group_name(run_dir)].append(run_dir)
    return dict(groups)


def final_matrix(runs: Sequence[Path], tasks: Sequence[str]) -> np.ndarray:
    """``[runs, tasks]`` final greedy returns (NaN where a run has no evaluation of a task)."""
    finals = [final_returns(run) for run in runs]
    return np.array([[f.get(task, math.nan) for task in tasks] for f in finals], float)


def normalise_scores(
    scores: dict[str, np.ndarray], tasks: Sequence[str], how: str, reference: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """Scores ``[runs, tasks]`` per group, normalised; and a sentence saying how."""
    from jaxdqn.envs import atari_scores as atari

    if how == "auto":
        how = "reference" if reference is not None else ("human" if all(atari.has_reference(t) for t in tasks) else "minmax")
    if how == "human":
        missing = [t for t in tasks if not atari.has_reference(t)]
        if missing:
            raise ConfigError(f"--normalise human: no human reference score for {', '.join(missing)} (Atari games only)")
        out = {
            g: np.vectorize(lambda s, t: atari.human_normalized_score(t, s))(x, np.array(tasks)[None, :])
            for g, x in scores.items()
        }
        return out, "human-normalised: (score - random) / (human - random)"
    if how == "reference":
        if reference is None:
            raise ConfigError("--normalise reference needs --reference RUN_DIR ... (the runs to divide by)")
        base = np.nanmean(reference, axis=0)
        if np.any(base <= 0):
            raise ConfigError(
                f"--normalise reference: the reference's mean final return is not positive on "
                f"{', '.join(t for t, b in zip(tasks, base) if b <= 0)}; use --normalise minmax"
            )
        return {g: x / base for g, x in scores.items()}, "divided by the reference runs' mean final return per task"
    if how == "minmax":
        every = np.concatenate([x for x in scores.values()] + ([reference] if reference is not None else []))
        low, high = np.nanmin(every, axis=0), np.nanmax(every, axis=0)
        high = np.where(high > low, high, low + 1.0)
        return {g: normalised(x, low, high) for g, x in scores.items()}, "min-max over every run given, per task"
    return dict(scores), "not normalised"


def aggregate_intervals(scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, tuple]]:
    """Group -> metric -> (point, low, high): IQM, mean, median and optimality gap over tasks and
    runs with 95% stratified-bootstrap intervals (rliable)."""
    library, metrics = _rliable()
    np.random.seed(seed)
    names = ("IQM", "mean", "median", "optimality gap")

    def aggregate(x):
        return np.array(
            [
                metrics.aggregate_iqm(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_median(x),
                metrics.aggregate_optimality_gap(x),
            ]
        )

    points, intervals = library.get_interval_estimates(dict(scores), aggregate, reps=reps)
    return {
        g: {n: (float(points[g][i]), float(intervals[g][0, i]), float(intervals[g][1, i])) for i, n in enumerate(names)}
        for g in scores
    }


def task_intervals(scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, list[tuple]]:
    """Group -> per task (mean, low, high): the mean over runs with a 95% bootstrap interval."""
    library, metrics = _rliable()
    np.random.seed(seed)
    out = {}
    for g, x in scores.items():
        per_task = {str(i): x[:, i : i + 1] for i in range(x.shape[1])}
        points, intervals = library.get_interval_estimates(per_task, lambda y: np.array([metrics.aggregate_mean(y)]), reps=reps)
        out[g] = [(float(points[k][0]), float(intervals[k][0, 0]), float(intervals[k][1, 0])) for k in per_task]
    return out


def plot_profiles(scores: Mapping[str, np.ndarray], out: Path, label: str) -> None:
    """Performance profiles: the fraction of runs x tasks scoring above each threshold, with 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    library, _ = _rliable()
    every = np.concatenate([x.ravel() for x in scores.values()])
    thresholds = np.linspace(np.nanmin(every), np.nanmax(every), 81)
    profiles, cis = library.create_performance_profile(dict(scores), thresholds)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for g in scores:
        ax.plot(thresholds, profiles[g], label=g)
        ax.fill_between(thresholds, cis[g][0], cis[g][1], alpha=0.2)
    ax.set_xlabel(f"score ({label})")
    ax.set_ylabel("fraction of runs x tasks above")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_report(
    run_dirs: Sequence[Path],
    out_dir: Path,
    reference_dirs: Sequence[Path] = (),
    how: str = "auto",
    reps: int = 2000,
) -> Path:
    """``report.md``, ``curves.png`` and ``profiles.png`` for runs grouped by method -> the Markdown's path."""
    groups = group_runs(run_dirs)
    tasks = task_names(read_metrics(next(iter(groups.values()))[0]))
    raw = {g: final_matrix(runs, tasks) for g, runs in groups.items()}
    reference = final_matrix([Path(d) for d in reference_dirs], tasks) if reference_dirs else None
    scores, how_text = normalise_scores(raw, tasks, how, reference)
    per_task = task_intervals(raw, reps)
    overall = aggregate_intervals(scores, reps)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Report",
        "",
        f"Runs: {', '.join(f'{g} ({len(r)})' for g, r in groups.items())}.",
        "",
        "Final greedy return per task: mean over runs [95% bootstrap interval].",
        "",
        "| task | " + " | ".join(groups) + " |",
        "| --- |" + " ---: |" * len(groups),
    ]
    for i, task in enumerate(tasks):
        cells = [f"{per_task[g][i][0]:.2f} [{per_task[g][i][1]:.2f}, {per_task[g][i][2]:.2f}]" for g in groups]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Over tasks and runs, scores {how_text}; 95% stratified-bootstrap intervals (rliable, {reps} resamples):",
        "",
        "| group | IQM | mean | median | optimality gap |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for g, m in overall.items():
        lines.append(f"| {g} | " + " | ".join(f"{p:.3f} [{lo:.3f}, {hi:.3f}]" for p, lo, hi in m.values()) + " |")
    lines += ["", "![curves](curves.png)", "", "![performance profiles](profiles.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    plot_curves(groups, out_dir / "curves.png")
    plot_profiles(scores, out_dir / "profiles.png", how_text.split(":")[0])
    return path
