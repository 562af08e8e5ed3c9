"""MinAtar backends side by side: gymnax and pgx, raw stepping and MinAtar-5 training.

Two measurements, each for both backends, one after the other in one process:

- ``ceiling``: each of the five games alone, ``--num-envs`` copies stepped under
  ``jit`` + ``vmap`` + ``lax.scan`` with random actions (through the library's
  task set, so auto-reset is included);
- ``train``: the five games trained together (``configs/minatar5_independent.yaml``,
  MinAtar CNN) with the settings of the MinAtar-5 experiment
  (experiments/minatar5/run.sh: 128 envs per game, batch 64, one update per game
  every 128 env steps), env steps/s summed over the games, compile excluded.

Usage::

    python benchmarks/bench_envs.py                 # 5 s per measurement
    python benchmarks/bench_envs.py --seconds 2
    python benchmarks/bench_envs.py --train-scaling 128 1024 4096   # pgx training only, envs per game

Writes ``benchmarks/results/envs_<backend>.json`` and ``.md`` (``--train-scaling``:
``envs_<backend>_train_scaling.json`` and ``.md``). With more envs than 128 per game an
iteration takes several updates, so updates per env step stay those of the experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from bench_single_task import measure_ceiling
from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys

RESULTS = Path(__file__).parent / "results"
GAMES = {  # game -> (gymnax id, pgx id)
    "Asterix": ("Asterix-MinAtar", "minatar-asterix"),
    "Breakout": ("Breakout-MinAtar", "minatar-breakout"),
    "Freeway": ("Freeway-MinAtar", "minatar-freeway"),
    "Seaquest": ("Seaquest-MinAtar", "minatar-seaquest"),
    "SpaceInvaders": ("SpaceInvaders-MinAtar", "minatar-space_invaders"),
}
BACKENDS = ("gymnax", "pgx")
EXPERIMENT_SETTINGS = [
    "train.num_envs=128",
    "dqn.update_every=128",
    "dqn.batch_size=64",
    "dqn.learning_starts=5120",
    "dqn.replay_capacity=100000",
    "dqn.target_update_period=250",
    "train.log_every=6400",
    "train.total_env_steps=64000",
    "train.eval_every=0",
    "train.checkpoint_every=0",
]


def measure_training(backend: str, seconds: float, num_envs: int = 128) -> dict:
    """MinAtar-5 training env steps/s; ``num_envs`` per game, one update per game every 128 env steps."""
    column = BACKENDS.index(backend)
    iterations = max(1, 6400 // num_envs)  # 6,400 env steps per game per chunk
    overrides = EXPERIMENT_SETTINGS + [
        f"train.num_envs={num_envs}",
        f"train.log_every={iterations * num_envs}",
        f"train.total_env_steps={10 * iterations * num_envs}",
    ]
    overrides += [f"tasks.{i}.env_id={ids[column]}" for i, ids in enumerate(GAMES.values())]
    cfg = config.load(Path(__file__).parents[1] / "configs" / "minatar5_independent.yaml", overrides)
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    started = time.perf_counter()
    state = jax.block_until_ready(agent.run(state, iterations)[0])  # compiles; fills replay past learning_starts
    compile_s = time.perf_counter() - started
    chunks, elapsed = 0, 0.0
    started = time.perf_counter()
    while elapsed < seconds:
        state = jax.block_until_ready(agent.run(state, iterations)[0])
        chunks += 1
        elapsed = time.perf_counter() - started
    steps = chunks * iterations * cfg.train.num_envs * cfg.num_tasks
    return {"env_steps_per_s": steps / elapsed, "compile_plus_first_chunk_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--num-envs", type=int, default=16, help="parallel envs per game for the ceiling")
    parser.add_argument("--load", default="", help="what else ran on the machine (written into the results)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--train-scaling",
        type=int,
        nargs="+",
        metavar="NUM_ENVS",
        help="only pgx MinAtar-5 training, at each of these envs per game",
    )
    args = parser.parse_args()
    if args.train_scaling:
        train_scaling(args)
        return

    ceiling = {}
    for game, ids in GAMES.items():
        for backend, env_id in zip(BACKENDS, ids):
            ceiling[game, backend] = measure_ceiling(env_id, args.num_envs, args.seconds)["env_steps_per_s"]
            print(
                json.dumps({"game": game, "backend": backend, "ceiling_env_steps_per_s": round(ceiling[game, backend])}),
                flush=True,
            )
    train = {}
    for backend in BACKENDS:
        train[backend] = measure_training(backend, args.seconds)
        print(json.dumps({"train": backend, **{k: round(v, 2) for k, v in train[backend].items()}}), flush=True)

    machine = machine_facts(args.load)
    result = {
        "machine": machine,
        "ceiling_num_envs": args.num_envs,
        "ceiling": [{"game": g, "backend": b, "env_steps_per_s": round(v)} for (g, b), v in ceiling.items()],
        "train": [
            {
                "backend": b,
                "env_steps_per_s": round(v["env_steps_per_s"]),
                "compile_plus_first_chunk_s": round(v["compile_plus_first_chunk_s"], 1),
            }
            for b, v in train.items()
        ],
        "train_pgx_over_gymnax": round(train["pgx"]["env_steps_per_s"] / train["gymnax"]["env_steps_per_s"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"_{jax.default_backend()}"
    (args.out / f"envs{suffix}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"MinAtar through gymnax and pgx ({machine['backend']}, {machine['cpu_count']} CPU cores, jax {machine['jax']}, "
        f"{machine['date']}; other load: {machine['load']}). Command: `python benchmarks/bench_envs.py --seconds {args.seconds:g}`.",
        "",
        f"Raw stepping, {args.num_envs} envs per game, random actions (env steps/s):",
        "",
        "| game | gymnax | pgx | pgx / gymnax |",
        "| --- | ---: | ---: | ---: |",
    ]
    for game in GAMES:
        g, p = ceiling[game, "gymnax"], ceiling[game, "pgx"]
        lines.append(f"| {game} | {g:,.0f} | {p:,.0f} | {p / g:.1f}x |")
    lines += [
        "",
        "MinAtar-5 training, five games in one independent-mode run, the experiment's settings "
        "(128 envs per game, batch 64, one update per game every 128 env steps), env steps/s over all games:",
        "",
        "| backend | train env steps/s | compile + first chunk (s) |",
        "| --- | ---: | ---: |",
    ]
    for backend in BACKENDS:
        lines.append(
            f"| {backend} | {train[backend]['env_steps_per_s']:,.0f} | {train[backend]['compile_plus_first_chunk_s']:.1f} |"
        )
    lines += ["", f"pgx / gymnax in training: {result['train_pgx_over_gymnax']:.2f}x"]
    (args.out / f"envs{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def machine_facts(load: str) -> dict:
    """What a result file says about where it was measured."""
    return {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load": load or "none stated",
    }


def train_scaling(args) -> None:
    rows = []
    for num_envs in args.train_scaling:
        measured = measure_training("pgx", args.seconds, num_envs)
        rows.append({"num_envs_per_game": num_envs, **{k: round(v, 1) for k, v in measured.items()}})
        print(json.dumps(rows[-1]), flush=True)
    machine = machine_facts(args.load)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"envs_{jax.default_backend()}_train_scaling"
    (args.out / f"{stem}.json").write_text(json.dumps({"machine": machine, "train": rows}, indent=2))
    lines = [
        f"pgx MinAtar-5 training by envs per game ({machine['device']}, {machine['cpu_count']} CPU cores, "
        f"jax {machine['jax']}, {machine['date']}; other load: {machine['load']}). Command: "
        f"`python benchmarks/bench_envs.py --seconds {args.seconds:g} --train-scaling {' '.join(map(str, args.train_scaling))}`.",
        "",
        "Independent mode, batch 64, one update per game every 128 env steps; env steps/s over all five games:",
        "",
        "| envs per game | train env steps/s | compile + first chunk (s) |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {r['num_envs_per_game']} | {r['env_steps_per_s']:,.0f} | {r['compile_plus_first_chunk_s']:.1f} |" for r in rows]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
