"""Single-task training throughput against the raw env-stepping ceiling.

For each environment and number of parallel envs it measures:

- ``train``: the compiled DQN loop (act, env step, replay insert, gradient
  step, target update), in env steps/s and gradient updates/s, with the
  compile time reported separately;
- ``ceiling``: the same environments stepped under ``jit`` + ``vmap`` with
  random actions and nothing else.

Usage::

    python benchmarks/bench_single_task.py                 # full table
    python benchmarks/bench_single_task.py --quick         # a few seconds per row

Writes ``benchmarks/results/single_task_<backend>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.envs import TaskSet, TaskSpec

RESULTS = Path(__file__).parent / "results"

# The reference settings: batch 128, one update per 10 env steps,
# replay 10k, target copy every 500 updates; MLP 120-84 on CartPole.
NETWORKS = {
    "CartPole-v1": {"torso": "mlp", "hidden_sizes": [120, 84]},
    "Breakout-MinAtar": {"torso": "minatar_cnn"},
}


def train_config(env_id: str, num_envs: int, steps: int) -> config.Config:
    return config.from_dict(
        {
            "name": "bench",
            "tasks": [{"env_id": env_id}],
            "network": NETWORKS[env_id],
            "dqn": {
                "batch_size": 128,
                "replay_capacity": 10_000,
                "learning_starts": 1_000,
                "update_every": 10,
                "target_update_period": 500,
            },
            "train": {"num_envs": num_envs, "total_env_steps": steps, "log_every": steps, "eval_every": 0, "checkpoint_every": 0},
        }
    )


def measure_training(env_id: str, num_envs: int, seconds: float) -> dict:
    iterations = max(1, int(2_000 // num_envs))
    cfg = train_config(env_id, num_envs, iterations * num_envs)
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    started = time.perf_counter()
    state, _ = agent.run(state, iterations)  # compiles, and fills replay past learning_starts
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - started
    # Size the timed chunk from one untimed probe so each row takes ~`seconds`.
    probe_start = time.perf_counter()
    state, _ = agent.run(state, iterations)
    jax.block_until_ready(state)
    per_iteration = (time.perf_counter() - probe_start) / iterations
    timed_iterations = max(iterations, int(seconds / per_iteration) // iterations * iterations)
    chunks = timed_iterations // iterations
    updates_before = int(state.updates)
    started = time.perf_counter()
    for _ in range(chunks):
        state, _ = agent.run(state, iterations)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - started
    env_steps = chunks * iterations * num_envs
    return {
        "env_steps_per_s": env_steps / elapsed,
        "updates_per_s": (int(state.updates) - updates_before) / elapsed,
        "compile_plus_first_chunk_s": compile_s,
        "timed_env_steps": env_steps,
    }


def measure_ceiling(env_id: str, num_envs: int, seconds: float) -> dict:
    tasks = TaskSet([TaskSpec(env_id)], num_envs)
    length = 1_000

    @jax.jit
    def run(carry):
        def body(carry, _):
            env_state, key = carry
            key, act_key, step_key = jax.random.split(key, 3)
            actions = jax.random.randint(act_key, (1, num_envs), 0, tasks.num_actions)
            env_state, _ = tasks.step(step_key[None], env_state, actions)
            return (env_state, key), None

        return jax.lax.scan(body, carry, None, length=length)[0]

    env_state, _ = jax.jit(tasks.reset)(jax.random.PRNGKey(0)[None])
    carry = (env_state, jax.random.PRNGKey(1))
    carry = jax.block_until_ready(run(carry))
    repeats, elapsed = 0, 0.0
    started = time.perf_counter()
    while elapsed < seconds:
        carry = run(carry)
        jax.block_until_ready(carry)
        repeats += 1
        elapsed = time.perf_counter() - started
    return {"env_steps_per_s": repeats * length * num_envs / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(NETWORKS))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="2 s per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds

    rows = []
    for env_id in args.envs:
        for num_envs in args.num_envs:
            train = measure_training(env_id, num_envs, seconds)
            ceiling = measure_ceiling(env_id, num_envs, seconds)
            row = {
                "env": env_id,
                "num_envs": num_envs,
                "train_env_steps_per_s": round(train["env_steps_per_s"]),
                "train_updates_per_s": round(train["updates_per_s"]),
                "compile_plus_first_chunk_s": round(train["compile_plus_first_chunk_s"], 2),
                "ceiling_env_steps_per_s": round(ceiling["env_steps_per_s"]),
                "fraction_of_ceiling": round(train["env_steps_per_s"] / ceiling["env_steps_per_s"], 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    machine = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": __import__("os").cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"_{jax.default_backend()}"
    (args.out / f"single_task{suffix}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    lines = [
        f"Single-task DQN throughput ({machine['backend']}, {machine['cpu_count']} CPU cores, jax {machine['jax']}).",
        "Settings: batch 128, one update per 10 env steps, replay 10k, target copy every 500 updates; "
        "MLP 120-84 on CartPole, MinAtar CNN on Breakout.",
        "",
        "| env | parallel envs | train env steps/s | train updates/s | compile + first chunk (s) | raw env steps/s (ceiling) | train / ceiling |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['num_envs']} | {r['train_env_steps_per_s']:,} | {r['train_updates_per_s']:,} | "
            f"{r['compile_plus_first_chunk_s']} | {r['ceiling_env_steps_per_s']:,} | {r['fraction_of_ceiling']:.1%} |"
        )
    (args.out / f"single_task{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
