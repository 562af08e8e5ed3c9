"""Table and curves of the MinAtar-5 distillation runs (run.sh writes them).

    python experiments/minatar5_distill/summarize.py [RUNS [OUT]]

Reads RUNS/multi_s*/ and RUNS/quarter_s*/ (summary.json, distill.csv, the
student's checkpoint metadata) and the teacher checkpoints they name; writes
OUT/results.md, OUT/results.json and OUT/curves.png. Defaults: RUNS =
experiments/minatar5_distill/runs, OUT = experiments/minatar5_distill.

"% of teacher" is 100 * student / teacher greedy return over the same
evaluation episodes (same keys) of the same run, at its last evaluation;
mean ± standard deviation over seeds, then each seed's value.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.networks import NetworkSpec, QNetwork, num_params
from jaxdqn.reports.checkpoint_summary import param_counts
from jaxdqn.running.stored import read_info

HERE = Path(__file__).resolve().parent


def pm(values, digits=1) -> str:
    """Mean ± std over seeds; n/a values (a teacher that scored 0) are left out and counted."""
    values = np.asarray(values, float)
    known = values[~np.isnan(values)]
    if not len(known):
        return "n/a"
    text = f"{known[0]:.{digits}f}" if len(known) == 1 else f"{known.mean():.{digits}f} ± {known.std():.{digits}f}"
    return text if len(known) == len(values) else f"{text} ({len(known)} of {len(values)} seeds)"


def nanmean(stack, axis=0) -> np.ndarray:
    """Mean over ``axis`` ignoring n/a (NaN) entries; NaN where all are n/a."""
    stack = np.asarray(stack, float)
    counts = (~np.isnan(stack)).sum(axis=axis)
    sums = np.nansum(stack, axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def listed(values, digits=1) -> str:
    return ", ".join("n/a" if math.isnan(v) else f"{v:.{digits}f}" for v in np.asarray(values, float))


def own_game_params(spec: dict, obs_shape, num_actions: int) -> int:
    """Parameters of a network of this spec on one game's own observations and actions
    (an independent run pads every game's frames to the widest game and its head to the most actions)."""
    net = QNetwork(NetworkSpec.from_dict(spec), num_actions)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, *obs_shape), jnp.float32))
    return num_params(shapes)


def finished_runs(runs: Path, prefix: str) -> list[Path]:
    return sorted(d for d in runs.glob(f"{prefix}_s*") if (d / "summary.json").is_file())


def collect(runs: Path, prefix: str) -> dict:
    """Final returns, % of teacher and agreement per task and seed; parameter counts."""
    dirs = finished_runs(runs, prefix)
    if not dirs:
        return {}
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    student = read_info(str(dirs[0]))
    student_stored, student_per_task = param_counts(student)
    teachers = student.meta["teachers"]
    teacher_stored, teacher_per_task = param_counts(read_info(teachers[0]["checkpoint"]))
    tasks = {}
    for i, label in enumerate(summaries[0]["tasks"]):
        tasks[label] = {
            key: [s["tasks"][label][key] for s in summaries]
            for key in ("teacher_return", "student_return", "percent_of_teacher", "agreement")
        }
        tasks[label]["teacher_task"] = teachers[i]["task"]
        if student.num_tasks == 1:  # a single-game student sees its game's own frames
            tasks[label]["teacher_params_own_game"] = own_game_params(
                teachers[i]["network"], student.obs_shape, student.task_num_actions(i)
            )
    return {
        "runs": [str(d) for d in dirs],
        "seeds": [d.name.rsplit("_s", 1)[1] for d in dirs],
        "teacher_runs": [read_info(str(d)).meta["teachers"][0]["checkpoint"] for d in dirs],
        "env_steps_per_task": summaries[0]["env_steps"],
        "eval_episodes": summaries[0]["eval_episodes"],
        "student_network": student.meta["network"],
        "student_params_stored": student_stored,
        "student_params_per_task": student_per_task,
        "teacher_network": teachers[0]["network"],
        "teacher_params_per_task": teacher_per_task,
        "teacher_params_stored": teacher_stored,
        "tasks": tasks,
    }


def curves(runs: Path, prefix: str) -> dict[str, dict[str, np.ndarray]]:
    """task -> {"steps": [N], "student": [S, N], "teacher": [S, N], "percent": [S, N]} (seeds cut to a common length)."""
    per_seed: dict[str, list[list[dict]]] = {}
    for d in finished_runs(runs, prefix):
        rows: dict[str, list[dict]] = {}
        with (d / "distill.csv").open() as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["task"], []).append(row)
        for task, points in rows.items():
            per_seed.setdefault(task, []).append(points)
    out = {}
    for task, seeds in per_seed.items():
        n = min(len(s) for s in seeds)

        def col(key, n=n, seeds=seeds):
            return np.array([[float(p[key]) for p in s[:n]] for s in seeds])

        out[task] = {
            "steps": col("env_steps")[0],
            "student": col("student_return"),
            "teacher": col("teacher_return"),
            "percent": col("percent_of_teacher"),
        }
    return out


