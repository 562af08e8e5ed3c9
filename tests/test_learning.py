"""The agent learns: configs/cartpole_dqn.yaml balances the pole in 100k env steps.

Runs the recipe exactly as ``jaxdqn train configs/cartpole_dqn.yaml seed=S`` trains it
(single task, 100k env steps) for seeds 0, 1 and 2 (one compiled step, three states),
and evaluates each final greedy policy on 20 episodes. The training runs in a child process
at XLA's default optimisation level, as a user's run does (the other tests compile with less).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cartpole_dqn.yaml"
SOLVED = 475.0  # CartPole-v1's threshold; the episode cap is 500


def greedy_returns_before_and_after() -> tuple[list[float], list[float]]:
    """Each seed's mean greedy return before training and after the recipe's 100k env steps."""
    from jaxdqn import config
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.running.train import Evaluator

    base = config.load(RECIPE, ["train.progress=false", "train.tensorboard=false"])
    assert base.train.total_env_steps == 100_000 and base.train.eval_epsilon == 0.0
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
    return before, after


def test_dqn_learns_cartpole_over_three_seeds():
    from conftest import child_env

    child = subprocess.run([sys.executable, __file__], env=child_env(optimised=True), capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    before, after = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"greedy return before {before}, after {after}")
    assert max(before) < 100  # an untrained network does not balance the pole
    # Every seed learns (an untrained network stays near 10-20). Seeds 0-2 ended at 209, 500, 500
    # on 2026-12-06 (jax 0.10.2 / flax 0.12.8, this CPU), and seed 2 at 146 in an earlier run of
    # the same versions, so "learned" is a gain of 100, and "solved" is asked of 2 of 3.
    assert all(a >= b + 100 for a, b in zip(after, before)), f"a seed did not learn: greedy returns {before} -> {after}"
    assert sum(r >= SOLVED for r in after) >= 2, f"fewer than 2 of seeds 0-2 reached {SOLVED}: {after}"


if __name__ == "__main__":
    assert not {"--xla_backend_optimization_level", "--xla_cpu_use_fusion_emitters"} & {
        f.split("=")[0] for f in os.environ.get("XLA_FLAGS", "").split()
    }
    print(json.dumps(greedy_returns_before_and_after()))
