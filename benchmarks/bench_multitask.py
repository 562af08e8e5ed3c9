"""Multi-task throughput: one compiled step over T tasks vs a Python loop over T.

For each T it measures task-updates/s and env frames/s of

- ``vmap``: the compiled multi-task iteration, networks vmapped over stacked
  parameters;
- ``unroll``: the same iteration with the T networks written out one after
  another inside the one compiled function;
- ``loop``: the single-task iteration, jitted once, called T times per
  iteration round from Python (one state per task);
- ``hard`` / ``pcgrad``: the compiled iteration in hard sharing (shared torso,
  a head per task), with plain gradients or with PCGrad on the shared torso
  (``multitask.gradient_surgery: pcgrad``), to measure what the surgery costs.

Every iteration does one env step in each of ``num_envs`` envs per task and
one gradient update per task (``update_every = num_envs``), so a chunk of K
iterations is ``T*K`` task-updates and ``T*K*num_envs`` env frames.

Usage::

    python benchmarks/bench_multitask.py --net minatar --tasks 1 2 4 8 16
    python benchmarks/bench_multitask.py --net mlp --tasks 1 2 4 8 16
    python benchmarks/bench_multitask.py --net minatar --tasks 5 8 --forms hard pcgrad --tag surgery

Writes ``benchmarks/results/multitask_<net>_<backend>[_<tag>].json`` / ``.md`` / ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys

RESULTS = Path(__file__).parent / "results"

NETS = {
    # MinAtar network on Breakout-MinAtar, batch 32 (Young & Tian 2019 settings).
    "minatar": {"env_id": "Breakout-MinAtar", "network": {"torso": "minatar_cnn"}, "batch_size": 32},
    # CartPole MLP 120-84, batch 128.
    "mlp": {"env_id": "CartPole-v1", "network": {"torso": "mlp", "hidden_sizes": [120, 84]}, "batch_size": 128},
}


FORMS = ("vmap", "unroll", "loop", "hard", "pcgrad")
SHARING = {"hard": "none", "pcgrad": "pcgrad"}  # hard-sharing forms -> multitask.gradient_surgery


def make_config(net: str, num_tasks: int, batching: str, num_envs: int, surgery: str | None = None) -> config.Config:
    """Independent tasks, or hard sharing with ``surgery`` ("none" / "pcgrad") when given."""
    spec = NETS[net]
    multitask = {"mode": "independent", "task_batching": batching}
    if surgery is not None:
        multitask = {"mode": "hard", "task_batching": batching, "gradient_surgery": surgery}
    return config.from_dict(
        {
            "name": "bench",
            "tasks": [{"env_id": spec["env_id"]}] * num_tasks,
            "network": spec["network"],
            "multitask": multitask,
            "dqn": {
                "batch_size": spec["batch_size"],
                "replay_capacity": 10_000,
                "learning_starts": 0,
                "update_every": num_envs,
                "target_update_period": 500,
            },
            "train": {
                "num_envs": num_envs,
                "total_env_steps": num_envs,
                "log_every": num_envs,
                "eval_every": 0,
                "checkpoint_every": 0,
            },
        }
    )


def _time_chunks(step, seconds: float) -> tuple[float, int]:
    """Calls ``step()`` (which blocks) until ``seconds`` have passed; returns (elapsed, calls)."""
    calls, started = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed, calls


def measure_compiled(
    net: str, num_tasks: int, batching: str, num_envs: int, chunk: int, seconds: float, surgery: str | None = None
) -> dict:
    cfg = make_config(net, num_tasks, batching, num_envs, surgery)
    agent = build_agent(cfg)
    holder = {"state": agent.init(task_keys(cfg))}
    started = time.perf_counter()
    holder["state"] = jax.block_until_ready(agent.run(holder["state"], chunk)[0])
    compile_s = time.perf_counter() - started

    def step():
        holder["state"] = jax.block_until_ready(agent.run(holder["state"], chunk)[0])

    elapsed, calls = _time_chunks(step, seconds)
    return {"task_updates_per_s": num_tasks * chunk * calls / elapsed, "compile_s": compile_s}


def measure_loop(net: str, num_tasks: int, num_envs: int, chunk: int, seconds: float) -> dict:
    cfg = make_config(net, 1, "auto", num_envs)  # the plain single-task network
    agent = build_agent(cfg)  # one single-task step, compiled once, called T times
    states = [agent.init(task_keys(cfg)) for _ in range(num_tasks)]
    started = time.perf_counter()
    states[0] = jax.block_until_ready(agent.run(states[0], chunk)[0])
    compile_s = time.perf_counter() - started

    def step():
        for i in range(num_tasks):
            states[i] = agent.run(states[i], chunk)[0]
        jax.block_until_ready(states)

    elapsed, calls = _time_chunks(step, seconds)
    return {"task_updates_per_s": num_tasks * chunk * calls / elapsed, "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=sorted(NETS), default="minatar")
    parser.add_argument("--tasks", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--forms", nargs="+", default=["vmap", "unroll", "loop"], choices=list(FORMS))
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--num-envs", type=int, default=1, help="envs per task (one update per iteration either way)")
    parser.add_argument("--chunk", type=int, default=100, help="iterations per compiled call")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    for num_tasks in args.tasks:
        row = {"tasks": num_tasks}
        for form in args.forms:
            if form == "loop":
                result = measure_loop(args.net, num_tasks, args.num_envs, args.chunk, args.seconds)
            elif form in SHARING:
                result = measure_compiled(
                    args.net, num_tasks, "auto", args.num_envs, args.chunk, args.seconds, surgery=SHARING[form]
                )
            else:
                result = measure_compiled(args.net, num_tasks, form, args.num_envs, args.chunk, args.seconds)
            row[f"{form}_task_updates_per_s"] = round(result["task_updates_per_s"], 1)
            row[f"{form}_env_frames_per_s"] = round(result["task_updates_per_s"] * args.num_envs, 1)
            row[f"{form}_compile_s"] = round(result["compile_s"], 2)
        if "loop" in args.forms:
            for form in ("vmap", "unroll"):
                if form in args.forms:
                    row[f"{form}_over_loop"] = round(row[f"{form}_task_updates_per_s"] / row["loop_task_updates_per_s"], 2)
        if "hard" in args.forms and "pcgrad" in args.forms:
            row["pcgrad_cost_over_hard"] = round(row["hard_task_updates_per_s"] / row["pcgrad_task_updates_per_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)

    backend = jax.default_backend()
    machine = {
        "backend": backend,
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
    settings = {"net": args.net, **NETS[args.net], "num_envs": args.num_envs, "chunk": args.chunk, "seconds": args.seconds}
    stem = f"multitask_{args.net}_{backend}" + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2))
    write_table(args.out / f"{stem}.md", rows, args.forms, machine, settings)
    write_plot(args.out / f"{stem}.png", rows, args.forms, machine, settings)
    print((args.out / f"{stem}.md").read_text())


def write_table(path: Path, rows, forms, machine, settings) -> None:
    lines = [
        f"Multi-task step, {settings['net']} network on {settings['env_id']}, batch {settings['batch_size']}, "
        f"{settings['num_envs']} env(s) per task; {machine['device_kind']} ({machine['backend']}), jax {machine['jax']}.",
        "Task-updates/s (one gradient update of one task = one task-update; env frames/s = task-updates/s x envs per task).",
        "",
    ]
    header = ["T"] + [f"{f} updates/s" for f in forms] + [f"{f} per-task cost (us)" for f in forms]
    header += [f"{f}/loop" for f in ("vmap", "unroll") if f in forms and "loop" in forms]
    surgery = "hard" in forms and "pcgrad" in forms
    header += ["pcgrad cost / hard"] if surgery else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + " ---: |" * len(header))
    for r in rows:
        cells = [str(r["tasks"])]
        cells += [f"{r[f'{f}_task_updates_per_s']:,.0f}" for f in forms]
        cells += [f"{1e6 / r[f'{f}_task_updates_per_s']:,.0f}" for f in forms]
        cells += [f"{r[f'{f}_over_loop']:.2f}x" for f in ("vmap", "unroll") if f in forms and "loop" in forms]
        cells += [f"{r['pcgrad_cost_over_hard']:.2f}x"] if surgery else []
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, rows, forms, machine, settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    tasks = [r["tasks"] for r in rows]
    for form in forms:
        rate = [r[f"{form}_task_updates_per_s"] for r in rows]
        axes[0].plot(tasks, rate, marker="o", label=form)
        axes[1].plot(tasks, [1e6 / x for x in rate], marker="o", label=form)
    axes[0].set_ylabel("task-updates / s")
    axes[1].set_ylabel("time per task-update (us)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tasks T")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{settings['net']} network, batch {settings['batch_size']} - {machine['device_kind']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
