"""PQN: Q(lambda) targets, the task axis, resume, and learning CartPole."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from jaxdqn import cli, config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.agents.pqn import q_lambda_targets
from jaxdqn.errors import ConfigError
from jaxdqn.io.run_outputs import read_metrics
from jaxdqn.running.train import train
from jaxdqn.running.stored import load_source
from jaxdqn.transfer.teachers import fixed_q
from conftest import train_in_child
from helpers import latest_train_state, tiny_config

TINY_PQN = tiny_config(
    "train.total_env_steps=2560",
    "train.num_envs=16",
    "train.log_every=640",
    "train.checkpoint_every=1280",
    name="tiny_pqn",
    system="pqn",
    network={"hidden_sizes": [32, 32], "layer_norm": True},
    dqn={"loss": "squared", "learning_rate": 3e-4, "epsilon_decay_steps": 2000},
    pqn={"rollout_length": 8, "epochs": 2, "minibatches": 4, "q_lambda": 0.8},
)


def tiny_pqn(*overrides: str) -> config.Config:
    return config.from_dict(config.apply_overrides(TINY_PQN, list(overrides)))


# -- Q(lambda) targets ----------------------------------------------------------------------


def hand_q_lambda(reward, terminated, truncated, q_next, gamma, lam):
    """The recursion written out: G_t = r_t + gamma_t [(1 - lambda_t) v_{t+1} + lambda_t G_{t+1}]."""
    length = len(reward)
    v = q_next.max(axis=1)
    out = np.zeros(length)
    following = v[-1]
    for t in reversed(range(length)):
        discount = 0.0 if terminated[t] else gamma
        trace = 0.0 if (terminated[t] or truncated[t]) else lam
        if t == length - 1:
            trace = 0.0  # nothing after the rollout: bootstrap from v
        out[t] = reward[t] + discount * ((1 - trace) * v[t] + trace * following)
        following = out[t]
    return out


def test_q_lambda_targets_match_a_hand_computation_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    length, actions = 9, 3
    reward = rng.normal(size=length).astype(np.float32)
    q_next = rng.normal(size=(length, actions)).astype(np.float32)
    terminated = np.zeros(length, bool)
    truncated = np.zeros(length, bool)
    terminated[2] = True
    truncated[5] = True
    got = q_lambda_targets(
        jnp.asarray(reward),
        jnp.asarray(terminated),
        jnp.asarray(truncated),
        jnp.asarray(q_next),
        jnp.ones(actions, bool),
        0.9,
        0.7,
    )
    np.testing.assert_allclose(np.asarray(got), hand_q_lambda(reward, terminated, truncated, q_next, 0.9, 0.7), rtol=1e-5)
    # a terminated step's target is its reward; a truncated one bootstraps from the true next state alone
    assert got[2] == pytest.approx(reward[2])
    assert got[5] == pytest.approx(reward[5] + 0.9 * q_next[5].max(), rel=1e-5)


def test_q_lambda_targets_equal_rlax_q_lambda_inside_an_episode():
    """Without episode ends and with every action valid, the targets are those inside rlax.q_lambda's TD error."""
    rng = np.random.default_rng(1)
    length, actions = 7, 4
    reward = jnp.asarray(rng.normal(size=length).astype(np.float32))
    q_next = jnp.asarray(rng.normal(size=(length, actions)).astype(np.float32))
    q_tm1 = jnp.asarray(rng.normal(size=(length, actions)).astype(np.float32))
    a_tm1 = jnp.asarray(rng.integers(0, actions, size=length).astype(np.int32))
    no_end = jnp.zeros(length, bool)
    ours = q_lambda_targets(reward, no_end, no_end, q_next, jnp.ones(actions, bool), 0.99, 0.65)
    td = rlax.q_lambda(q_tm1, a_tm1, reward, jnp.full(length, 0.99), q_next, jnp.full(length, 0.65))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(td + q_tm1[jnp.arange(length), a_tm1]), rtol=1e-5, atol=1e-6)


def test_q_lambda_targets_never_bootstrap_from_padded_actions():
    q_next = jnp.array([[1.0, 2.0, 50.0]])
    got = q_lambda_targets(jnp.zeros(1), jnp.zeros(1, bool), jnp.zeros(1, bool), q_next, jnp.array([True, True, False]), 0.5, 0.9)
    assert float(got[0]) == pytest.approx(1.0)


