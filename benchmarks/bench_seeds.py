"""How the cost of a run grows with the seed axis (``train.seeds``).

For each S it builds the config's system, wraps it in ``Seeded(system, S)`` and times its
compiled chunks after the first (which compiles): env steps/s summed over seeds and tasks.
``speedup`` is that rate over S = 1's, i.e. over running the S seeds one after another;
``per seed`` is the rate each copy gets. The replay is filled past ``dqn.learning_starts``
before timing, so gradient steps run at the config's rate.

Usage::

    python benchmarks/bench_seeds.py configs/minatar_breakout_reference.yaml --seeds 1 2 4 8
    python benchmarks/bench_seeds.py configs/cartpole_dqn.yaml --seeds 1 2 4 8 16 --tag cartpole

Writes ``benchmarks/results/seeds_<backend>[_<tag>].json`` and ``.md``.
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
from jaxdqn.agents.seeds import Seeded, seed_mesh
from jaxdqn.running.train import seed_configs

RESULTS = Path(__file__).parent / "results"


def measure(cfg: config.Config, num_seeds: int, chunk: int, seconds: float) -> dict:
    cfg = config.from_dict({**config.to_dict(cfg), "train": {**config.to_dict(cfg.train), "seeds": list(range(num_seeds))}})
    system = Seeded(build_agent(cfg), num_seeds, seed_mesh(num_seeds))
    state = system.fresh_state(jax.numpy.stack([task_keys(c) for c in seed_configs(cfg)]))
    warmup = -(-cfg.dqn.learning_starts // cfg.train.num_envs)  # iterations until learning starts
    started = time.perf_counter()
    state, _ = system.run(state, chunk)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - started
    while int(state.env_steps) < warmup * cfg.train.num_envs:
        state = jax.block_until_ready(system.run(state, chunk)[0])
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls == 0:
        state = jax.block_until_ready(system.run(state, chunk)[0])
        calls += 1
    elapsed = time.perf_counter() - started
    env_steps = num_seeds * cfg.num_tasks * cfg.train.num_envs * chunk * calls
    return {"seeds": num_seeds, "env_steps_per_s": round(env_steps / elapsed, 1), "compile_s": round(compile_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--chunk", type=int, default=250, help="iterations per compiled call")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per S")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cfg = config.load(args.config, args.overrides)
    rows = []
    for num_seeds in args.seeds:
        row = measure(cfg, num_seeds, args.chunk, args.seconds)
        row["per_seed_env_steps_per_s"] = round(row["env_steps_per_s"] / num_seeds, 1)
        row["speedup"] = round(row["env_steps_per_s"] / rows[0]["env_steps_per_s"], 2) if rows else 1.0
        rows.append(row)
        print(json.dumps(row), flush=True)

    machine = machine_record.machine()
    backend = machine["backend"]
    settings = {"config": str(args.config), "overrides": args.overrides, "chunk": args.chunk, "seconds": args.seconds}
    stem = f"seeds_{backend}" + (f"_{args.tag}" if args.tag else "")
    lines = [
        f"Seed axis, `{args.config}` {' '.join(args.overrides)}; {machine['device_kind']} ({backend}, {machine['devices']} "
        f"device(s), {machine['cpu_count']} CPUs), jax {machine['jax']}, {machine['date']}.",
        "env steps/s summed over seeds and tasks, after compilation; speedup: over S = 1 (the seeds run one after another).",
        "",
        "| S | env steps/s | per seed | speedup | compile (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['seeds']} | {r['env_steps_per_s']:,.0f} | {r['per_seed_env_steps_per_s']:,.0f} | {r['speedup']:.2f}x | {r['compile_s']} |"
        )
    machine_record.write(args.out, stem, machine, settings, rows, lines)


if __name__ == "__main__":
    main()
