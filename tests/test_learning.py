"""The agent learns: DQN on gymnax CartPole-v1 reaches a greedy return of 400+.

Runs the recipe of configs/cartpole_dqn.yaml for seeds 0, 1 and 2 (one compiled
step, three states) and evaluates each final greedy policy on 20 episodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.train import Evaluator

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cartpole_dqn.yaml"


def test_dqn_learns_cartpole_over_three_seeds():
    base = config.load(RECIPE, ["train.progress=false", "train.tensorboard=false"])
    iterations = base.train.total_env_steps // base.train.num_envs
    agent = build_agent(base)
    before, after = [], []
    for seed in (0, 1, 2):
        cfg = config.load(RECIPE, [f"seed={seed}"])
        evaluator = Evaluator(cfg, agent)
        state = agent.init(task_keys(cfg))
        before.append(float(evaluator(state.params, 0).mean()))
        for _ in range(10):  # chunks, as the training loop runs them
            state, _ = agent.run(state, iterations // 10)
        after.append(float(evaluator(state.params, base.train.total_env_steps).mean()))
    print(f"greedy return before {before}, after {after}")
    assert max(before) < 100  # an untrained network does not balance the pole
    assert np.mean(after) >= 400, f"mean greedy return over seeds 0-2 was {np.mean(after):.1f}: {after}"
