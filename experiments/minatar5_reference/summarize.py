"""Tables and curves of MinAtar-5 at the references' update rate (experiments/minatar5_reference/run.sh).

Reads every finished run (``VARIANT_sSEED`` with ``wall_time.txt``) under ``runs/tuning``
(seeds 0 and 100, chosen on, never reported) and ``runs`` (the grid, seeds 1-3), and writes
``results.md``:

- tuning: final greedy return per game and the mean over games, for each run, with its ratio
  to independent on the same seed (mean over games of per-game ratios);
- the grid: per game the final greedy return, mean ± std over seeds; per variant the mean over
  games of return relative to independent and the IQM over games and seeds of the
  independent-normalised return with a 95% stratified-bootstrap interval (rliable);
- env steps/s, wall time and commit of every run;

and ``curves.png`` (the grid's greedy return per game, mean over seeds with a ± std band).

Usage: python experiments/minatar5_reference/summarize.py [EXPERIMENT_DIR]

``EXPERIMENT_DIR`` (default: this folder) is any experiment run by ``run.sh``, e.g.
``experiments/minatar5_pqn`` (``FAMILY=minatar5_pqn``); its results sit beside its runs, and
for another experiment than this one the cost table also lists this grid's runs, for the
wall times side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from jaxdqn.reports import report

HERE = Path(__file__).parent
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def finals(run_dir: Path) -> list[float]:
    """Final greedy return per game, in GAMES order."""
    by_task = report.final_returns(run_dir)
    return [by_task[f"minatar-{g}"] for g in GAMES]


def ratio_to(values: list[float], base: list[float]) -> float:
    """Mean over games of value / base (games where the base is 0 are left out)."""
    return float(np.mean([v / b for v, b in zip(values, base) if b > 0]))


def tuning_table(runs: dict[str, dict[int, Path]]) -> list[str]:
    lines = [
        "## Tuning (seeds 0 and 100; 1,000,000 env steps per game)",
        "",
        "Final greedy return (epsilon 0, 16 episodes per game at the end of training). The last column",
        "is the mean over games of the run's return divided by independent's on the same seed.",
        "",
        "| variant | seed | " + " | ".join(GAMES) + " | mean | relative to independent |",
        "| --- | ---: |" + " ---: |" * (len(GAMES) + 2),
    ]
    order = sorted(runs, key=lambda v: (v != "independent", v))
    for variant in order:
        for seed in sorted(runs[variant]):
            values = finals(runs[variant][seed])
            base = runs.get("independent", {}).get(seed)
            rel = f"{ratio_to(values, finals(base)):.2f}" if base is not None else "-"
            cells = " | ".join(f"{x:.2f}" for x in values)
            lines.append(f"| {variant} | {seed} | {cells} | {np.mean(values):.2f} | {rel} |")
    return lines


def grid_tables(runs: dict[str, dict[int, Path]], reps: int = 2000) -> list[str]:
    if "independent" not in runs:
        return ["## The grid (seeds 1-3)", "", "No finished grid runs yet."]
    variants = sorted(runs, key=lambda v: (v != "independent", v))
    values = {v: np.array([finals(d) for _, d in sorted(runs[v].items())]) for v in variants}  # [seeds, games]
    base = values["independent"].mean(axis=0)
    lines = ["## The grid (seeds 1-3)", "", "Final greedy return, mean ± std over seeds.", ""]
    lines += ["| game | " + " | ".join(variants) + " |", "| --- |" + " ---: |" * len(variants)]
    for i, g in enumerate(GAMES):
        lines.append(f"| {g} | " + " | ".join(report.mean_std(list(values[v][:, i])) for v in variants) + " |")
    lines.append("| seeds | " + " | ".join(",".join(map(str, sorted(runs[v]))) for v in variants) + " |")
    normalised = {v: values[v] / np.where(base > 0, base, np.nan) for v in variants}
    kept = ~np.isnan(normalised["independent"]).any(axis=0)
    iqm = report.iqm_interval({v: normalised[v][:, kept] for v in variants}, reps=reps)
    lines += [
        "",
        "Relative to independent: the mean over games of (mean final return) / (independent's), and the IQM",
        "over games and seeds of the return divided by independent's per-game mean, with its 95%",
        "stratified-bootstrap interval.",
        "",
        "| variant | relative to independent | IQM [95% interval] |",
        "| --- | ---: | ---: |",
    ]
    for v in variants:
        point, low, high = iqm[v]
        lines.append(f"| {v} | {ratio_to(list(values[v].mean(axis=0)), list(base)):.2f} | {point:.2f} [{low:.2f}, {high:.2f}] |")
    return lines


def cost_table(groups: dict[str, dict[str, dict[int, Path]]]) -> list[str]:
    lines = ["## Runs: throughput, wall time, commit", ""]
    lines += ["| run | env steps/s (summed over games) | wall time (min) | commit |", "| --- | ---: | ---: | --- |"]
    for name, runs in groups.items():
        for variant in sorted(runs):
            for seed, run_dir in sorted(runs[variant].items()):
                facts = report.run_facts(run_dir)
                label = f"{name}/{variant} seed {seed}"
                lines.append(f"| {label} | {facts['steps_per_sec']:,.0f} | {facts['wall_s'] / 60:.1f} | {facts['commit']} |")
    return lines


def main(experiment: Path = HERE) -> None:
    tuning = report.finished_runs(experiment / "runs" / "tuning")
    grid = report.finished_runs(experiment / "runs")
    title = (experiment / "README.md").read_text().splitlines()[0].lstrip("# ")  # the experiment's own name
    lines = [f"# {title}: results", "", "Written by `experiments/minatar5_reference/summarize.py`.", ""]
    if tuning:
        lines += tuning_table(tuning) + [""]
    lines += grid_tables(grid) + [""]
    groups = {"tuning": tuning, "grid": grid}
    if experiment.resolve() != HERE.resolve():
        groups["DQN grid (minatar5_reference)"] = report.finished_runs(HERE / "runs")
    lines += cost_table(groups)
    (experiment / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if grid:
        curves = {v: [d for _, d in sorted(seeds.items())] for v, seeds in grid.items()}
        report.plot_curves(curves, experiment / "curves.png", xlabel="env steps per game")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
