"""PCGrad (jaxdqn.losses.pcgrad) and its use in hard sharing.

Against a direct NumPy transcription of Yu et al.'s procedure (sequential
projections in a random order per task), plus its properties: one task gives
the plain gradient, two tasks never conflict after projection, the order comes
from the keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import config, losses
from jaxdqn.agents.build import build_agent

from helpers import LEARNER_ONLY, random_batch, tiny_config


def reference_pcgrad(grads: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """``grads [T, P]`` -> projected ``[T, P]``, written as the paper's loop."""
    grads = grads.astype(np.float64)
    out = grads.copy()
    for i in range(len(grads)):
        for j in orders[i]:
            if j == i:
                continue
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] = out[i] - dot / (grads[j] @ grads[j]) * grads[j]
    return out


def orders_of(keys, num_tasks):
    return np.asarray(jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys))


def random_grads(seed, num_tasks, shapes=((3, 4), (4,))):
    rng = np.random.default_rng(seed)
    return {f"w{n}": jnp.asarray(rng.normal(size=(num_tasks, *s)).astype(np.float32)) for n, s in enumerate(shapes)}


def flat(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    num_tasks = leaves[0].shape[0]
    return np.concatenate([np.asarray(x).reshape(num_tasks, -1) for x in leaves], axis=1)


@pytest.mark.parametrize("num_tasks,seed", [(2, 0), (3, 1), (5, 2), (8, 3)])
def test_pcgrad_matches_the_sequential_procedure(num_tasks, seed):
    grads = random_grads(seed, num_tasks)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_tasks)
    expected = reference_pcgrad(flat(grads), orders_of(keys, num_tasks))
    np.testing.assert_allclose(flat(jax.jit(losses.pcgrad_project)(grads, keys)), expected, rtol=1e-4, atol=1e-5)
    summed = jax.jit(losses.pcgrad)(grads, keys)
    np.testing.assert_allclose(flat(jax.tree_util.tree_map(lambda x: x[None], summed))[0], expected.sum(0), rtol=1e-4, atol=1e-5)


def test_pcgrad_of_one_task_is_its_gradient():
    grads = random_grads(0, 1)
    out = losses.pcgrad(grads, jax.random.split(jax.random.PRNGKey(0), 1))
    for name in grads:
        np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(grads[name][0]))


@pytest.mark.parametrize("seed", range(6))
def test_two_projected_gradients_do_not_conflict(seed):
    grads = random_grads(seed, 2)
    if flat(grads)[0] @ flat(grads)[1] >= 0:  # make them conflict
        grads = {k: v.at[1].multiply(-1.0) for k, v in grads.items()}
    original = flat(grads)
    projected = flat(losses.pcgrad_project(grads, jax.random.split(jax.random.PRNGKey(seed), 2)))
    assert original[0] @ original[1] < 0
    for i, j in ((0, 1), (1, 0)):
        scale = np.linalg.norm(projected[i]) * np.linalg.norm(original[j])
        assert projected[i] @ original[j] >= -1e-5 * scale


@pytest.mark.parametrize("seed", range(4))
def test_each_projected_gradient_does_not_conflict_with_the_last_task_in_its_order(seed):
    # With T >= 3 a later projection can bring back a conflict with an earlier
    # task (the procedure is sequential); with the last task in the order it cannot.
    num_tasks = 5
    grads = random_grads(seed, num_tasks)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_tasks)
    orders = orders_of(keys, num_tasks)
    original, projected = flat(grads), flat(losses.pcgrad_project(grads, keys))
    for i in range(num_tasks):
        last = [j for j in orders[i] if j != i][-1]
        scale = np.linalg.norm(projected[i]) * np.linalg.norm(original[last])
        assert projected[i] @ original[last] >= -1e-5 * scale


def test_order_comes_from_the_keys():
    # Three tasks where the order matters: task 0 conflicts with both others.
    grads = {"w": jnp.asarray([[1.0, 0.0], [-1.0, 1.0], [-1.0, -2.0]])}
    pcgrad = jax.jit(losses.pcgrad)
    results = set()
    for seed in range(8):
        keys = jax.random.split(jax.random.PRNGKey(seed), 3)
        a = np.asarray(pcgrad(grads, keys)["w"])
        b = np.asarray(pcgrad(grads, keys)["w"])
        np.testing.assert_array_equal(a, b)
        results.add(tuple(np.round(a, 5)))
    assert len(results) > 1


# -- in hard sharing ---------------------------------------------------------


def hard_cfg(num_tasks, surgery="none", **dqn):
    return config.from_dict(
        tiny_config(
            *LEARNER_ONLY,
            tasks=[{"env_id": "CartPole-v1"}] * num_tasks,
            network={"hidden_sizes": [16]},
            dqn={"batch_size": 8, "learning_starts": 0, **dqn},
            multitask={"mode": "hard", "gradient_surgery": surgery},
        )
    )


def init_learner(cfg):
    learner = build_agent(cfg).learner
    keys = jax.random.split(jax.random.PRNGKey(3), cfg.num_tasks)
    params = learner.init_params(keys, jnp.zeros((1, 4), jnp.float32))
    return learner, params, keys


def test_hard_sharing_with_one_task_and_pcgrad_is_plain_hard_sharing():
    plain, params, keys = init_learner(hard_cfg(1))
    surgery, _, _ = init_learner(hard_cfg(1, "pcgrad"))
    batch = random_batch(0, 1)
    target = jax.tree_util.tree_map(lambda x: x * 0.9, params)
    a = jax.jit(plain.update)(params, target, plain.init_opt_state(params), batch)
    b = jax.jit(surgery.update)(params, target, surgery.init_opt_state(params), batch, keys=keys)
    for x, y in zip(jax.tree_util.tree_leaves(a[0]), jax.tree_util.tree_leaves(b[0])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_hard_sharing_pcgrad_projects_the_per_task_torso_gradients():
    num_tasks = 3
    learner, params, keys = init_learner(hard_cfg(num_tasks, "pcgrad"))
    batch = random_batch(1, num_tasks)
    target = jax.tree_util.tree_map(lambda x: x * 0.9, params)
    targets = jax.jit(learner.td_targets)(params, target, batch)
    grads, _ = jax.jit(learner._surgery_gradients)(params, targets, batch, None, keys, 0)

    def task_loss(p, i):
        return learner.task_losses(p, targets, batch)[0][i]

    per_task = [jax.jit(jax.grad(task_loss), static_argnums=1)(params, i) for i in range(num_tasks)]
    stacked_torso = jax.tree_util.tree_map(lambda *g: jnp.stack(g), *[g["torso"] for g in per_task])
    expected_torso = losses.pcgrad({"torso": stacked_torso}, keys)["torso"]
    for x, y in zip(jax.tree_util.tree_leaves(grads["torso"]), jax.tree_util.tree_leaves(expected_torso)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    plain_head = jax.jit(jax.grad(lambda p: learner.loss_on_targets(p, targets, batch)[0]))(params)["head"]
    for x, y in zip(jax.tree_util.tree_leaves(grads["head"]), jax.tree_util.tree_leaves(plain_head)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_pcgrad_outside_hard_sharing_is_a_config_error():
    with pytest.raises(config.ConfigError, match="multitask.gradient_surgery"):
        config.from_dict(
            {"tasks": [{"env_id": "CartPole-v1"}] * 2, "multitask": {"mode": "independent", "gradient_surgery": "pcgrad"}}
        )
