"""Table of the PopArt reward-scale experiment (experiments/popart_scale/run.sh)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from jaxdqn.io.run_outputs import read_metrics

HERE = Path(__file__).parent
TASKS = ("raw", "x100")  # task names; in the "unscaled" control "x100" has reward_scale 1
SETTINGS = ("popart-false", "popart-true", "unscaled")


def eval_curve(rows, task) -> dict[int, float]:
    return {int(r["env_steps"]): r["eval_return"] for r in rows if r["task"] == task and not math.isnan(r["eval_return"])}


def mean_training_return(rows, task) -> float:
    values = [r["episode_return"] for r in rows if r["task"] == task and not math.isnan(r["episode_return"])]
    return sum(values) / len(values) if values else math.nan


def main() -> None:
    curves = defaultdict(dict)  # (setting, task) -> seed -> {env_steps: eval_return}
    training = defaultdict(dict)  # (setting, task) -> seed -> mean training episode return over the run
    for run_dir in sorted((HERE / "runs").glob("*_s*")):
        if not (run_dir / "metrics.csv").is_file():
            continue
        setting, seed = run_dir.name.rsplit("_s", 1)
        rows = read_metrics(run_dir)
        for task in TASKS:
            curves[setting, task][int(seed)] = eval_curve(rows, task)
            training[setting, task][int(seed)] = mean_training_return(rows, task)
    steps = sorted({s for per_seed in curves.values() for c in per_seed.values() for s in c})
    seeds = sorted({s for per_seed in curves.values() for s in per_seed})
    lines = [
        "Greedy evaluation return (20 episodes, the env's own reward, max 500) of each task, mean over seeds "
        f"{', '.join(map(str, seeds))}; 'last, per seed': the last evaluation of each seed.",
        "",
        "| setting | task | " + " | ".join(f"{s // 1000}k" for s in steps) + " | last, per seed | training return |",
        "| --- | --- |" + " ---: |" * (len(steps) + 2),
    ]
    for setting in SETTINGS:
        for task in TASKS:
            per_seed = curves.get((setting, task), {})
            cells = []
            for s in steps:
                values = [c[s] for c in per_seed.values() if s in c]
                cells.append(f"{sum(values) / len(values):.1f}" if values else "-")
            last = [f"{per_seed[k][steps[-1]]:.0f}" for k in sorted(per_seed) if steps and steps[-1] in per_seed[k]]
            train_values = list(training.get((setting, task), {}).values())
            train_mean = f"{sum(train_values) / len(train_values):.1f}" if train_values else "-"
            lines.append(f"| {setting} | {task} | " + " | ".join(cells) + f" | {' / '.join(last)} | {train_mean} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    lines += [
        "",
        "training return: the mean over the run (20 host visits) of each visit's mean return of the training",
        "episodes that ended (epsilon-greedy), mean over seeds.",
        "",
        f"Summarised at commit {commit or 'unknown'}.",
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