# -- the system -----------------------------------------------------------------------------


def run_chunks(cfg, chunks, iterations):
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    for _ in range(chunks):
        state, metrics = agent.run(state, iterations)
    return agent, state, metrics


def test_a_rollout_learns_once_with_epochs_times_minibatches_steps():
    cfg = tiny_pqn()
    agent, state, metrics = run_chunks(cfg, 1, 24)  # three rollouts of 8 steps
    assert int(state.updates) == 3 * 2 * 4 == int(metrics["updates"])
    assert agent.schedule.batch_size == 16 * 8 // 4
    assert np.isfinite(np.asarray(metrics["loss"])).all()


def test_independent_tasks_equal_separate_single_task_runs():
    two = tiny_pqn("tasks=[{env_id: CartPole-v1}, {env_id: CartPole-v1, env_params: {length: 0.8}}]")
    _, multi, _ = run_chunks(two, 1, 24)
    for i, task in enumerate(two.tasks):
        one = tiny_pqn(f"seed={i}")
        one = config.from_dict({**config.to_dict(one), "tasks": [config.to_dict(task)]})
        _, single, _ = run_chunks(one, 1, 24)
        for x, y in zip(jax.tree_util.tree_leaves(multi.params), jax.tree_util.tree_leaves(single.params)):
            np.testing.assert_allclose(np.asarray(x[i]), np.asarray(y[0]), rtol=1e-4, atol=1e-5)


