"""The training loop: seeds, resume equivalence, interruption.

These runs are tiny (a few thousand CartPole steps); what they check is that
the trajectory is a pure function of config + seed, however the run is cut.
On the CPU backend XLA is deterministic, so equality is checked bit for bit.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxdqn import config
from jaxdqn.agents.dqn import DQNAgent
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.io.checkpoint import Checkpointer
from jaxdqn.running.train import train

from helpers import TINY_CARTPOLE, assert_trees_identical, latest_train_state

BASE = TINY_CARTPOLE


def make_cfg(**overrides) -> config.Config:
    return config.from_dict(config.apply_overrides(BASE, [f"{k}={v}" for k, v in overrides.items()]))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = make_cfg()
    run_dir = train(cfg, run_dir=tmp_path_factory.mktemp("full") / "run")
    return latest_train_state(cfg, run_dir)


def test_resume_continues_the_same_trajectory(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    train(make_cfg(**{"train.total_env_steps": 2000}), run_dir=run_dir)
    train(make_cfg(), run_dir=run_dir, resume=True)
    resumed = latest_train_state(make_cfg(), run_dir)
    assert int(resumed.env_steps) == 4000
    assert int(resumed.updates) == int(uninterrupted.updates) > 0
    # Bit-identical: params, target, optimizer, replay, env state, RNG keys.
    assert_trees_identical(resumed, uninterrupted)


def test_interrupted_run_saves_and_resumes(tmp_path, monkeypatch, uninterrupted):
    real_run = DQNAgent.run
    calls = {"n": 0}

    def flaky_run(self, state, n):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_run(self, state, n)

    monkeypatch.setattr(DQNAgent, "run", flaky_run)
    cfg = make_cfg(**{"train.checkpoint_every": 0})  # only the interruption saves mid-run
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run_dir)
    assert Checkpointer(run_dir / "checkpoints").latest_step() == 2000
    monkeypatch.setattr(DQNAgent, "run", real_run)
    train(cfg, run_dir=run_dir, resume=True)
    assert_trees_identical(latest_train_state(cfg, run_dir).params, uninterrupted.params)


def test_seed_decides_the_run():
    def params_after(seed):
        cfg = make_cfg(seed=seed)
        agent = build_agent(cfg)
        state, _ = agent.run(agent.init(task_keys(cfg)), 100)
        return jax.device_get(state.params)

    assert_trees_identical(params_after(3), params_after(3))
    a, b = jax.tree_util.tree_leaves(params_after(3)), jax.tree_util.tree_leaves(params_after(4))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))


WANDB_CHILD = """
import json, sys
from pathlib import Path
from jaxdqn import config
from jaxdqn.io import run_outputs
from jaxdqn.running.train import train

logged = []
real_start = run_outputs.start_wandb


def recording_start(run_dir, settings):
    run = real_start(run_dir, settings)
    real_log = run.log
    run.log = lambda data, step: (logged.append([step, dict(data)]), real_log(data, step=step))[1]
    return run


run_outputs.start_wandb = recording_start
run_dir = train(config.load(sys.argv[1]), run_dir=Path(sys.argv[2]))
Path(sys.argv[3]).write_text(json.dumps(logged))
"""


def test_wandb_offline_logs_the_same_scalars_and_the_config(tmp_path, write_config, subprocess_env):
    # The run goes in a child of its own session: W&B's service process lives and ends
    # with it, so that nothing of W&B outlives the test in the test process.
    import json
    import subprocess
    import sys

    overrides = ["train.wandb.project=jaxdqn-test", "train.wandb.mode=offline", "train.wandb.tags=[ci]"]
    config_path = write_config(config.apply_overrides(BASE, overrides))
    run_dir, log_path = tmp_path / "run", tmp_path / "logged.json"
    child = subprocess.run(
        [sys.executable, "-c", WANDB_CHILD, str(config_path), str(run_dir), str(log_path)],
        env=dict(subprocess_env, WANDB_SILENT="true"),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    logged = json.loads(log_path.read_text())
    rows = [r.split(",") for r in (run_dir / "metrics.csv").read_text().splitlines() if ",CartPole-v1," in r]
    assert [step for step, _ in logged] == [int(r[0]) for r in rows]  # one log per metrics row, at its env step
    for (_, data), row in zip(logged, rows):
        assert data["CartPole-v1/loss"] == pytest.approx(float(row[6]), rel=1e-6)
        assert "run/steps_per_sec" in data and "mean/episode_return" in data
    # the offline run's record holds the scalars and the resolved config
    record = next((run_dir / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"CartPole-v1/loss" in record and b"jaxdqn-test" in record and b"target_update_period" in record
