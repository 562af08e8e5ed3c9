"""Tests for jaxdqn.losses."""

import itertools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from jaxdqn import losses

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_td_inputs(seed, batch=64, num_actions=6):
    """(q_tm1, a_tm1, r_t, discount_t, q_t, q_t_selector) of a random batch, a quarter of it terminal."""
    rng = np.random.default_rng(seed)
    q_tm1 = rng.normal(size=(batch, num_actions)).astype(np.float32)
    q_t = rng.normal(size=(batch, num_actions)).astype(np.float32)
    q_t_sel = rng.normal(size=(batch, num_actions)).astype(np.float32)
    a_tm1 = rng.integers(0, num_actions, size=batch).astype(np.int32)
    r_t = rng.normal(size=batch).astype(np.float32)
    discount_t = np.full(batch, 0.99, np.float32)
    discount_t[rng.random(batch) < 0.25] = 0.0  # terminal steps
    discount_t[0] = 0.0  # at least one terminal per batch
    return tuple(jnp.asarray(x) for x in (q_tm1, a_tm1, r_t, discount_t, q_t, q_t_sel))


# ----------------------------------------------------------------------------
# TD errors vs rlax
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_q_learning_matches_rlax(seed):
    q_tm1, a_tm1, r_t, d_t, q_t, _ = random_td_inputs(seed)
    ours = losses.batched_q_learning(q_tm1, a_tm1, r_t, d_t, q_t)
    ref = jax.vmap(rlax.q_learning)(q_tm1, a_tm1, r_t, d_t, q_t)
    assert ours.shape == (64,)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    # Terminal entries: target is just the reward.
    term = np.asarray(d_t) == 0
    expected = np.asarray(r_t) - np.take_along_axis(np.asarray(q_tm1), np.asarray(a_tm1)[:, None], 1)[:, 0]
    np.testing.assert_allclose(np.asarray(ours)[term], expected[term], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_double_q_learning_matches_rlax(seed):
    q_tm1, a_tm1, r_t, d_t, q_t, q_sel = random_td_inputs(seed)
    ours = losses.batched_double_q_learning(q_tm1, a_tm1, r_t, d_t, q_t, q_sel)
    ref = jax.vmap(rlax.double_q_learning)(q_tm1, a_tm1, r_t, d_t, q_t, q_sel)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_all_true_mask_matches_no_mask():
    q_tm1, a_tm1, r_t, d_t, q_t, q_sel = random_td_inputs(7)
    mask = jnp.ones(q_t.shape, bool)
    np.testing.assert_allclose(
        losses.batched_q_learning(q_tm1, a_tm1, r_t, d_t, q_t, mask),
        losses.batched_q_learning(q_tm1, a_tm1, r_t, d_t, q_t),
        atol=0,
    )
    np.testing.assert_allclose(
        losses.batched_double_q_learning(q_tm1, a_tm1, r_t, d_t, q_t, q_sel, mask),
        losses.batched_double_q_learning(q_tm1, a_tm1, r_t, d_t, q_t, q_sel),
        atol=0,
    )


def test_batched_works_under_jit_and_with_shared_mask():
    q_tm1, a_tm1, r_t, d_t, q_t, _ = random_td_inputs(3, batch=8, num_actions=4)
    shared = jnp.array([True, False, True, True])
    jitted = jax.jit(losses.batched_q_learning)(q_tm1, a_tm1, r_t, d_t, q_t, shared)
    per_row = losses.batched_q_learning(q_tm1, a_tm1, r_t, d_t, q_t, jnp.broadcast_to(shared, q_t.shape))
    np.testing.assert_allclose(jitted, per_row, atol=1e-6)


# ----------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------


def test_q_learning_by_hand():
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    q_t = jnp.array([0.5, 4.0, -1.0])
    # target = 1 + 0.5 * 4 = 3; td = 3 - q_tm1[0] = 2
    td = losses.q_learning(q_tm1, jnp.int32(0), jnp.float32(1.0), jnp.float32(0.5), q_t)
    assert td == pytest.approx(2.0)
    # terminal: target = 1; td = 1 - q_tm1[2] = -2
    td = losses.q_learning(q_tm1, jnp.int32(2), jnp.float32(1.0), jnp.float32(0.0), q_t)
    assert td == pytest.approx(-2.0)


def test_double_q_learning_by_hand():
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    q_t_value = jnp.array([10.0, 20.0, 30.0])
    q_t_selector = jnp.array([0.0, 5.0, 1.0])  # selects action 1
    # target = 1 + 0.5 * 20 = 11; td = 11 - q_tm1[1] = 9
    td = losses.double_q_learning(q_tm1, jnp.int32(1), jnp.float32(1.0), jnp.float32(0.5), q_t_value, q_t_selector)
    assert td == pytest.approx(9.0)
    # with action 1 masked the selector picks action 2: target = 1 + 15 = 16
    mask = jnp.array([True, False, True])
    td = losses.double_q_learning(q_tm1, jnp.int32(1), jnp.float32(1.0), jnp.float32(0.5), q_t_value, q_t_selector, mask)
    assert td == pytest.approx(14.0)


def test_squared_and_huber_by_hand():
    x = jnp.array([0.5, -0.5, 3.0, -3.0, 1.0])
    np.testing.assert_allclose(losses.squared_loss(x), [0.125, 0.125, 4.5, 4.5, 0.5], rtol=1e-6)
    # delta = 1: |x|<=1 -> 0.5x^2; else 1*(|x| - 0.5)
    np.testing.assert_allclose(losses.huber_loss(x), [0.125, 0.125, 2.5, 2.5, 0.5], rtol=1e-6)
    # delta = 2: 0.5 -> 0.125; 3 -> 2*(3 - 1) = 4
    np.testing.assert_allclose(losses.huber_loss(jnp.array([0.5, -3.0]), 2.0), [0.125, 4.0], rtol=1e-6)
    # gradient is x clipped to [-delta, delta]
    g = jax.grad(lambda v: jnp.sum(losses.huber_loss(v)))(x)
    np.testing.assert_allclose(g, [0.5, -0.5, 1.0, -1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(losses.huber_loss(x), rlax.huber_loss(x), rtol=1e-6)


def test_td_loss_by_hand_and_kind_check():
    td = jnp.array([0.5, -3.0])
    assert losses.td_loss(td, "huber") == pytest.approx((0.125 + 2.5) / 2)
    assert losses.td_loss(td, "squared") == pytest.approx((0.125 + 4.5) / 2)
    assert losses.td_loss(td, "huber", delta=2.0) == pytest.approx((0.125 + 4.0) / 2)
    with pytest.raises(ValueError, match="huber.*squared"):
        losses.td_loss(td, "l1")


def test_weighted_td_loss_leaves_out_the_examples_of_weight_zero():
    td = jnp.array([0.5, -3.0, 100.0])
    keep = jnp.array([True, True, False])
    assert losses.td_loss(td, "squared", weights=keep) == pytest.approx((0.125 + 4.5) / 2)
    assert losses.td_loss(td, "huber", weights=jnp.array([1.0, 3.0, 0.0])) == pytest.approx((0.125 + 3 * 2.5) / 4)
    assert float(losses.batch_mean(td, jnp.zeros(3))) == 0.0
    gradient = jax.grad(lambda x: losses.td_loss(x, "squared", weights=keep))(td)
    np.testing.assert_allclose(np.asarray(gradient), [0.25, -1.5, 0.0])


def test_distill_kl_by_hand():
    q_s = jnp.array([0.0, 1.0])
    q_t = jnp.array([1.0, 0.0])
    # p = [e/(1+e), 1/(1+e)], s = [1/(1+e), e/(1+e)]
    # KL = p0 log(p0/s0) + p1 log(p1/s1) = (p0 - p1) * 1
    e = math.e
    expected = (e - 1) / (e + 1)
    kl = losses.distill_kl(q_s, q_t, tau_teacher=1.0, tau_student=1.0)
    assert kl == pytest.approx(expected, rel=1e-6)
    # a masked third action with extreme values changes nothing
    mask = jnp.array([True, True, False])
    kl_m = losses.distill_kl(jnp.array([0.0, 1.0, 50.0]), jnp.array([1.0, 0.0, -70.0]), 1.0, 1.0, mask)
    assert kl_m == pytest.approx(expected, rel=1e-6)


def test_distill_kl_student_gradient_is_softmax_difference():
    rng = np.random.default_rng(5)
    q_s = jnp.asarray(rng.normal(size=5).astype(np.float32))
    q_t = jnp.asarray(rng.normal(size=5).astype(np.float32))
    tau_t, tau_s = 0.5, 2.0
    g = jax.grad(lambda s: losses.distill_kl(s, q_t, tau_t, tau_s))(q_s)
    # d KL / d q_s = (softmax(q_s / tau_s) - softmax(q_t / tau_t)) / tau_s
    want = (jax.nn.softmax(q_s / tau_s) - jax.nn.softmax(q_t / tau_t)) / tau_s
    np.testing.assert_allclose(g, want, atol=1e-6)


def test_distill_mse_by_hand():
    q_s = jnp.array([1.0, 2.0, 3.0])
    q_t = jnp.array([0.0, 2.0, 5.0])
    # (1 + 0 + 4) / 3
    assert losses.distill_mse(q_s, q_t) == pytest.approx(5.0 / 3.0)
    # masking action 2: (1 + 0) / 2
    mask = jnp.array([True, True, False])
    assert losses.distill_mse(q_s, q_t, mask) == pytest.approx(0.5)


def test_distill_nll_by_hand():
    q_s = jnp.array([0.0, math.log(3.0)])  # softmax = [1/4, 3/4]
    q_t = jnp.array([2.0, 1.0])  # teacher's greedy action is 0
    assert losses.distill_nll(q_s, q_t) == pytest.approx(math.log(4.0), rel=1e-6)
    # tau_student = 0.5 doubles the logits: softmax = [1/10, 9/10]
    assert losses.distill_nll(q_s, q_t, tau_student=0.5) == pytest.approx(math.log(10.0), rel=1e-6)
    # masking action 0: greedy is 1 and it is the only valid action -> 0
    mask = jnp.array([False, True])
    assert losses.distill_nll(q_s, q_t, mask) == pytest.approx(0.0, abs=1e-6)


def test_weighted_task_sum_by_hand():
    task_losses = jnp.array([1.0, 2.0, 3.0])
    assert losses.weighted_task_sum(task_losses) == pytest.approx(6.0)
    w = jnp.array([0.5, 0.0, 2.0])
    assert losses.weighted_task_sum(task_losses, w) == pytest.approx(6.5)
    with pytest.raises(AssertionError):
        losses.weighted_task_sum(task_losses, jnp.array([1.0, 2.0]))


# ----------------------------------------------------------------------------
# Action masks
# ----------------------------------------------------------------------------


def test_masked_max_and_argmax():
    q = jnp.array([1.0, 100.0, 3.0, 2.0])
    mask = jnp.array([True, False, True, True])
    assert losses.masked_max(q, mask) == pytest.approx(3.0)
    assert losses.masked_max(q) == pytest.approx(100.0)
    a = losses.masked_argmax(q, mask)
    assert a.dtype == jnp.int32 and int(a) == 2
    assert int(losses.masked_argmax(q)) == 1
    # a masked action still loses against a valid one at the most negative value
    lo = jnp.finfo(jnp.float32).min
    assert int(losses.masked_argmax(jnp.array([5.0, lo]), jnp.array([False, True]))) == 1


def test_masked_action_never_wins_td_target_and_gets_no_gradient():
    q_tm1 = jnp.array([0.0, 0.0, 0.0])
    q_t = jnp.array([1.0, 1e6, 2.0])
    mask = jnp.array([True, False, True])
    args = (q_tm1, jnp.int32(0), jnp.float32(0.0), jnp.float32(1.0))
    td = losses.q_learning(*args, q_t, mask)
    assert td == pytest.approx(2.0)
    td2 = losses.double_q_learning(*args, q_t, q_t, mask)
    assert td2 == pytest.approx(2.0)

    for fn in (
        lambda qt: losses.q_learning(*args, qt, mask, stop_target_gradients=False),
        lambda qt: losses.double_q_learning(*args, qt, qt, mask, stop_target_gradients=False),
    ):
        g = jax.grad(fn)(q_t)
        np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])

    # with the default stop_gradient no gradient reaches q_t at all
    g = jax.grad(lambda qt: losses.q_learning(*args, qt, mask))(q_t)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_batched_mask_per_row():
    rng = np.random.default_rng(11)
    q_t = jnp.asarray(rng.normal(size=(64, 5)).astype(np.float32))
    mask = jnp.asarray(rng.random((64, 5)) < 0.6).at[:, 0].set(True)
    q_t_big = jnp.where(mask, q_t, 1e4)  # masked entries are the largest
    zeros = jnp.zeros((64,), jnp.float32)
    td = losses.batched_q_learning(
        jnp.zeros_like(q_t), jnp.zeros((64,), jnp.int32), zeros, jnp.ones((64,), jnp.float32), q_t_big, mask
    )
    expected = np.max(np.where(mask, q_t, -np.inf), axis=1)
    np.testing.assert_allclose(td, expected, atol=1e-6)


# ----------------------------------------------------------------------------
# Soft-sharing penalty
# ----------------------------------------------------------------------------


def _random_tree(num_tasks, seed):
    rng = np.random.default_rng(seed)

    def arr(*shape):
        return jnp.asarray(rng.normal(size=(num_tasks, *shape)).astype(np.float32))

    return {
        "torso": {"Dense_0": {"kernel": arr(3, 4), "bias": arr(4)}, "Dense_1": {"kernel": arr(4, 2)}},
        "head": {"kernel": arr(2, 5), "bias": arr(5)},
        "torso_extra": {"scale": arr(2)},
    }


def _naive_penalty(tree, lam, keep=lambda path: True):
    leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if keep(jax.tree_util.keystr(path))]
    flat = np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in leaves], axis=1)
    total = 0.0
    for i, j in itertools.product(range(flat.shape[0]), repeat=2):
        if i != j:
            total += np.sum((flat[i] - flat[j]) ** 2)
    return lam * total


