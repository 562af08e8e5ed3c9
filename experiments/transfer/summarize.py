"""Tables and figures of the distillation experiments from their run directories.

    python experiments/transfer/summarize.py runs/xfer experiments/transfer

Reads RUNS/distill_{cartpole,breakout,multi}_s*/ (summary.json, distill.csv,
checkpoints) and the teachers' checkpoints; writes OUT/distill_results.md,
OUT/distill_curves.png and OUT/distill_results.json. (The transfer table and
figure come from ``jaxdqn compare``; see run_all.sh.)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from jaxdqn.reports.checkpoint_summary import param_counts

from jaxdqn.running.stored import read_info


def load(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def params_of(path: Path | str) -> int:
    return param_counts(read_info(str(path)))[1]


def pm(values, digits=1) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}" if len(values) > 1 else f"{values.mean():.{digits}f}"


def single_teacher_rows(runs: Path, prefix: str, env: str) -> tuple[list[str], dict]:
    dirs = sorted(runs.glob(f"{prefix}_s*"))
    if not dirs:
        return [], {}
    summaries = [load(d) for d in dirs]
    (label,) = summaries[0]["tasks"]
    teacher_ckpt = read_info(str(dirs[0])).meta["teachers"][0]["checkpoint"]
    teacher_params, student_params = params_of(teacher_ckpt), params_of(dirs[0])
    teacher = [s["tasks"][label]["teacher_return"] for s in summaries]
    student = [s["tasks"][label]["student_return"] for s in summaries]
    percent = [s["tasks"][label]["percent_of_teacher"] for s in summaries]
    agreement = [s["tasks"][label]["agreement"] for s in summaries]
    row = (
        f"| {env} | {teacher_params:,} | {student_params:,} ({100 * student_params / teacher_params:.1f}%) "
        f"| {pm(teacher)} | {pm(student)} | **{pm(percent)}** | {', '.join(f'{p:.1f}' for p in percent)} "
        f"| {pm(agreement, 3)} | {summaries[0]['env_steps']:,} |"
    )
    data = {
        "runs": [str(d) for d in dirs],
        "teacher_params": teacher_params,
        "student_params": student_params,
        "teacher_return": teacher,
        "student_return": student,
        "percent_of_teacher": percent,
        "agreement": agreement,
        "episodes": summaries[0]["eval_episodes"],
    }
    return [row], data


def multi_teacher_rows(runs: Path) -> tuple[list[str], dict]:
    dirs = sorted(runs.glob("distill_multi_s*"))
    if not dirs:
        return [], {}
    summaries = [load(d) for d in dirs]
    meta = read_info(str(dirs[0])).meta
    rows, data = (
        [],
        {"runs": [str(d) for d in dirs], "student_params_stored": param_counts(read_info(str(dirs[0])))[0], "tasks": {}},
    )
    for i, label in enumerate(summaries[0]["tasks"]):
        teacher = [s["tasks"][label]["teacher_return"] for s in summaries]
        student = [s["tasks"][label]["student_return"] for s in summaries]
        percent = [s["tasks"][label]["percent_of_teacher"] for s in summaries]
        params = meta["config"]["tasks"][i]["env_params"]
        t_params = params_of(meta["teachers"][i]["checkpoint"])
        rows.append(
            f"| {label} | {params or 'default'} | {t_params:,} | {pm(teacher)} | {pm(student)} | **{pm(percent)}** "
            f"| {', '.join(f'{p:.1f}' for p in percent)} |"
        )
        data["tasks"][label] = {"teacher_return": teacher, "student_return": student, "percent_of_teacher": percent}
    return rows, data


def curves(runs: Path, prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """task -> (env steps, % of teacher per seed [S, N])."""
    out: dict[str, list] = {}
    for d in sorted(runs.glob(f"{prefix}_s*")):
        per_task: dict[str, list] = {}
        with (d / "distill.csv").open() as f:
            for row in csv.DictReader(f):
                per_task.setdefault(row["task"], []).append((float(row["env_steps"]), float(row["percent_of_teacher"])))
        for task, points in per_task.items():
            out.setdefault(task, []).append(points)
    result = {}
    for task, seeds in out.items():
        xs = np.array([p[0] for p in seeds[0]])
        result[task] = (xs, np.array([[p[1] for p in s] for s in seeds]))
    return result


def plot(runs: Path, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = [
        ("distill_cartpole", "CartPole-v1 (student 48-48)"),
        ("distill_breakout", "Breakout-MinAtar (MLP student 72-64)"),
        ("distill_multi", "3 CartPole teachers -> 1 student"),
    ]
    panels = [(p, t) for p, t in panels if list(runs.glob(f"{p}_s*"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (prefix, title) in zip(axes[0], panels):
        for task, (xs, ys) in curves(runs, prefix).items():
            (line,) = ax.plot(xs, ys.mean(axis=0), marker=".", label=task)
            ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15)
        ax.axhline(100, color="grey", linewidth=1)
        ax.axhline(90, color="grey", linewidth=1, linestyle="--")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        ax.set_ylim(bottom=min(ax.get_ylim()[0], 80))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps per task (teacher acting)")
        ax.set_ylabel("student return, % of teacher")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(runs: str, out: str) -> None:
    runs_dir, out_dir = Path(runs), Path(out)
    single_header = (
        "| teacher | teacher params | student params | teacher return | student return | % of teacher | per seed | greedy agreement | env steps |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows_c, data_c = single_teacher_rows(runs_dir, "distill_cartpole", "CartPole-v1 (DQN, 120-84)")
    rows_b, data_b = single_teacher_rows(runs_dir, "distill_breakout", "Breakout-MinAtar (DQN, MinAtar CNN)")
    rows_m, data_m = multi_teacher_rows(runs_dir)
    multi_header = (
        "| task (teacher) | env params | teacher params | teacher return | student return | % of teacher | per seed |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = ["## One teacher into a student with ~25% of its parameters", "", single_header, *rows_c, *rows_b, ""]
    if data_m:
        lines += [
            "## Three teachers into one multi-task student",
            "",
            f"Student: shared 64-64 torso, one head per task ({data_m['student_params_stored']:,} parameters in all).",
            "",
            multi_header,
            *rows_m,
            "",
        ]
    (out_dir / "distill_results.md").write_text("\n".join(lines))
    (out_dir / "distill_results.json").write_text(json.dumps({"cartpole": data_c, "breakout": data_b, "multi": data_m}, indent=2))
    plot(runs_dir, out_dir / "distill_curves.png")
    print("\n".join(lines))
    print(f"wrote {out_dir / 'distill_results.md'}, {out_dir / 'distill_results.json'}, {out_dir / 'distill_curves.png'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
