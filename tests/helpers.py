"""Builders shared by several test files (pytest fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

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


# Training settings for configs whose agent is built and stepped by hand, never trained by ``train``.
LEARNER_ONLY = ("train.num_envs=2", "train.total_env_steps=100", "train.log_every=10")


def tiny_config(*overrides: str, **sections) -> dict:
    """``TINY_CARTPOLE`` as a new mapping: each keyword replaces a top-level entry (``tasks=[...]``,
    ``network={...}``), then each ``KEY=VALUE`` override is applied."""
    data = config.apply_overrides({**TINY_CARTPOLE, **sections}, [])
    return config.apply_overrides(data, list(overrides))


def latest_train_state(cfg: config.Config, run_dir: str | Path):
    """The full training state of a ``jaxdqn train`` run's latest checkpoint, restored in this process."""
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.io.checkpoint import Checkpointer

    checkpointer = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        return checkpointer.restore_state(jax.eval_shape(build_agent(cfg).init, task_keys(cfg)))[0]
    finally:
        checkpointer.close()


def random_batch(seed: int, num_tasks: int, batch: int = 8, obs_shape: tuple[int, ...] = (4,), actions: int = 2):
    """A ``[num_tasks, batch]`` batch of random transitions (a fifth of them terminal)."""
    from jaxdqn.replay.uniform import Transition

    rng = np.random.default_rng(seed)
    shape = (num_tasks, batch)
    return Transition(
        obs=jnp.asarray(rng.normal(size=shape + tuple(obs_shape)).astype(np.float32)),
        action=jnp.asarray(rng.integers(0, actions, size=shape).astype(np.int32)),
        reward=jnp.asarray(rng.normal(size=shape).astype(np.float32)),
        next_obs=jnp.asarray(rng.normal(size=shape + tuple(obs_shape)).astype(np.float32)),
        terminated=jnp.asarray(rng.random((num_tasks, batch)) < 0.2),
        truncated=jnp.zeros((num_tasks, batch), bool),
    )


def assert_trees_identical(a, b) -> None:
    """The same tree structure, and every leaf equal bit for bit."""
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b), strict=True)


def max_abs_diff(a, b) -> float:
    """The largest absolute difference between matching leaves of two trees."""
    leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in leaves)


def error_line(capsys) -> str:
    """The single stderr line of a failed CLI call (and no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
