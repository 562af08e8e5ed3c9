"""Evaluation of a saved agent: episodes with a greedy (or epsilon) policy."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxdqn import atari, checkpoint
from jaxdqn import config as config_lib
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.train import Evaluator


@dataclasses.dataclass
class EvalResult:
    labels: list[str]
    returns: np.ndarray  # [T, episodes]
    env_steps: int
    env_ids: list[str] | None = None  # set for Atari runs: adds human-normalised scores

    @property
    def atari_scores(self) -> atari.AtariScores | None:
        if not self.env_ids:
            return None
        return atari.score(self.env_ids, self.returns)

    def summary(self) -> str:
        scores = self.atari_scores
        if scores is not None:
            return self._atari_summary(scores)
        lines = [f"{'task':<24} {'mean':>10} {'std':>10} {'episodes':>9}"]
        for label, r in zip(self.labels, self.returns):
            lines.append(f"{label:<24} {r.mean():>10.2f} {r.std():>10.2f} {r.size:>9d}")
        if len(self.labels) > 1:
            means = self.returns.mean(axis=1)
            lines.append(f"{'mean over tasks':<24} {means.mean():>10.2f}")
        return "\n".join(lines)

    def _atari_summary(self, scores: atari.AtariScores) -> str:
        lines = [f"{'task':<24} {'mean':>10} {'std':>10} {'episodes':>9} {'human-norm':>11}"]
        for label, r, hns in zip(self.labels, self.returns, scores.normalized):
            lines.append(f"{label:<24} {r.mean():>10.2f} {r.std():>10.2f} {r.size:>9d} {hns:>11.3f}")
        lines.append(f"{'mean over tasks':<24} {scores.raw.mean():>10.2f} {'':>10} {'':>9} {scores.mean:>11.3f}")
        lines.append(f"{'median over tasks':<24} {np.median(scores.raw):>10.2f} {'':>10} {'':>9} {scores.median:>11.3f}")
        return "\n".join(lines)


def evaluate_checkpoint(path, episodes: int = 10, epsilon: float | None = 0.0, seed: int | None = None) -> EvalResult:
    """Loads a checkpoint (run dir, checkpoints dir or step dir) and plays ``episodes`` per task.

    ``epsilon`` applies to every task, Atari included; ``None`` keeps the run's own
    setting (``atari.eval_epsilon``, 0.05 by default, for Atari tasks).
    """
    meta = checkpoint.read_meta(path)
    data = meta["config"]
    data["train"] = {**data["train"], "eval_episodes": episodes}
    if epsilon is not None:
        data["train"]["eval_epsilon"] = epsilon
        data["atari"] = {**data.get("atari", {}), "eval_epsilon": epsilon}
    if seed is not None:
        data["seed"] = seed
    cfg = config_lib.from_dict(data)
    agent = build_agent(cfg)
    target = jax.eval_shape(agent.init, task_keys(cfg)).params
    params, meta = checkpoint.load_params(path, target)
    returns = Evaluator(cfg, agent)(params, int(meta["env_steps"]) + 1)
    env_ids = [t.env_id for t in agent.tasks.tasks] if agent.tasks.is_atari else None
    return EvalResult(agent.tasks.labels, returns, int(meta["env_steps"]), env_ids)