@pytest.mark.parametrize("num_tasks", range(1, 9))
def test_penalty_matches_naive_double_loop(num_tasks):
    tree = _random_tree(num_tasks, seed=num_tasks)
    got = float(losses.soft_sharing_penalty(tree, 0.3))
    want = _naive_penalty(tree, 0.3)
    if num_tasks == 1:
        assert got == 0.0
    else:
        assert got == pytest.approx(want, rel=1e-5)


TORSO_ONLY = {"torso": True, "head": False, "torso_extra": False}  # a mask over _random_tree's parts


def test_penalty_mask_selects_torso_only():
    tree = _random_tree(4, seed=0)
    got = float(losses.soft_sharing_penalty(tree, 0.5, TORSO_ONLY))
    want = _naive_penalty(tree, 0.5, keep=lambda p: p.startswith("['torso']"))
    assert got == pytest.approx(want, rel=1e-5)
    # manual restriction to the torso subtree gives the same number
    assert got == pytest.approx(float(losses.soft_sharing_penalty({"torso": tree["torso"]}, 0.5)), rel=1e-6)
    # a mask as fine as single leaves: the torso's kernels only
    kernels = {
        "torso": {"Dense_0": {"kernel": True, "bias": False}, "Dense_1": {"kernel": True}},
        "head": False,
        "torso_extra": False,
    }
    want = _naive_penalty(tree, 0.5, keep=lambda p: p.startswith("['torso']") and p.endswith("['kernel']"))
    assert float(losses.soft_sharing_penalty(tree, 0.5, kernels)) == pytest.approx(want, rel=1e-5)
    # nothing selected -> 0
    nothing = {"torso": False, "head": False, "torso_extra": False}
    assert float(losses.soft_sharing_penalty(tree, 0.5, nothing)) == 0.0


