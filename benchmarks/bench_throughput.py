"""Training throughput of whole configs, one after another in one process.

For each ``--run LABEL CONFIG [KEY=VALUE ...]`` it builds the config's system (DQN or PQN),
runs one compiled chunk (which compiles; its time is the compile time) and then times
chunks for ``--seconds``: env steps/s summed over the tasks. Learning runs at the config's
rate from the first iteration it is due, so a DQN config should be timed past its
``dqn.learning_starts`` (``--warmup``).

Usage::

    python benchmarks/bench_throughput.py --tag pqn_minatar5 \\
        --run independent configs/minatar5_pqn_independent.yaml \\
        --run hard configs/minatar5_pqn_hard.yaml \\
        --run hard_input_ln_hlg configs/minatar5_pqn_hard.yaml network.task_input_layers=true \\
            dqn.loss=hl_gauss dqn.hl_gauss_bins=101 dqn.hl_gauss_min=-10 dqn.hl_gauss_max=30 \\
        --run soft_1.0e-5 configs/minatar5_pqn_soft.yaml multitask.soft_lambda=1.0e-5

Writes ``benchmarks/results/throughput_<backend>[_<tag>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

import machine_record
from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys

RESULTS = Path(__file__).parent / "results"


def measure(cfg: config.Config, chunk: int, seconds: float, warmup: int) -> dict:
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    started = time.perf_counter()
    state = jax.block_until_ready(agent.run(state, chunk)[0])
    compile_s = time.perf_counter() - started
    for _ in range(warmup):
        state = jax.block_until_ready(agent.run(state, chunk)[0])
    rates = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or not rates:
        call_started = time.perf_counter()
        state = jax.block_until_ready(agent.run(state, chunk)[0])
        rates.append(cfg.num_tasks * cfg.train.num_envs * chunk / (time.perf_counter() - call_started))
    return {
        "env_steps_per_s": round(sum(rates) / len(rates), 1),
        "lowest": round(min(rates), 1),
        "highest": round(max(rates), 1),
        "chunks": len(rates),
        "compile_s": round(compile_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run",
        nargs="+",
        action="append",
        required=True,
        metavar="LABEL CONFIG [KEY=VALUE",
        help="a row: label, config, overrides",
    )
    parser.add_argument("--chunk", type=int, default=128, help="iterations per compiled call (PQN: a multiple of the rollout)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    parser.add_argument("--warmup", type=int, default=0, help="untimed chunks after the compiling one")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    for run in args.run:
        if len(run) < 2:
            parser.error(f"--run {' '.join(run)}: wants a label and a config, then any KEY=VALUE overrides")

    rows = []
    for label, path, *overrides in args.run:
        cfg = config.load(path, ["train.progress=false", *overrides])
        row = {"label": label, "config": path, "overrides": overrides, "tasks": cfg.num_tasks, "system": cfg.system}
        row.update(measure(cfg, args.chunk, args.seconds, args.warmup))
        rows.append(row)
        print(json.dumps(row), flush=True)

    machine = machine_record.machine("%Y-%m-%d %H:%M UTC")
    backend = machine["backend"]
    settings = {"chunk": args.chunk, "seconds": args.seconds, "warmup": args.warmup}
    stem = f"throughput_{backend}" + (f"_{args.tag}" if args.tag else "")
    lines = [
        f"Training throughput; {machine['device_kind']} ({backend}, {machine['cpu_count']} CPUs), jax {machine['jax']}, "
        f"{machine['date']}; chunks of {args.chunk} iterations, timed for {args.seconds:g} s after the compiling one.",
        "env steps/s summed over the tasks: mean over the timed chunks (lowest-highest).",
        "",
        "| run | system | tasks | env steps/s | compile (s) | config and overrides |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        what = " ".join([r["config"], *r["overrides"]])
        lines.append(
            f"| {r['label']} | {r['system']} | {r['tasks']} | {r['env_steps_per_s']:,.0f} ({r['lowest']:,.0f}-{r['highest']:,.0f}) "
            f"| {r['compile_s']} | `{what}` |"
        )
    machine_record.write(args.out, stem, machine, settings, rows, lines)


if __name__ == "__main__":
    main()
