"""Final greedy return of CartPole DQN candidates over 10 seeds at 100k env steps (see README.md here).

The 10 seeds train together as 10 independent CartPole tasks in one run: task i has
``seed_offset`` i and the run's seed is FIRST, so task i follows exactly the updates of a
single-task run seeded FIRST + i. Each final greedy policy (epsilon 0) is evaluated on 20
episodes. Candidates are chosen on FIRST=0 (seeds 0-9) only; seeds 10-19 are for the report.

Usage: python experiments/cartpole_recipe/sweep.py CANDIDATE[,CANDIDATE...] [FIRST]
Each result is printed and appended as one JSON line to results.jsonl next to this file.
"""

import json
import sys
import time
from pathlib import Path

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.running.train import Evaluator

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parents[1] / "configs" / "cartpole_dqn.yaml"
SEEDS = 10
STEPS = 100_000
SOLVED = 475

# Overrides on top of configs/cartpole_dqn.yaml (after train.total_env_steps=100000).
OLD = [  # the 500k-step recipe before this sweep
    "network.dueling=false",
    "dqn.double=false",
    "dqn.loss=squared",
    "dqn.learning_rate=1e-3",
    "dqn.lr_decay=true",
    "dqn.batch_size=128",
    "dqn.replay_capacity=10000",
    "dqn.learning_starts=10000",
    "dqn.update_every=10",
    "dqn.updates_per_round=2",
    "dqn.target_update=hard",
    "dqn.target_update_period=500",
    "dqn.epsilon_end=0.05",
    "dqn.epsilon_decay_steps=250000",
]
# Double + Dueling DQN with a Polyak target: 5 updates per 10 env steps, tau 0.02, exploration
# decaying over the first half of the run, 50k replay, learning from 5k env steps.
DDP = OLD + [
    "network.dueling=true",
    "dqn.double=true",
    "dqn.target_update=polyak",
    "dqn.polyak_tau=0.02",
    "dqn.updates_per_round=5",
    "dqn.epsilon_decay_steps=50000",
    "dqn.replay_capacity=50000",
    "dqn.learning_starts=5000",
]
ROUNDS = OLD + [  # fitted-Q style: 250 env steps, then 125 updates against a target copied after each round
    "network.hidden_sizes=[256,256]",
    "dqn.loss=huber",
    "dqn.lr_decay=false",
    "dqn.learning_rate=2.3e-3",
    "dqn.batch_size=64",
    "dqn.replay_capacity=100000",
    "dqn.learning_starts=1000",
    "dqn.update_every=250",
    "dqn.updates_per_round=125",
    "dqn.target_update_period=125",
    "dqn.epsilon_end=0.04",
    "dqn.epsilon_decay_steps=16000",
]
CHOSEN = DDP + ["dqn.polyak_tau=0.005"]  # tau 0.005 per update: about rejax's pace (0.02 once per 5 updates)
CANDIDATES = {  # in the order they ran
    "ddp_huber_decay": DDP + ["dqn.loss=huber"],
    "old_eps50k": OLD + ["dqn.epsilon_decay_steps=50000"],
    "ddp_huber": DDP + ["dqn.loss=huber", "dqn.lr_decay=false"],
    "ddp_sq_tau005": CHOSEN + ["dqn.lr_decay=false"],
    "rounds": ROUNDS,
    "ddp_sq_decay_tau005": CHOSEN,
    "dp_sq_decay_tau005": CHOSEN + ["network.dueling=false"],
    "ddp_sq_decay_tau005_lr5e4": CHOSEN + ["dqn.learning_rate=5e-4"],
    "ddp_sq_decay_tau005_lr2e3": CHOSEN + ["dqn.learning_rate=2e-3"],
    "ddp_sq_decay_tau01": CHOSEN + ["dqn.polyak_tau=0.01"],
    "recipe": [],  # configs/cartpole_dqn.yaml as it stands (= ddp_sq_decay_tau005)
}


def run(name: str, first: int) -> dict:
    tasks = json.dumps([{"env_id": "CartPole-v1", "name": f"seed{first + i}", "seed_offset": i} for i in range(SEEDS)])
    overrides = [f"train.total_env_steps={STEPS}"] + CANDIDATES[name]
    cfg = config.load(
        RECIPE,
        overrides + [f"seed={first}", f"tasks={tasks}", "train.progress=false", "train.eval_episodes=20", "train.eval_epsilon=0"],
    )
    agent = build_agent(cfg)
    started = time.time()
    state = agent.init(task_keys(cfg))
    iterations = cfg.train.total_env_steps // cfg.train.num_envs
    for _ in range(10):  # chunks, as the training loop runs them
        state, _ = agent.run(state, iterations // 10)
    returns = [round(float(r), 1) for r in Evaluator(cfg, agent)(state.params, cfg.train.total_env_steps).mean(axis=1)]
    return {
        "candidate": name,
        "seeds": f"{first}-{first + SEEDS - 1}",
        "greedy_return": returns,
        "mean": round(sum(returns) / SEEDS, 1),
        "solved": sum(r >= SOLVED for r in returns),
        "seconds": round(time.time() - started),
        "overrides": overrides,
    }


if __name__ == "__main__":
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for name in sys.argv[1].split(","):
        result = run(name, first)
        print(json.dumps(result), flush=True)
        with open(HERE / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
