"""Atari training throughput in both stepping modes against raw envpool.

For T games (Pong for T = 1; the ten Policy Distillation games for T = 10) it
measures:

- ``train (host)`` and ``train (xla)``: the whole DQN loop (acting with the
  Nature CNN, envpool stepping, pixel-replay insertion, one gradient step of
  batch 32 every 4 agent steps per game, target copies), through the same
  components ``jaxdqn train`` uses, in emulator frames/s (agent steps x frame
  skip 4, summed over games) and gradient updates/s;
- ``raw envpool``: the same pools stepped synchronously with uniformly random
  actions and nothing else (the ceiling on this machine).

Usage::

    python benchmarks/bench_atari.py                    # T = 1, about a minute on CPU
    python benchmarks/bench_atari.py --tasks 1 10       # also ten games (GPU)
    python benchmarks/bench_atari.py --seconds 20 --num-envs 16 --replay 1000000

Writes ``benchmarks/results/atari[_BACKEND].json`` and ``.md``; the faster mode
per backend is what ``atari.stepping: auto`` picks (``jaxdqn/agents/build.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.config import AtariConfig
from jaxdqn.envs.envpool_env import make_pool
from jaxdqn.running.runners import make_runner

RESULTS = Path(__file__).parent / "results"
TEN_GAMES = ["BeamRider", "Breakout", "Enduro", "Freeway", "MsPacman", "Pong", "Qbert", "Riverraid", "Seaquest", "SpaceInvaders"]
FRAME_SKIP = 4


def games(num_tasks: int) -> list[str]:
    return ["Pong-v5"] if num_tasks == 1 else [f"{g}-v5" for g in TEN_GAMES[:num_tasks]]


def train_config(num_tasks: int, stepping: str, num_envs: int, replay: int, threads: int, chunk: int) -> config.Config:
    steps = 1_000 * chunk * num_envs  # never reached: the benchmark drives the chunks itself
    return config.from_dict(
        {
            "name": "bench_atari",
            "tasks": [{"env_id": g} for g in games(num_tasks)],
            "network": {"torso": "nature_cnn"},
            "multitask": {"mode": "independent"},
            "dqn": {
                "batch_size": 32,
                "replay_capacity": replay,
                "learning_starts": chunk * num_envs,  # the timed chunks all learn
                "update_every": 4,
                "target_update_period": 2_500,
            },
            "train": {
                "num_envs": num_envs,
                "total_env_steps": steps,
                "log_every": chunk * num_envs,
                "eval_every": 0,
                "checkpoint_every": 0,
            },
            "atari": {"stepping": stepping, "num_threads": threads, "full_action_space": num_tasks > 1},
        }
    )


def measure_training(num_tasks: int, stepping: str, args) -> dict:
    cfg = train_config(num_tasks, stepping, args.num_envs, args.replay, args.threads, args.chunk)
    agent = build_agent(cfg)
    runner = make_runner(agent)
    state = agent.init(task_keys(cfg))
    started = time.perf_counter()
    for _ in range(2):  # compiles; the second chunk crosses learning_starts and compiles the update
        state, _ = runner.run(state, args.chunk)
    jax.block_until_ready(state)
    warmup_s = time.perf_counter() - started
    steps_before, updates_before = int(state.env_steps), int(state.updates)
    chunks, elapsed = 0, 0.0
    started = time.perf_counter()
    while elapsed < args.seconds:
        state, _ = runner.run(state, args.chunk)
        jax.block_until_ready(state)
        chunks += 1
        elapsed = time.perf_counter() - started
    agent_steps = (int(state.env_steps) - steps_before) * num_tasks
    for group, _ in agent.tasks.groups:
        group.close()
    return {
        "frames_per_s": agent_steps * FRAME_SKIP / elapsed,
        "agent_steps_per_s": agent_steps / elapsed,
        "updates_per_s": (int(state.updates) - updates_before) * num_tasks / elapsed,
        "warmup_s": warmup_s,
        "timed_s": elapsed,
    }


def measure_raw(num_tasks: int, args) -> dict:
    """Every game's pool stepped in turn with random actions (what one host thread can drive)."""
    options = AtariConfig(stepping="host", num_threads=args.threads, full_action_space=num_tasks > 1)
    pools = [make_pool(g, args.num_envs, options, seed=i) for i, g in enumerate(games(num_tasks))]
    rng = np.random.default_rng(0)
    for pool in pools:
        pool.reset()
    n_actions = [int(p.action_space.n) for p in pools]

    def step_all():
        for pool, n in zip(pools, n_actions):
            pool.send(rng.integers(0, n, args.num_envs).astype(np.int32))
        for pool in pools:
            pool.recv()

    for _ in range(20):
        step_all()
    steps, elapsed = 0, 0.0
    started = time.perf_counter()
    while elapsed < min(args.seconds, 10.0):
        for _ in range(50):
            step_all()
        steps += 50 * args.num_envs * num_tasks
        elapsed = time.perf_counter() - started
    for pool in pools:
        pool.close()
    return {"frames_per_s": steps * FRAME_SKIP / elapsed, "agent_steps_per_s": steps / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", type=int, default=[1], help="numbers of games T (1: Pong; up to 10)")
    parser.add_argument("--modes", nargs="+", default=["host", "xla"], choices=["host", "xla"])
    parser.add_argument("--num-envs", type=int, default=8, help="envs per game")
    parser.add_argument("--threads", type=int, default=0, help="envpool threads per game (0: one per env)")
    parser.add_argument("--replay", type=int, default=50_000, help="replay capacity per game (frames)")
    parser.add_argument(
        "--chunk", type=int, default=None, help="iterations per compiled chunk (default: 10 on CPU, 50 elsewhere)"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per training measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.chunk is None:  # a CPU takes a good part of a second per update of the Nature CNN
        args.chunk = 10 if jax.default_backend() == "cpu" else 50

    rows = []
    for num_tasks in args.tasks:
        raw = measure_raw(num_tasks, args)
        row = {"tasks": num_tasks, "num_envs": args.num_envs, "raw_frames_per_s": round(raw["frames_per_s"])}
        for mode in args.modes:
            result = measure_training(num_tasks, mode, args)
            row[f"{mode}_frames_per_s"] = round(result["frames_per_s"])
            row[f"{mode}_updates_per_s"] = round(result["updates_per_s"], 1)
            row[f"{mode}_warmup_s"] = round(result["warmup_s"], 1)
        timed = [m for m in args.modes if f"{m}_frames_per_s" in row]
        row["faster"] = max(timed, key=lambda m: row[f"{m}_frames_per_s"])
        rows.append(row)
        print(json.dumps(row), flush=True)

    machine = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "envpool": __import__("envpool").__version__,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    settings = {
        "network": "nature_cnn",
        "batch_size": 32,
        "update_every_agent_steps": 4,
        "num_envs": args.num_envs,
        "envpool_threads": args.threads,
        "replay": args.replay,
        "chunk": args.chunk,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if machine["backend"] == "cpu" else f"_{machine['backend']}"
    (args.out / f"atari{suffix}.json").write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2))
    lines = [
        f"Atari DQN training throughput ({machine['backend']}: {', '.join(machine['devices'][:1])}; "
        f"{machine['cpu_count']} CPU cores; jax {machine['jax']}, envpool {machine['envpool']}).",
        f"Pong (T = 1) or the ten Policy Distillation games; Nature CNN, batch 32, one update every 4 agent steps per game, "
        f"{args.num_envs} envs per game, replay {args.replay:,} frames per game. Frames = agent steps x 4, summed over games.",
        f"Command: `python benchmarks/{machine['command']}`",
        "",
        "| games T | raw envpool frames/s (ceiling) | "
        + " | ".join(f"train {m} frames/s | {m} updates/s" for m in args.modes)
        + " | faster |",
        "| ---: | ---: | " + " | ".join("---: | ---:" for _ in args.modes) + " | --- |",
    ]
    for r in rows:
        cells = " | ".join(f"{r[f'{m}_frames_per_s']:,} | {r[f'{m}_updates_per_s']:,}" for m in args.modes)
        lines.append(f"| {r['tasks']} | {r['raw_frames_per_s']:,} | {cells} | {r['faster']} |")
    (args.out / f"atari{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
