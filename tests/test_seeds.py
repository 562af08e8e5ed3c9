"""train.seeds: S copies of a run in one compiled call equal S separate runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdqn import config
from jaxdqn.agents import seeds as seeds_lib
from jaxdqn.errors import ConfigError, JaxdqnError
from jaxdqn.running.train import seed_configs, train

from helpers import assert_trees_identical, latest_train_state, max_abs_diff, tiny_config

SEEDS = (3, 8)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _assert_same_rows(seeded, separate, columns=("episode_return", "loss", "q_mean", "eval_return")):
    assert [r["env_steps"] for r in seeded] == [r["env_steps"] for r in separate]
    for a, b in zip(seeded, separate):
        assert a["task"] == b["task"]
        for name in columns:
            if name in a and a[name] not in ("", "nan"):
                np.testing.assert_allclose(float(a[name]), float(b[name]), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-seed run and the two separate runs it stands for, hard sharing over two CartPoles."""
    root = tmp_path_factory.mktemp("seeds")
    data = tiny_config(
        "train.eval_every=2000",
        "multitask.mode=hard",
        "tasks=[{env_id: CartPole-v1}, {env_id: CartPole-v1, env_params: {max_steps_in_episode: 200}}]",
    )
    cfg = config.from_dict({**data, "train": {**data["train"], "seeds": list(SEEDS)}})
    seeded_dir = train(cfg, run_dir=root / "seeded")
    separate = {}
    for one in seed_configs(cfg):
        separate[one.seed] = train(one, run_dir=root / f"alone_{one.seed}")
    return cfg, seeded_dir, separate


def test_each_seed_is_a_run_of_its_own_equal_to_the_separate_run(runs):
    cfg, seeded_dir, separate = runs
    for one in seed_configs(cfg):
        seed_dir = seeded_dir / f"seed_{one.seed}"
        assert config.load(seed_dir / "config.yaml") == one
        _assert_same_rows(_rows(seed_dir / "metrics.csv"), _rows(separate[one.seed] / "metrics.csv"))
        together = latest_train_state(one, seed_dir)
        alone = latest_train_state(one, separate[one.seed])
        assert int(together.env_steps) == int(alone.env_steps) == cfg.train.total_env_steps
        assert max_abs_diff(together.params, alone.params) < 1e-4
    a, b = (_rows(seeded_dir / f"seed_{s}" / "metrics.csv") for s in SEEDS)
    assert [r["episode_return"] for r in a] != [r["episode_return"] for r in b]  # the seeds really differ


def test_a_seeded_run_resumes_to_the_uninterrupted_one(runs, tmp_path):
    cfg, seeded_dir, _ = runs
    half = config.from_dict({**config.to_dict(cfg), "train": {**config.to_dict(cfg.train), "total_env_steps": 2000}})
    run_dir = train(half, run_dir=tmp_path / "run")
    train(cfg, run_dir=run_dir, resume=True)
    for seed in SEEDS:
        one = next(c for c in seed_configs(cfg) if c.seed == seed)
        resumed = latest_train_state(one, run_dir / f"seed_{seed}")
        straight = latest_train_state(one, seeded_dir / f"seed_{seed}")
        assert_trees_identical(resumed, straight)


def test_the_schedule_counters_stay_shared():
    """Unbatched counters keep the schedule's lax.cond a branch under vmap (a batched predicate
    would become a select that computes every gradient step at every env step)."""
    from jaxdqn.agents.build import build_agent, task_keys

    cfg = config.from_dict(tiny_config("train.seeds=[0, 1]"))
    agent = build_agent(cfg)
    system = seeds_lib.Seeded(agent, 2)
    state = system.init(jax.numpy.stack([task_keys(c) for c in seed_configs(cfg)]))
    assert state.env_steps.shape == () and state.updates.shape == ()
    assert state.obs.shape[:2] == (2, 1)
    state, metrics = system.run(state, 60)
    alone, _ = agent.run(agent.init(task_keys(seed_configs(cfg)[0])), 60)
    assert int(state.updates) == int(alone.updates) > 0
    assert metrics["episodes"].shape == (2, 1)


def test_bad_seed_lists_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="train.seeds.*distinct"):
        config.from_dict(tiny_config("train.seeds=[1, 1]"))
    with pytest.raises(ConfigError, match="train.seeds.*Atari"):
        config.from_dict({**tiny_config("train.seeds=[1, 2]"), "tasks": [{"env_id": "Pong-v5"}]})


def test_a_new_run_refuses_a_directory_whose_seeds_hold_checkpoints(runs):
    cfg, seeded_dir, _ = runs
    with pytest.raises(JaxdqnError, match="already holds checkpoints"):
        train(cfg, run_dir=seeded_dir)


def test_seeds_split_over_devices(runs, tmp_path):
    """Two fake CPU devices: each holds one copy, and the run equals the separate one-device runs."""
    cfg, _, separate = runs
    (tmp_path / "config.yaml").write_text(config.dump(cfg))
    code = f"""
import jax
from jaxdqn import config
from jaxdqn.running.train import train
from jaxdqn.agents.seeds import seed_mesh
assert len(jax.devices()) == 2 and seed_mesh(2) is not None and seed_mesh(3) is None
train(config.load({str(tmp_path / "config.yaml")!r}), run_dir={str(tmp_path / "run")!r})
print("ok")
"""
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
    for one in seed_configs(cfg):
        split = latest_train_state(one, tmp_path / "run" / f"seed_{one.seed}").params
        assert max_abs_diff(split, latest_train_state(one, separate[one.seed]).params) < 1e-4


def test_report_takes_a_seeded_run_as_its_seeds_and_evaluate_names_them(runs):
    from jaxdqn.io import checkpoint
    from jaxdqn.reports import report

    cfg, seeded_dir, _ = runs
    groups = report.group_runs([seeded_dir])
    assert groups == {cfg.name: [seeded_dir / f"seed_{s}" for s in sorted(SEEDS)]}
    with pytest.raises(checkpoint.CheckpointError, match=r"train.seeds run: name one seed's run.*seed_3.*seed_3, seed_8"):
        checkpoint.resolve(seeded_dir)
    assert checkpoint.resolve(seeded_dir / "seed_8")[1] == cfg.train.total_env_steps