def test_seeds_in_one_call_equal_separate_runs():
    from jaxdqn.agents.seeds import Seeded, take
    from jaxdqn.running.train import seed_configs

    cfg = tiny_pqn("train.seeds=[4, 9]", "multitask.mode=hard", "tasks=[{env_id: CartPole-v1}, {env_id: Acrobot-v1}]")
    agent = build_agent(cfg)
    system = Seeded(agent, 2)
    state, _ = system.run(system.init(jax.numpy.stack([task_keys(c) for c in seed_configs(cfg)])), 24)
    for s, one in enumerate(seed_configs(cfg)):
        _, alone, _ = run_chunks(one, 1, 24)
        assert int(alone.updates) == int(state.updates)
        for x, y in zip(jax.tree_util.tree_leaves(take(state, s).params), jax.tree_util.tree_leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("popart", [False, True])
def test_rollout_targets_reuse_the_acting_q_values_and_equal_a_pass_over_every_next_state(popart):
    # Episodes capped at 12 steps in a 24-step rollout: terminations (CartPole falls) and
    # truncations (the cap) both land inside it, some on its last step, and Acrobot's 3
    # actions pad CartPole's 2. With PopArt, after a rollout learned on, the stored acting
    # Q-values must be the unnormalised ones.
    capped = "env_params: {max_steps_in_episode: 12}"
    cfg = tiny_pqn(
        f"tasks=[{{env_id: CartPole-v1, {capped}}}, {{env_id: Acrobot-v1, {capped}}}]",
        "pqn.rollout_length=24",
        f"dqn.popart={str(popart).lower()}",
    )
    agent = build_agent(cfg)
    state, metrics = agent.init(task_keys(cfg)), agent.empty_metrics()
    if popart:  # a first rollout, learned on: the statistics move away from (0, 1)
        state, _ = agent.run(state, 24)
        assert int(state.updates) > 0 and float(jnp.abs(state.opt_state.stats.shift).min()) > 1e-3
    collect = jax.jit(agent.collect)
    for _ in range(24):  # one whole rollout, not learned on yet
        state, metrics, _ = collect(state, metrics)
    store = state.replay.storage
    rollout = store.transition
    assert bool(rollout.terminated.any()) and bool(rollout.truncated.any())
    assert bool(rollout.truncated.reshape(2, 24, 16)[:, -1].any()), "a truncation on the rollout's last step"
    got = agent.rollout_targets(state.params, state.opt_state, store)

    num_tasks, n, length = 2, 16, 24
    source = agent.learner.target_source(state.params, state.opt_state)  # unnormalised under PopArt
    q_next = agent.learner.q_values(source, rollout.next_obs)  # [T, L*N, A]: every next state

    def by_env(x):
        return np.swapaxes(np.asarray(x).reshape((num_tasks, length, n) + x.shape[2:]), 1, 2)

    for i in range(num_tasks):
        for env in range(n):
            want = q_lambda_targets(
                *(jnp.asarray(by_env(x)[i, env]) for x in (rollout.reward, rollout.terminated, rollout.truncated, q_next)),
                jnp.asarray(agent.learner.action_mask[i]),
                agent.learner.gamma,
                agent.q_lambda,
            )
            np.testing.assert_allclose(by_env(got)[i, env], np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_every_sharing_mode_runs(mode):
    # hard with the sharing issue's best switches: per-task input layers, LayerNorm and HL-Gauss
    hard = ["network.task_input_layers=true", "dqn.loss=hl_gauss", "dqn.hl_gauss_bins=51"]
    hard += ["dqn.hl_gauss_min=-10", "dqn.hl_gauss_max=30"]
    extra = ["multitask.soft_lambda=1.0e-4"] if mode == "soft" else hard
    cfg = tiny_pqn("tasks=[{env_id: CartPole-v1}, {env_id: Acrobot-v1}]", f"multitask.mode={mode}", *extra)
    _, state, metrics = run_chunks(cfg, 1, 16)
    assert int(state.updates) == 2 * 2 * 4 == int(metrics["updates"])
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    if mode == "hard":  # Q is the expectation over the support's bins, so it stays inside it
        q_mean = np.asarray(metrics["q_mean"]) / int(metrics["updates"])
        assert ((q_mean > -10) & (q_mean < 30)).all()
    if mode == "soft":
        assert float(metrics["penalty"]) > 0


def test_resume_is_bit_exact(tmp_path):
    cfg = tiny_pqn()
    full = train(cfg, run_dir=tmp_path / "full")
    cut = tiny_pqn("train.total_env_steps=1280")
    train(cut, run_dir=tmp_path / "cut")
    train(cfg, run_dir=tmp_path / "cut", resume=True)
    a, b = latest_train_state(cfg, full), latest_train_state(cfg, tmp_path / "cut")
    assert int(a.env_steps) == 2560
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a PQN checkpoint is read like any other: evaluate, inspect, and as a teacher or transfer source
    assert cli.main(["evaluate", str(full), "--episodes", "2"]) == 0
    assert cli.main(["inspect", str(full)]) == 0
    teacher = fixed_q(load_source(str(full)), 0)
    obs = jnp.zeros((3, 4))
    np.testing.assert_allclose(
        np.asarray(teacher(obs)), np.asarray(build_agent(cfg).learner.q_values(a.params, obs[None])[0]), rtol=1e-5
    )


def test_dqn_only_keys_are_refused_with_pqn():
    with pytest.raises(ConfigError, match="dqn.replay_capacity.*system: pqn"):
        tiny_pqn("dqn.replay_capacity=5000")
    with pytest.raises(ConfigError, match="pqn.minibatches"):
        tiny_pqn("pqn.minibatches=5")
    with pytest.raises(ConfigError, match="pqn.epochs.*system: dqn"):
        config.from_dict({"pqn": {"epochs": 3}})


@pytest.mark.slow
def test_pqn_learns_cartpole(tmp_path):
    """configs/cartpole_pqn.yaml cut to 122,880 env steps: fails when the agent does not learn.

    PQN's greedy policy swings from one evaluation to the next at this budget (on 2026-12-02:
    192, 244, 135, 396, 263, 228 every 20,480 steps), so the test asks for its best evaluation
    and for the exploring policy's return at the end; random play scores about 20 on both."""
    # in a child process compiled as a user's run is: 20 s there against 31 s at the tests' settings
    # (one after the other, a training run beside them)
    overrides = ["train.total_env_steps=122880", "train.progress=false", "train.tensorboard=false", "train.eval_every=20480"]
    run_dir = train_in_child("configs/cartpole_pqn.yaml", tmp_path / "run", overrides)
    rows = [r for r in read_metrics(run_dir) if r["task"] == "CartPole-v1"]
    assert max(r["eval_return"] for r in rows if not np.isnan(r["eval_return"])) >= 350
    assert rows[-1]["episode_return"] >= 150
