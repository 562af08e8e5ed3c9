"""Final greedy return of CartPole DQN variants over seeds 0-7 (see README.md here).

The 8 seeds train together as 8 independent CartPole tasks in one run (task i draws
from PRNGKey(seed + i), the same stream as a single-task run with that seed).
Usage: python experiments/cartpole_recipe/sweep.py A_lr1e3,B_lr1e3_upd2,C_lr5e4_upd2
"""

import json
import sys
import time
from pathlib import Path

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.train import Evaluator

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "cartpole_dqn.yaml"
VARIANTS = {
    "A_lr1e3": ["dqn.updates_per_round=1"],
    "B_lr1e3_upd2": ["dqn.updates_per_round=2"],
    "C_lr5e4_upd2": ["dqn.learning_rate=5e-4", "dqn.updates_per_round=2"],
}

for name in sys.argv[1].split(","):
    tasks = json.dumps([{"env_id": "CartPole-v1"}] * 8)
    cfg = config.load(RECIPE, [f"tasks={tasks}", "train.progress=false", "train.eval_episodes=20"] + VARIANTS[name])
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    started = time.time()
    iterations = cfg.train.total_env_steps // cfg.train.num_envs
    for _ in range(10):
        state, _ = agent.run(state, iterations // 10)
    returns = Evaluator(cfg, agent)(state.params, cfg.train.total_env_steps).mean(axis=1)
    print(name, [round(float(r)) for r in returns], "mean", round(float(returns.mean())),
          "at 500:", int((returns >= 499.5).sum()), "/ 8", f"{time.time() - started:.0f}s", flush=True)
