"""PopArt: outputs preserved, targets and losses in normalised space, resume, config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import config, popart
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.io.checkpoint import Checkpointer

import helpers

NUM_TASKS = 2


def cfg_for(mode="hard", dueling=False, double=False, reward_scale=(1.0, 100.0), **dqn):
    return config.from_dict(
        helpers.tiny_config(
            *helpers.LEARNER_ONLY,
            tasks=[{"env_id": "CartPole-v1", "reward_scale": s} for s in reward_scale],
            network={"hidden_sizes": [16], "dueling": dueling},
            dqn={"batch_size": 8, "learning_starts": 0, "popart": True, "double": double, "loss": "squared", **dqn},
            multitask={"mode": mode},
        )
    )


def random_stats(seed):
    rng = np.random.default_rng(seed)
    shift = rng.normal(scale=50.0, size=(NUM_TASKS, 1)).astype(np.float32)
    scale = rng.uniform(0.5, 80.0, size=(NUM_TASKS, 1)).astype(np.float32)
    return popart.PopArtState(jnp.asarray(shift), jnp.asarray(scale), jnp.asarray(scale**2 + shift**2))


def learner_and_params(cfg):
    learner = build_agent(cfg).learner
    params = learner.init_params(jax.random.split(jax.random.PRNGKey(5), NUM_TASKS), jnp.zeros((1, 4), jnp.float32))
    return learner, params


@pytest.mark.parametrize("mode,dueling", [("hard", False), ("independent", True)])
def test_rescaling_preserves_unnormalised_outputs(mode, dueling):
    learner, params = learner_and_params(cfg_for(mode, dueling))
    old, new = random_stats(0), random_stats(1)
    obs = helpers.random_batch(0, NUM_TASKS).obs
    q_values, rescaled = jax.jit(learner.q_values), jax.jit(learner.rescale_heads)(params, old, new)
    before = popart.unnormalize(old, q_values(params, obs))
    after = popart.unnormalize(new, q_values(rescaled, obs))
    assert not np.allclose(q_values(params, obs), q_values(rescaled, obs))
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-5, atol=1e-5)


def test_target_network_holds_unnormalised_values():
    learner, params = learner_and_params(cfg_for())
    stats = random_stats(2)
    opt_state = learner.init_opt_state(params)._replace(stats=stats)
    obs = helpers.random_batch(1, NUM_TASKS).obs
    folded = learner.q_values(learner.target_source(params, opt_state), obs)
    expected = popart.unnormalize(stats, learner.q_values(params, obs))
    np.testing.assert_allclose(np.asarray(folded), np.asarray(expected), rtol=1e-5, atol=1e-5)


def huber(x):
    return np.where(np.abs(x) <= 1.0, 0.5 * x**2, np.abs(x) - 0.5)


@pytest.mark.parametrize("double,loss", [(False, "squared"), (True, "huber")])
def test_targets_statistics_and_loss_in_normalised_space(double, loss):
    step, gamma = 0.05, 0.9
    learner, params = learner_and_params(cfg_for(double=double, loss=loss, popart_step_size=step, gamma=gamma))
    old = random_stats(3)
    opt_state = learner.init_opt_state(params)._replace(stats=old)
    target_params = jax.tree_util.tree_map(lambda x: 0.8 * x, learner.target_source(params, opt_state))
    batch = helpers.random_batch(2, NUM_TASKS)
    _, new_opt_state, info = jax.jit(learner.update)(params, target_params, opt_state, batch)

    # By hand, in float64.
    q_next_target = np.asarray(learner.q_values(target_params, batch.next_obs), np.float64)  # unnormalised
    if double:
        a_star = np.asarray(learner.q_values(params, batch.next_obs)).argmax(-1)
    else:
        a_star = q_next_target.argmax(-1)
    bootstrap = np.take_along_axis(q_next_target, a_star[..., None], -1)[..., 0]
    reward = np.asarray(batch.reward, np.float64) * np.array([[1.0], [100.0]])
    y = reward + gamma * (1.0 - np.asarray(batch.terminated)) * bootstrap
    mu, nu = np.asarray(old.shift, np.float64), np.asarray(old.second_moment, np.float64)
    mu_new = mu + step * (y - mu).sum(axis=1, keepdims=True)
    nu_new = nu + step * (y**2 - nu).sum(axis=1, keepdims=True)
    sigma_new = np.sqrt(np.clip(nu_new - mu_new**2, 1e-8, 1e12))
    stats = new_opt_state.stats
    np.testing.assert_allclose(np.asarray(stats.shift), mu_new, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(stats.scale), sigma_new, rtol=1e-4)

    rescaled = jax.jit(learner.rescale_heads)(params, old, stats)
    q_norm = np.asarray(jax.jit(learner.q_values)(rescaled, batch.obs), np.float64)
    q_taken = np.take_along_axis(q_norm, np.asarray(batch.action)[..., None], -1)[..., 0]
    td = (y - mu_new) / sigma_new - q_taken
    expected = (0.5 * td**2 if loss == "squared" else huber(td)).mean(axis=1)
    np.testing.assert_allclose(np.asarray(info.task_loss), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(info.q_mean), (sigma_new * q_taken + mu_new).mean(axis=1), rtol=1e-4, atol=1e-4)


def test_reward_scale_multiplies_rewards_in_targets():
    scaled, params = learner_and_params(cfg_for(reward_scale=(1.0, 100.0), popart=False))
    plain, _ = learner_and_params(cfg_for(reward_scale=(1.0, 1.0), popart=False))
    batch = helpers.random_batch(3, NUM_TASKS)
    by_hand = batch._replace(reward=batch.reward * jnp.asarray([[1.0], [100.0]]))
    np.testing.assert_array_equal(
        np.asarray(scaled.td_targets(params, params, batch)), np.asarray(plain.td_targets(params, params, by_hand))
    )


def test_resume_with_popart_state_is_bit_exact(tmp_path):
    cfg = cfg_for(learning_starts=40, replay_capacity=200, target_update_period=10)
    agent = build_agent(cfg)
    start, _ = agent.run(agent.init(task_keys(cfg)), 30)
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=1)
    checkpointer.save(60, start, {})
    straight, _ = jax.device_get(agent.run(start, 30))
    restored, _ = checkpointer.restore_state(jax.eval_shape(agent.init, task_keys(cfg)))
    checkpointer.close()
    resumed, _ = jax.device_get(agent.run(restored, 30))
    assert float(np.abs(np.asarray(straight.opt_state.stats.scale) - 1.0).max()) > 0.01  # the statistics moved
    for x, y in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "data,key",
    [
        ({"multitask": {"mode": "hard", "hard_heads": "shared"}, "dqn": {"popart": True}}, "dqn.popart"),
        ({"dqn": {"popart": True, "batch_size": 128, "popart_step_size": 0.01}}, "dqn.popart_step_size"),
        ({"tasks": [{"env_id": "CartPole-v1", "reward_scale": 0}]}, "tasks[0].reward_scale"),
    ],
)
def test_config_errors_name_the_key(data, key):
    data = {"tasks": [{"env_id": "CartPole-v1"}] * 2, **data}
    with pytest.raises(config.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config.from_dict(data)
