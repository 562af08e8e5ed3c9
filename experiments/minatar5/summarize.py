"""Tables and curves of the MinAtar-5 experiment (experiments/minatar5/run.sh).

Reads every finished run under ``runs/`` (``VARIANT_sSEED`` with ``wall_time.txt``)
and writes ``results.md`` (final greedy return per game, mean +- std over
seeds; per variant the mean over games of return relative to independent;
the soft lambda sweep; env steps/s and wall time per run) and ``curves.png``
(greedy evaluation return per game against env steps, mean over seeds with a
band of +- one standard deviation).

Usage: python experiments/minatar5/summarize.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxdqn.io.run_outputs import read_metrics
from jaxdqn.reports.report import eval_curve, finished_runs, mean_std

HERE = Path(__file__).parent
VARIANTS = ("independent", "hard", "hard_popart", "soft", "soft_1.0e-5", "hard_pcgrad", "hard_popart_pcgrad")


def main() -> None:
    runs = finished_runs(HERE / "runs")
    for group in ("tuning", "budget_4m"):  # run.sh's jobs of those names write there
        runs.update({f"{group}/{v}": seeds for v, seeds in finished_runs(HERE / "runs" / group).items()})
    metrics = {(v, s): read_metrics(d) for v, seeds in runs.items() for s, d in seeds.items()}
    games = [t for t in dict.fromkeys(r["task"] for rows in metrics.values() for r in rows) if t != "mean"]
    final = {key: {g: eval_curve(rows, g)[1][-1] for g in games} for key, rows in metrics.items()}
    variants = [v for v in VARIANTS if v in runs]

    lines = [
        "# MinAtar-5 through pgx at 2,048,000 env steps per game",
        "",
        "Final greedy return (epsilon 0, 16 evaluation episodes per game at the end of training), mean ± std over seeds.",
        "",
        "| game | " + " | ".join(variants) + " |",
        "| --- |" + " ---: |" * len(variants),
    ]
    for g in games:
        cells = [mean_std([final[v, s][g] for s in runs[v]]) for v in variants]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("| seeds | " + " | ".join(",".join(str(s) for s in sorted(runs[v])) for v in variants) + " |")

    # Return relative to independent, per game on the mean over seeds, then averaged over games.
    base = {g: np.mean([final["independent", s][g] for s in runs["independent"]]) for g in games} if "independent" in runs else {}
    lines += ["", "Mean over games of (variant's mean final return) / (independent's mean final return):", ""]
    lines += ["| variant | relative to independent | per game |", "| --- | ---: | --- |"]
    for v in variants:
        ratios = {g: np.mean([final[v, s][g] for s in runs[v]]) / base[g] for g in games if base.get(g, 0) > 0}
        per_game = ", ".join(f"{g.split('-')[-1]} {r:.2f}" for g, r in ratios.items())
        overall = f"{np.mean(list(ratios.values())):.2f}" if ratios else "n/a"
        lines.append(f"| {v} | {overall} | {per_game} |")

    tuning = sorted((v, s) for v, seeds in runs.items() if v.startswith(("soft_sweep_", "tuning/")) for s in seeds)
    if tuning:
        lines += [
            "",
            "Choices made on seed 0 only, at 512,000 env steps per game (final greedy return): the soft "
            "lambda, and whether a wider shared torso helps hard sharing (hard_wide: 32 channels, 256 units).",
            "",
        ]
        lines += ["| run | " + " | ".join(games) + " | mean |", "| --- |" + " ---: |" * (len(games) + 1)]
        for v, s in sorted(tuning, key=lambda key: (not key[0].startswith("tuning/"), key[0])):
            values = [final[v, s][g] for g in games]
            label = f"soft lambda {v.removeprefix('soft_sweep_')}" if v.startswith("soft_sweep_") else v.removeprefix("tuning/")
            lines.append(f"| {label} | " + " | ".join(f"{x:.2f}" for x in values) + f" | {np.mean(values):.2f} |")

    longer = sorted(v for v in runs if v.startswith("budget_4m/"))
    if "budget_4m/independent" in longer:
        lines += [
            "",
            "A longer budget: 4,096,000 env steps per game, the same settings otherwise (run.sh with "
            "STEPS=4096000, in runs/budget_4m). Final greedy return, mean ± std over seeds, and relative to "
            "independent at the same budget (mean over games of per-game ratios):",
            "",
        ]
        lines += [
            "| run | seeds | " + " | ".join(games) + " | relative to independent |",
            "| --- | --- |" + " ---: |" * (len(games) + 1),
        ]
        base_4m = {g: np.mean([final["budget_4m/independent", s][g] for s in runs["budget_4m/independent"]]) for g in games}
        for v in longer:
            cells = [mean_std([final[v, s][g] for s in runs[v]]) for g in games]
            ratios = [np.mean([final[v, s][g] for s in runs[v]]) / base_4m[g] for g in games if base_4m[g] > 0]
            seeds = ",".join(str(s) for s in sorted(runs[v]))
            lines.append(f"| {v.removeprefix('budget_4m/')} | {seeds} | " + " | ".join(cells) + f" | {np.mean(ratios):.2f} |")

    lines += ["", "Throughput and wall time per run (env steps/s summed over the five games, mean over the run's chunks):", ""]
    lines += ["| run | env steps/s | wall time (min) | commit |", "| --- | ---: | ---: | --- |"]
    total_s = 0.0
    for (v, s), rows in sorted(metrics.items()):
        rate = np.mean([r["steps_per_sec"] for r in rows if r["task"] == "mean"][1:])  # first chunk compiles
        wall = float((runs[v][s] / "wall_time.txt").read_text().split()[0])
        total_s += wall
        commit = (runs[v][s] / "commit.txt").read_text().split()[0][:10] if (runs[v][s] / "commit.txt").is_file() else "?"
        lines.append(f"| {v} seed {s} | {rate:,.0f} | {wall / 60:.1f} | {commit} |")
    lines += ["", f"All runs together: {total_s / 3600:.2f} hours of wall time."]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, axes = plt.subplots(1, len(games), figsize=(4 * len(games), 3.4))
    for ax, g in zip(np.atleast_1d(axes), games):
        for v in variants:
            curves = [eval_curve(metrics[v, s], g) for s in runs[v]]
            n = min(len(c[1]) for c in curves)
            steps = curves[0][0][:n]
            values = np.stack([c[1][:n] for c in curves])
            mean, std = values.mean(axis=0), values.std(axis=0)
            ax.plot(steps, mean, label=f"{v} ({len(curves)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(g)
        ax.set_xlabel("env steps per game")
    np.atleast_1d(axes)[0].set_ylabel("greedy return")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=110)


if __name__ == "__main__":
    main()
