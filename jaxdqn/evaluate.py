"""Evaluation of a saved agent: episodes with a greedy (or epsilon) policy."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxdqn import checkpoint
from jaxdqn import config as config_lib
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.train import Evaluator


@dataclasses.dataclass
class EvalResult:
    labels: list[str]
    returns: np.ndarray  # [T, episodes]
    env_steps: int

    def summary(self) -> str:
        lines = [f"{'task':<24} {'mean':>10} {'std':>10} {'episodes':>9}"]
        for label, r in zip(self.labels, self.returns):
            lines.append(f"{label:<24} {r.mean():>10.2f} {r.std():>10.2f} {r.size:>9d}")
        if len(self.labels) > 1:
            means = self.returns.mean(axis=1)
            lines.append(f"{'mean over tasks':<24} {means.mean():>10.2f}")
        return "\n".join(lines)


def evaluate_checkpoint(path, episodes: int = 10, epsilon: float = 0.0, seed: int | None = None) -> EvalResult:
    """Loads a checkpoint (run dir, checkpoints dir or step dir) and plays ``episodes`` per task."""
    meta = checkpoint.read_meta(path)
    data = meta["config"]
    data["train"] = {**data["train"], "eval_episodes": episodes, "eval_epsilon": epsilon}
    if seed is not None:
        data["seed"] = seed
    cfg = config_lib.from_dict(data)
    agent = build_agent(cfg)
    target = jax.eval_shape(agent.init, task_keys(cfg)).params
    params, meta = checkpoint.load_params(path, target)
    returns = Evaluator(cfg, agent)(params, int(meta["env_steps"]) + 1)
    return EvalResult(agent.tasks.labels, returns, int(meta["env_steps"]))