def test_penalty_gradient_is_analytic():
    num_tasks, lam = 5, 0.7
    tree = _random_tree(num_tasks, seed=3)
    grads = jax.grad(lambda p: losses.soft_sharing_penalty(p, lam, TORSO_ONLY))(tree)

    def expected(path, leaf):
        if path[0].key != "torso":
            return jnp.zeros_like(leaf)
        return lam * 4.0 * (num_tasks * leaf - jnp.sum(leaf, axis=0, keepdims=True))

    want = jax.tree_util.tree_map_with_path(expected, tree)
    for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_penalty_second_derivative_is_analytic():
    # Hessian-vector product of lam * sum_{i!=j} ||theta_i - theta_j||^2: 4 lam (T v - sum_i v_i).
    num_tasks, lam = 4, 0.3
    theta = jax.random.normal(jax.random.PRNGKey(0), (num_tasks, 3, 2))
    v = jax.random.normal(jax.random.PRNGKey(1), theta.shape)
    grad = jax.grad(lambda t: losses.soft_sharing_penalty({"w": t}, lam))
    _, hvp = jax.jvp(grad, (theta,), (v,))
    np.testing.assert_allclose(hvp, lam * 4.0 * (num_tasks * v - v.sum(axis=0, keepdims=True)), rtol=1e-5, atol=1e-5)


