"""Tables and curves of the related-task experiment (experiments/classic3/run.sh).

Writes ``results.md`` and ``curves.png`` (report seeds) and ``curves_tuning.png``:
per task and variant the final greedy return, the area under the greedy learning
curve (its mean return over env steps) and the env steps to a threshold, mean ± std
over seeds; per variant the IQM over tasks and seeds of min-max-normalised final
return and curve area with 95% stratified-bootstrap intervals (rliable).

Usage: python experiments/classic3/summarize.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdqn.reports import report
from jaxdqn.io.run_outputs import read_metrics

HERE = Path(__file__).parent
VARIANTS = ("independent", "hard_input", "hard")
TUNING, REPORTED = tuple(range(0, 5)), tuple(range(10, 20))
# Returns that mean "solved" (gym's thresholds for CartPole-v1 and MountainCar-v0; -100 is the
# usual mark for Acrobot-v1) and the range used to normalise (worst and best possible returns).
THRESHOLD = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0}
RANGE = {"CartPole-v1": (0.0, 500.0), "Acrobot-v1": (-500.0, 0.0), "MountainCar-v0": (-200.0, 0.0)}


def table(runs, seeds, title: str) -> list[str]:
    variants = [v for v in VARIANTS if any(s in runs.get(v, {}) for s in seeds)]
    stats = {}  # (variant, task) -> lists
    for v in variants:
        for s in seeds:
            if s not in runs[v]:
                continue
            rows = read_metrics(runs[v][s])
            for task in report.task_names(rows):
                steps, values = report.eval_curve(rows, task)
                entry = stats.setdefault((v, task), {"final": [], "area": [], "to": [], "seeds": []})
                entry["final"].append(values[-1])
                entry["area"].append(report.curve_area(steps, values))
                entry["to"].append(report.steps_to(steps, values, THRESHOLD[task]))
                entry["seeds"].append(s)
    tasks = list(THRESHOLD)
    lines = [f"## {title}", ""]
    lines += [
        "| task | variant | seeds | final greedy return | curve area (mean return) | env steps to threshold | reached |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task in tasks:
        for v in variants:
            e = stats.get((v, task))
            if not e:
                continue
            reached = [x for x in e["to"] if not np.isnan(x)]
            to = f"{np.mean(reached):,.0f}" if reached else "-"
            lines.append(
                f"| {task} (≥ {THRESHOLD[task]:g}) | {v} | {len(e['seeds'])} | {report.mean_std(e['final'], 1)} | "
                f"{report.mean_std(e['area'], 1)} | {to} | {len(reached)}/{len(e['to'])} |"
            )
    complete = [
        v
        for v in variants
        if all((v, t) in stats and len(stats[v, t]["final"]) == len(stats[variants[0], t]["final"]) for t in tasks)
    ]
    try:
        for key, label in (("final", "final greedy return"), ("area", "curve area")):
            scores = {}
            for v in complete:
                raw = np.stack([stats[v, t][key] for t in tasks], axis=1)  # [seeds, tasks]
                low, high = np.array([RANGE[t][0] for t in tasks]), np.array([RANGE[t][1] for t in tasks])
                scores[v] = report.normalised(raw, low, high)
            iqm = report.iqm_interval(scores)
            lines += ["", f"IQM over tasks and seeds of min-max-normalised {label} (95% stratified-bootstrap interval):", ""]
            lines += ["| variant | IQM | interval |", "| --- | ---: | --- |"]
            lines += [f"| {v} | {p:.3f} | [{lo:.3f}, {hi:.3f}] |" for v, (p, lo, hi) in iqm.items()]
    except Exception as err:  # rliable missing: the tables above still stand
        lines += ["", f"(no IQM: {err})"]
    return lines


def main() -> None:
    runs = report.finished_runs(HERE / "runs")
    lines = [
        "# Three related control tasks: CartPole-v1, Acrobot-v1, MountainCar-v0",
        "",
        "Written by `python experiments/classic3/summarize.py` from `bash experiments/classic3/run.sh tuning report`.",
        "",
    ]
    lines += table(runs, REPORTED, "Reported: seeds 10-19 (not looked at before the choice)")
    lines += [""] + table(runs, TUNING, "Tuning: seeds 0-4 (settings chosen here)")
    facts = [(v, s, report.run_facts(d)) for v, seeds in runs.items() for s, d in sorted(seeds.items())]
    if facts:
        lines += [
            "",
            "| runs | mean wall time (s) | mean env steps/s (summed over tasks) | commits |",
            "| --- | ---: | ---: | --- |",
        ]
        for v in VARIANTS:
            f = [x for vv, _, x in facts if vv == v]
            if f:
                commits = ", ".join(sorted({x["commit"] for x in f}))
                lines.append(
                    f"| {v} ({len(f)}) | {np.mean([x['wall_s'] for x in f]):.0f} | {np.mean([x['steps_per_sec'] for x in f]):,.0f} | {commits} |"
                )
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for seeds, name in ((REPORTED, "curves.png"), (TUNING, "curves_tuning.png")):
        groups = {v: [runs[v][s] for s in seeds if s in runs.get(v, {})] for v in VARIANTS}
        if any(groups.values()):
            report.plot_curves(groups, HERE / name)


if __name__ == "__main__":
    main()
