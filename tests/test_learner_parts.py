"""The learner built from parts: per-task loss terms, and how PopArt and gradient surgery see them."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import popart as popart_lib
from jaxdqn.agents import parts
from jaxdqn.agents.learner import Learner
from jaxdqn.networks import NetworkSpec, QNetwork

from helpers import random_batch


@dataclasses.dataclass(frozen=True)
class PullToConstant:
    """A per-task term ``weight * (count + 1) * mean_{b,a} (q[b, a] - c_i)^2`` with ``c_i`` prepared from the batch."""

    weight: float = 0.1

    def prepare(self, batch):
        return batch.reward.mean(axis=1)  # [T]: one constant per task

    def task_loss(self, q, constant, action_mask, count):
        del action_mask
        return self.weight * (count + 1.0) * jnp.mean(jnp.square(q - constant))


def make(num_tasks=2, mode="hard", **fields):
    learner = Learner(QNetwork(NetworkSpec(hidden_sizes=(16,)), 2), num_tasks, np.ones((num_tasks, 2), bool), mode=mode, **fields)
    params = learner.init_params(jax.random.split(jax.random.PRNGKey(0), num_tasks), jnp.zeros((1, 4)))
    return learner, params


def test_a_task_term_adds_to_each_task_loss_as_computed_by_hand():
    plain, params = make()
    with_term = dataclasses.replace(plain, terms=(PullToConstant(),))
    batch = random_batch(0, 2)
    targets = plain.td_targets(params, params, batch)
    count = 3
    base, _ = plain.task_losses(params, targets, batch)
    total, info = with_term.task_losses(params, targets, batch, count=count)
    q = plain.q_values(params, batch.obs)
    constant = batch.reward.mean(axis=1)
    expected = 0.1 * (count + 1) * np.mean(np.square(np.asarray(q) - np.asarray(constant)[:, None, None]), axis=(1, 2))
    np.testing.assert_allclose(np.asarray(total - base), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info.penalty), expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(info.task_loss), np.asarray(base), rtol=1e-6)  # the value loss alone


@pytest.mark.parametrize("value_loss", ["huber", "hl_gauss"])
@pytest.mark.parametrize("surgery", [None, parts.PCGrad()])
def test_an_example_of_weight_zero_has_no_part_in_the_step(value_loss, surgery):
    # PQN gives envpool's auto-reset steps weight 0: whatever their targets and observations,
    # the step must be the one on the other examples alone.
    if value_loss == "hl_gauss":
        network = QNetwork(NetworkSpec(hidden_sizes=(16,), value_bins=11, value_min=-5.0, value_max=5.0), 2)
        fields = {"value_loss": parts.HLGauss(network.spec.support)}
    else:
        network, fields = QNetwork(NetworkSpec(hidden_sizes=(16,)), 2), {}
    learner = Learner(network, 2, np.ones((2, 2), bool), mode="hard", surgery=surgery, **fields)
    params = learner.init_params(jax.random.split(jax.random.PRNGKey(0), 2), jnp.zeros((1, 4)))
    opt_state = learner.init_opt_state(params)
    batch = random_batch(0, 2)
    targets = learner.td_targets(params, params, batch)
    weights = jnp.asarray(np.arange(8)[None, :].repeat(2, 0) % 3 != 0)  # [T, B]: 3 of 8 left out
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    step = jax.jit(learner.step)

    def changed(x, noise):  # the left-out examples replaced by nonsense
        mask = weights.reshape(weights.shape + (1,) * (x.ndim - 2))
        return jnp.where(mask, x, noise)

    weighted, _, _ = step(params, opt_state, targets, batch, keys, 0, weights)
    scrambled = batch._replace(obs=changed(batch.obs, 50.0), action=changed(batch.action, 1))
    other, _, _ = step(params, opt_state, changed(targets, 1e4), scrambled, keys, 0, weights)
    for a, b in zip(jax.tree_util.tree_leaves(weighted), jax.tree_util.tree_leaves(other)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    unweighted, _, _ = step(params, opt_state, targets, batch, keys, 0, None)
    all_ones, _, _ = step(params, opt_state, targets, batch, keys, 0, jnp.ones_like(weights))
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(weighted), jax.tree_util.tree_leaves(unweighted)))
    for a, b in zip(jax.tree_util.tree_leaves(unweighted), jax.tree_util.tree_leaves(all_ones)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_gradient_surgery_sees_the_term_as_part_of_the_task_loss():
    """With one task, PCGrad's combination is the task's own gradient: the surgery step equals the plain one,
    term included (before, the assisted learner dropped gradient surgery)."""
    plain, params = make(num_tasks=1, terms=(PullToConstant(weight=1.0),))
    surgery = dataclasses.replace(plain, surgery=parts.PCGrad())
    without_term = dataclasses.replace(plain, terms=())
    batch = random_batch(1, 1)
    keys = jax.random.split(jax.random.PRNGKey(2), 1)
    opt_state = plain.init_opt_state(params)
    a = jax.jit(plain.update)(params, params, opt_state, batch, count=2)[0]
    b = jax.jit(surgery.update)(params, params, opt_state, batch, keys=keys, count=2)[0]
    c = jax.jit(without_term.update)(params, params, opt_state, batch)[0]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c)))


def test_with_popart_the_term_sees_unnormalised_q_values():
    learner, params = make(num_tasks=2, mode="independent", popart=parts.PopArt(), terms=(PullToConstant(),))
    batch = random_batch(3, 2)
    targets = learner.td_targets(params, params, batch)
    stats = popart_lib.PopArtState(
        shift=jnp.array([[5.0], [-1.0]]), scale=jnp.array([[2.0], [0.5]]), second_moment=jnp.array([[29.0], [1.25]])
    )
    _, info = learner.task_losses(params, targets, batch, stats)
    q = np.asarray(learner.q_values(params, batch.obs))  # normalised outputs
    unnormalised = q * np.array([2.0, 0.5])[:, None, None] + np.array([5.0, -1.0])[:, None, None]
    constant = np.asarray(batch.reward.mean(axis=1))[:, None, None]
    expected = 0.1 * np.mean(np.square(unnormalised - constant), axis=(1, 2)).sum()
    np.testing.assert_allclose(float(info.penalty), expected, rtol=1e-5)


def test_the_learner_refuses_parts_that_do_not_fit():
    network = QNetwork(NetworkSpec(hidden_sizes=(16,)), 2)
    mask = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="gradient surgery needs hard sharing"):
        Learner(network, 2, mask, mode="independent", surgery=parts.PCGrad())
    with pytest.raises(ValueError, match="soft-sharing penalty"):
        Learner(network, 2, mask, mode="hard", soft=parts.SoftSharing(1e-3))
    with pytest.raises(ValueError, match="HLGauss"):
        Learner(network, 2, mask, value_loss=parts.HLGauss(QNetwork(NetworkSpec(value_bins=11), 2).spec.support))
    with pytest.raises(ValueError, match="shared head"):
        Learner(network, 2, mask, mode="hard", shared_head=True, popart=parts.PopArt())


def test_step_takes_targets_from_outside():
    """``update`` is DQN's bootstrap targets plus ``step``: another system can bring its own targets."""
    learner, params = make()
    batch = random_batch(4, 2)
    opt_state = learner.init_opt_state(params)
    targets = learner.td_targets(params, params, batch)
    a = learner.update(params, params, opt_state, batch)[0]
    b = learner.step(params, opt_state, targets, batch)[0]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