def test_penalty_rejects_mismatched_task_axis():
    with pytest.raises(ValueError, match="tasks"):
        losses.soft_sharing_penalty({"a": jnp.ones((3, 2)), "b": jnp.ones((4, 2))}, 1.0)


def test_penalty_is_jittable():
    tree = _random_tree(3, seed=1)
    head_only = {"torso": False, "head": True, "torso_extra": False}
    eager = losses.soft_sharing_penalty(tree, 0.2, head_only)
    jitted = jax.jit(lambda t: losses.soft_sharing_penalty(t, 0.2, head_only))(tree)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)


# ----------------------------------------------------------------------------
# Distillation properties
# ----------------------------------------------------------------------------


def test_distill_zero_when_student_equals_teacher():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = jnp.asarray(rng.normal(size=7).astype(np.float32) * 3)
        assert abs(float(losses.distill_kl(q, q, 1.0, 1.0))) < 1e-6
        assert abs(float(losses.distill_kl(q, q, 0.1, 0.1))) < 1e-6
        assert abs(float(losses.distill_mse(q, q))) < 1e-6
        # NLL is not zero: it is the student's own -log p of the greedy action
        nll = float(losses.distill_nll(q, q))
        want = -float(jax.nn.log_softmax(q)[jnp.argmax(q)])
        assert nll == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert nll > 0


