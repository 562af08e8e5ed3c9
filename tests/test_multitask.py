"""Multi-task modes against their single-task meaning.

- independent over T tasks == T separate single-task runs with the same seeds;
- hard sharing with T = 1 == single-task DQN;
- soft sharing with lambda = 0 == independent; with a large lambda the tasks'
  parameters are pulled together;
- masked actions are never taken and never bootstrap;
- a run sharded over 4 (fake CPU) devices == the same run on one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import dataclasses
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import config, losses
from jaxdqn.agents.build import build_agent, task_keys

from helpers import max_abs_diff, tiny_config

POLE_LENGTHS = [0.5, 0.8, 1.2]

BASE = tiny_config(
    "dqn.learning_starts=200",
    "dqn.replay_capacity=1000",
    "train.num_envs=5",
    "train.total_env_steps=5000",
    "train.log_every=500",
    "train.checkpoint_every=0",
)


def cfg_for(tasks, seed=0, **sections) -> config.Config:
    data = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        if key == "network":  # a network given replaces the small MLP (hidden_sizes is an MLP key)
            data[key] = dict(value)
        else:
            data.setdefault(key, {}).update(value)
    data["tasks"] = tasks
    data["seed"] = seed
    return config.from_dict(data)


def cartpole(length: float) -> dict:
    return {"env_id": "CartPole-v1", "env_params": {"length": length}}


def trained(cfg: config.Config, iterations: int = 300):
    agent = build_agent(cfg)
    state, _ = agent.run(agent.init(task_keys(cfg)), iterations)
    return agent, jax.device_get(state)


def task_slice(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def independent_run():
    cfg = cfg_for([cartpole(length) for length in POLE_LENGTHS], seed=7)
    return trained(cfg)


def test_independent_equals_separate_single_task_runs(independent_run):
    _, multi = independent_run
    assert int(multi.updates) == 131  # 300 iterations x 5 envs, learning from step 200, every 10 steps
    for i, length in enumerate(POLE_LENGTHS):
        # Task i of the multi-task run draws from PRNGKey(seed + i): a single-task run with seed 7 + i.
        _, single = trained(cfg_for([cartpole(length)], seed=7 + i))
        assert max_abs_diff(task_slice(multi.params, i), task_slice(single.params, 0)) < 1e-4
        np.testing.assert_array_equal(multi.replay.storage.action[i], single.replay.storage.action[0])


def test_tasks_of_an_independent_run_differ(independent_run):
    _, multi = independent_run
    assert max_abs_diff(task_slice(multi.params, 0), task_slice(multi.params, 1)) > 1e-2


def test_hard_sharing_with_one_task_equals_single_task():
    _, single = trained(cfg_for([cartpole(0.5)], seed=3))
    _, hard = trained(cfg_for([cartpole(0.5)], seed=3, multitask={"mode": "hard"}))
    assert hard.params["torso"]["Dense_0"]["kernel"].ndim == 2  # the torso carries no task axis
    shared_view = {"torso": hard.params["torso"], "head": task_slice(hard.params["head"], 0)}
    assert max_abs_diff(shared_view, task_slice(single.params, 0)) < 1e-5


def test_hard_sharing_trains_one_torso_and_a_head_per_task():
    agent, hard = trained(cfg_for([cartpole(length) for length in POLE_LENGTHS], multitask={"mode": "hard"}), 100)
    assert hard.params["head"]["Dense_0"]["kernel"].shape[0] == len(POLE_LENGTHS)
    q = agent.learner.q_values(hard.params, hard.obs)
    assert q.shape == (len(POLE_LENGTHS), 5, 2)


def test_hard_sharing_weights_scale_each_task_loss():
    cfg = cfg_for([cartpole(0.5), {**cartpole(1.0), "weight": 3.0}], multitask={"mode": "hard"})
    agent = build_agent(cfg)
    state, _ = agent.run(agent.init(task_keys(cfg)), 100)
    batch = jax.vmap(lambda r, k: __import__("jaxdqn").replay.sample(r, k, 16))(
        state.replay, jax.random.split(jax.random.PRNGKey(0), 2)
    )
    total, info = agent.learner.loss(state.params, state.target_params, batch)
    np.testing.assert_allclose(total, info.task_loss[0] + 3.0 * info.task_loss[1], rtol=1e-6)


def test_soft_sharing_with_zero_lambda_equals_independent(independent_run):
    _, multi = independent_run
    _, soft = trained(
        cfg_for([cartpole(length) for length in POLE_LENGTHS], seed=7, multitask={"mode": "soft", "soft_lambda": 0.0})
    )
    assert max_abs_diff(soft.params, multi.params) < 1e-6


def test_soft_sharing_pulls_task_parameters_together():
    tasks = [cartpole(length) for length in POLE_LENGTHS]
    fast = {"learning_rate": 1e-2}  # big enough steps for the pull to show within 131 updates

    def penalty_before_and_after(lam):
        cfg = cfg_for(tasks, seed=7, dqn=fast, multitask={"mode": "soft", "soft_lambda": lam})
        agent = build_agent(cfg)
        state = agent.init(task_keys(cfg))
        before = float(losses.soft_sharing_penalty(state.params, 1.0))
        state, metrics = jax.device_get(agent.run(state, 300))
        return before, float(losses.soft_sharing_penalty(state.params, 1.0)), metrics

    start, end, metrics = penalty_before_and_after(1.0)
    _, free_end, _ = penalty_before_and_after(0.0)
    assert end < 0.5 * start  # the penalty fell over training
    assert end < 0.5 * free_end  # and is far below where unpenalised tasks end up
    # The penalty the learner reported is lambda * sum_{i!=j} ||theta_i - theta_j||^2 of its params.
    assert float(metrics["penalty"]) > 0


def test_masked_actions_are_never_taken():
    # Breakout has 3 actions, Asterix 5: Breakout's actions 3 and 4 are masked.
    cfg = cfg_for(
        [{"env_id": "Breakout-MinAtar"}, {"env_id": "Asterix-MinAtar"}],
        network={"torso": "minatar_cnn"},
        dqn={"learning_starts": 100, "epsilon_start": 0.5, "epsilon_end": 0.5},
    )
    agent, state = trained(cfg, 100)
    np.testing.assert_array_equal(agent.tasks.action_mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    actions = state.replay.storage.action[:, : int(state.replay.size[0])]
    assert actions[0].max() <= 2 and set(np.unique(actions[1])) == {0, 1, 2, 3, 4}
    # Greedy acting ignores masked actions even when their Q-value is the largest.
    q = jnp.array([[[0.0, 1.0, 0.5, 9.0, 9.0]], [[0.0, 1.0, 0.5, 9.0, 8.0]]])
    from jaxdqn.agents import epsilon_greedy

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    greedy = jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(keys, q, 0.0, jnp.asarray(agent.tasks.action_mask))
    np.testing.assert_array_equal(greedy[:, 0], [1, 3])


def test_masked_actions_never_bootstrap():
    cfg = cfg_for([{"env_id": "Breakout-MinAtar"}, {"env_id": "Asterix-MinAtar"}], network={"torso": "minatar_cnn"})
    learner = build_agent(cfg).learner
    # Q(s', .) = [1, 2, 3, 100, 200] for both tasks: Breakout has 3 valid actions, Asterix 5
    q_t = jnp.broadcast_to(jnp.array([1.0, 2.0, 3.0, 100.0, 200.0]), (2, 1, 5))
    batch = __import__("jaxdqn").replay.Transition(
        obs=None,
        action=jnp.zeros((2, 1), jnp.int32),
        reward=jnp.zeros((2, 1)),
        next_obs=q_t,
        terminated=jnp.zeros((2, 1), bool),
        truncated=jnp.zeros((2, 1), bool),
    )
    as_network = dataclasses.replace(learner, network=IdentityNetwork())
    no_params = {"torso": {}, "head": {}}
    targets = as_network.td_targets(no_params, no_params, batch)
    np.testing.assert_allclose(targets[:, 0], [0.99 * 3.0, 0.99 * 200.0], rtol=1e-6)


class IdentityNetwork:
    """A stand-in network whose Q-values are its input."""

    spec = __import__("jaxdqn").networks.NetworkSpec()

    def apply(self, params, obs):
        return obs


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jaxdqn import config
    from jaxdqn.agents.build import build_agent, task_keys
    infos = {}
    for mode, data in json.loads(sys.argv[1]).items():
        cfg = config.from_dict(data)
        agent = build_agent(cfg)
        state, _ = agent.run(agent.place(agent.init(task_keys(cfg))), 150)
        mesh = None if agent.mesh is None else dict(agent.mesh.shape)
        leaf = jax.tree_util.tree_leaves(state.params)[0]
        np.savez(f"{sys.argv[2]}_{mode}.npz", *[np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)])
        infos[mode] = {"devices": len(jax.devices()), "mesh": mesh, "leaf_devices": len(leaf.sharding.device_set)}
    print(json.dumps(infos))
    """
)
SHARDED_MODES = ("independent", "hard")


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    """Every mode of SHARDED_MODES over 4 CartPoles, run by one process with 1 device and one with 4:
    ``{devices: ({mode: info}, {mode: final parameters})}``."""
    root = tmp_path_factory.mktemp("sharded")
    tasks = [cartpole(length) for length in (0.5, 0.6, 0.8, 1.0)]
    configs = {}
    for mode in SHARDED_MODES:
        data = json.loads(json.dumps(BASE))
        data.update(tasks=tasks, seed=1, multitask={"mode": mode})
        configs[mode] = data
    results = {}
    for devices in (1, 4):
        env = dict(
            os.environ,
            XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
            JAX_PLATFORMS="cpu",
        )
        out = root / f"devices_{devices}"
        proc = subprocess.run(
            [sys.executable, "-c", SHARDED_SCRIPT, json.dumps(configs), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        infos = json.loads(proc.stdout.strip().splitlines()[-1])
        results[devices] = (infos, {mode: np.load(f"{out}_{mode}.npz") for mode in SHARDED_MODES})
    return results


@pytest.mark.parametrize("mode", SHARDED_MODES)
def test_sharded_run_equals_single_device_run(sharded_runs, mode):
    results = {devices: (infos[mode], params[mode]) for devices, (infos, params) in sharded_runs.items()}
    assert results[1][0]["devices"] == 1 and results[4][0]["devices"] == 4
    info4 = results[4][0]
    if mode == "independent":
        assert info4["mesh"] == {"task": 4, "data": 1} and info4["leaf_devices"] == 4
    else:
        assert info4["mesh"] == {"task": 1, "data": 4}
    one, four = results[1][1], results[4][1]
    for name in one.files:
        np.testing.assert_allclose(one[name], four[name], rtol=1e-4, atol=1e-5)