def tables(multi: dict, quarter: dict) -> list[str]:
    lines = []
    if multi:
        t, s = multi["teacher_params_per_task"], multi["student_params_stored"]
        n = len(multi["tasks"])
        lines += [
            f"## {n} teachers into one multi-task student",
            "",
            f"Teachers: the {n} networks of one independent run each (run `independent_s<seed>` teaches student seed <seed>), "
            f"{t:,} parameters per game ({n} x {t:,} = {n * t:,} in all). Student: one MinAtar CNN torso "
            f"({multi['student_network'].get('cnn_channels', 16)} channels, {multi['student_network'].get('cnn_hidden', 128)} units) "
            f"shared by all games and a head per game: **{s:,} parameters, {100 * s / t:.1f}% of one teacher**. "
            f"{multi['env_steps_per_task']:,} env steps of teacher play per game; greedy returns over "
            f"{multi['eval_episodes']} episodes per game, the same episodes for student and teacher. "
            f"Seeds: {', '.join(multi['seeds'])}.",
            "",
            "| game | teacher return | student return | % of teacher | per seed | greedy agreement |",
            "|---|---|---|---|---|---|",
        ]
        for label, r in multi["tasks"].items():
            lines.append(
                f"| {label} | {pm(r['teacher_return'], 2)} | {pm(r['student_return'], 2)} | **{pm(r['percent_of_teacher'])}** "
                f"| {listed(r['percent_of_teacher'])} | {pm(r['agreement'], 3)} |"
            )
        per_seed_mean = nanmean([r["percent_of_teacher"] for r in multi["tasks"].values()])
        lines += [
            f"| mean over games | | | **{pm(per_seed_mean)}** | {listed(per_seed_mean)} | |",
            "",
            "n/a: the teacher's return was 0 on those episodes, so no percentage exists; such seeds are left out of the "
            "mean and counted. The mean over games is taken per seed, then over seeds.",
            "",
        ]
    if quarter:
        ((label, r),) = quarter["tasks"].items()
        s, t_stored, t_own = quarter["student_params_per_task"], quarter["teacher_params_per_task"], r["teacher_params_own_game"]
        net = quarter["student_network"]
        lines += [
            "## One teacher into a single-game student at ~25% of its parameters",
            "",
            f"Teacher: task {r['teacher_task']} ({label}) of the same independent runs. Student: MinAtar CNN with "
            f"{net.get('cnn_channels', 16)} channels and {net.get('cnn_hidden', 128)} units. The teacher's network as stored has "
            f"{t_stored:,} parameters (frames padded to the widest game, a head over the most actions); on {label}'s own "
            f"frames and actions the same architecture has {t_own:,}. {quarter['env_steps_per_task']:,} env steps of teacher play. "
            f"Seeds: {', '.join(quarter['seeds'])}.",
            "",
            "| game | teacher params | student params | teacher return | student return | % of teacher | per seed | greedy agreement |",
            "|---|---|---|---|---|---|---|---|",
            f"| {label} | {t_stored:,} ({t_own:,} on its own input) | {s:,} ({100 * s / t_stored:.1f}%; {100 * s / t_own:.1f}%) "
            f"| {pm(r['teacher_return'], 2)} | {pm(r['student_return'], 2)} | **{pm(r['percent_of_teacher'])}** "
            f"| {listed(r['percent_of_teacher'])} | {pm(r['agreement'], 3)} |",
            "",
        ]
    return lines


def plot(runs: Path, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    multi, quarter = curves(runs, "multi"), curves(runs, "quarter")
    games = list(multi) or list(quarter)
    if not games:
        return
    cols = 3
    rows = math.ceil((len(games) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    axes = axes.ravel()
    thousands = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k")

    def band(ax, xs, ys, label, **style):
        (line,) = ax.plot(xs, nanmean(ys), marker=".", label=label, **style)
        ax.fill_between(xs, np.fmin.reduce(ys, axis=0), np.fmax.reduce(ys, axis=0), color=line.get_color(), alpha=0.15)

    for ax, game in zip(axes, games):
        if game in multi:
            c = multi[game]
            band(ax, c["steps"], c["student"], "multi-task student")
            ax.plot(c["steps"], c["teacher"].mean(axis=0), color="grey", linestyle="--", label="teacher (same episodes)")
        if game in quarter:
            c = quarter[game]
            band(ax, c["steps"], c["student"], "25% CNN student")
            ax.plot(c["steps"], c["teacher"].mean(axis=0), color="grey", linestyle=":", label="teacher (25% student's episodes)")
        ax.set_title(game, fontsize=10)
        ax.set_ylabel("greedy return")
    last = axes[len(games)]
    if multi:
        mean_percent = nanmean([c["percent"] for c in multi.values()])  # [S, N]
        band(last, next(iter(multi.values()))["steps"], mean_percent, "multi-task, mean over games")
    for game, c in quarter.items():
        band(last, c["steps"], c["percent"], f"25% CNN student, {game}")
    last.axhline(100, color="grey", linewidth=1)
    last.set_title("student, % of teacher", fontsize=10)
    last.set_ylabel("% of teacher")
    for ax in axes[: len(games) + 1]:
        ax.xaxis.set_major_formatter(thousands)
        ax.set_xlabel("env steps per game (teacher acting)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(games) + 1 :]:
        ax.axis("off")
    fig.suptitle("MinAtar-5 policy distillation (KL, teacher temperature 0.01); mean over seeds, band = min..max", fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(runs: str = str(HERE / "runs"), out: str = str(HERE)) -> None:
    runs_dir, out_dir = Path(runs), Path(out)
    multi, quarter = collect(runs_dir, "multi"), collect(runs_dir, "quarter")
    if not multi and not quarter:
        sys.exit(f"summarize: no finished runs (multi_s*/summary.json, quarter_s*/summary.json) in {runs_dir}")
    lines = tables(multi, quarter)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps({"multi": multi, "quarter": quarter}, indent=2))
    plot(runs_dir, out_dir / "curves.png")
    print("\n".join(lines))
    print(f"wrote {out_dir / 'results.md'}, {out_dir / 'results.json'}, {out_dir / 'curves.png'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
