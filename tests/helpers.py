"""Builders shared by several test files (pytest fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import jax

from jaxdqn import config

# A CartPole run that trains, checkpoints and logs in a few seconds.
TINY_CARTPOLE = {
    "name": "tiny",
    "tasks": [{"env_id": "CartPole-v1"}],
    "network": {"hidden_sizes": [32, 32]},
    "dqn": {"learning_starts": 500, "batch_size": 32, "replay_capacity": 2000, "target_update_period": 50},
    "train": {
        "total_env_steps": 4000,
        "num_envs": 10,
        "log_every": 1000,
        "eval_every": 0,
        "eval_episodes": 2,
        "checkpoint_every": 1000,
        "keep_checkpoints": 2,
        "tensorboard": False,
        "progress": False,
    },
}


def tiny_cartpole(*overrides: str) -> dict:
    """``TINY_CARTPOLE`` with ``KEY=VALUE`` overrides, as a new mapping."""
    return config.apply_overrides(TINY_CARTPOLE, list(overrides))


def latest_train_state(cfg: config.Config, run_dir: str | Path):
    """The full training state of a ``jaxdqn train`` run's latest checkpoint, restored in this process."""
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.checkpoint import Checkpointer

    checkpointer = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        return checkpointer.restore_state(jax.eval_shape(build_agent(cfg).init, task_keys(cfg)))[0]
    finally:
        checkpointer.close()