def test_distill_never_negative():
    rng = np.random.default_rng(1)
    kl = jax.jit(jax.vmap(losses.distill_kl, in_axes=(0, 0, None, None, 0)))
    mse = jax.jit(jax.vmap(losses.distill_mse))
    nll = jax.jit(jax.vmap(losses.distill_nll))
    for scale in (0.1, 1.0, 10.0, 100.0):
        q_s = jnp.asarray(rng.normal(size=(512, 6)).astype(np.float32) * scale)
        q_t = jnp.asarray(rng.normal(size=(512, 6)).astype(np.float32) * scale)
        mask = jnp.asarray(rng.random((512, 6)) < 0.7).at[:, 2].set(True)
        for taus in ((1.0, 1.0), (0.01, 1.0), (1e-3, 1e-3), (5.0, 0.1)):
            assert float(jnp.min(kl(q_s, q_t, *taus, mask))) >= 0.0
        assert float(jnp.min(mse(q_s, q_t))) >= 0.0
        assert float(jnp.min(nll(q_s, q_t))) >= 0.0


@pytest.mark.parametrize("use_mask", [False, True])
def test_distill_finite_at_tiny_temperature(use_mask):
    rng = np.random.default_rng(2)
    q_s = jnp.asarray(rng.normal(size=(32, 6)).astype(np.float32) * 100)
    q_t = jnp.asarray(rng.normal(size=(32, 6)).astype(np.float32) * 100)
    mask = jnp.asarray(rng.random((32, 6)) < 0.5).at[:, 0].set(True) if use_mask else None

    def total(q_s_, q_t_):
        kl = (
            jax.vmap(lambda a, b, m: losses.distill_kl(a, b, 1e-3, 1e-3, m))(q_s_, q_t_, mask)
            if use_mask
            else jax.vmap(lambda a, b: losses.distill_kl(a, b, 1e-3, 1e-3))(q_s_, q_t_)
        )
        nll = (
            jax.vmap(lambda a, b, m: losses.distill_nll(a, b, m, 1e-3))(q_s_, q_t_, mask)
            if use_mask
            else jax.vmap(lambda a, b: losses.distill_nll(a, b, None, 1e-3))(q_s_, q_t_)
        )
        mse = jax.vmap(losses.distill_mse)(q_s_, q_t_, mask) if use_mask else jax.vmap(losses.distill_mse)(q_s_, q_t_)
        return jnp.sum(kl) + jnp.sum(nll) + jnp.sum(mse), (kl, nll, mse)

    (value, parts), (g_s, g_t) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(q_s, q_t)
    assert np.isfinite(float(value))
    for part in parts:
        assert np.all(np.isfinite(part))
    assert np.all(np.isfinite(g_s))
    assert np.all(np.isfinite(g_t))
    # the teacher is behind stop_gradient
    np.testing.assert_array_equal(g_t, 0.0)
    if use_mask:
        np.testing.assert_array_equal(np.asarray(g_s)[~np.asarray(mask)], 0.0)


def test_masked_actions_do_not_change_kl_or_mse():
    rng = np.random.default_rng(3)
    for _ in range(10):
        q_s = jnp.asarray(rng.normal(size=6).astype(np.float32))
        q_t = jnp.asarray(rng.normal(size=6).astype(np.float32))
        mask = jnp.array([True, False, True, True, False, True])
        noise_s = jnp.asarray(rng.normal(size=6).astype(np.float32) * 1e3)
        noise_t = jnp.asarray(rng.normal(size=6).astype(np.float32) * 1e3)
        q_s2 = jnp.where(mask, q_s, noise_s)
        q_t2 = jnp.where(mask, q_t, noise_t)
        for taus in ((1.0, 1.0), (0.01, 1.0)):
            np.testing.assert_allclose(
                losses.distill_kl(q_s, q_t, *taus, action_mask=mask),
                losses.distill_kl(q_s2, q_t2, *taus, action_mask=mask),
                rtol=1e-6,
            )
        np.testing.assert_allclose(losses.distill_mse(q_s, q_t, mask), losses.distill_mse(q_s2, q_t2, mask), rtol=1e-6)
        np.testing.assert_allclose(losses.distill_nll(q_s, q_t, mask), losses.distill_nll(q_s2, q_t2, mask), rtol=1e-6)
        # and equal to the loss on the valid sub-vectors alone
        idx = np.flatnonzero(np.asarray(mask))
        np.testing.assert_allclose(
            losses.distill_kl(q_s, q_t, 1.0, 1.0, mask), losses.distill_kl(q_s[idx], q_t[idx], 1.0, 1.0), rtol=1e-5, atol=1e-7
        )
        # masked entries get zero gradient, without NaNs
        g = jax.grad(lambda s: losses.distill_kl(s, q_t2, 1.0, 1.0, mask))(q_s2)
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(np.asarray(g)[~np.asarray(mask)], 0.0)


# ----------------------------------------------------------------------------
# Import hygiene
# ----------------------------------------------------------------------------


def test_import_does_not_pull_heavy_dependencies():
    code = "import jaxdqn.losses, sys; assert not any(m.split('.')[0] in ('flax','envpool','gymnax') for m in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
