"""Tests for jaxdqn.networks: shapes, parameter layout, dueling head, pixel scaling."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn.networks import (
    TORSOS,
    DuelingHead,
    MinAtarTorso,
    NatureTorso,
    NetworkSpec,
    QNetwork,
    make_torso,
    num_params,
    preprocess,
)

BATCH = 3
NUM_ACTIONS = 5


def _example_obs(torso: str, batch: int = BATCH, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    if torso == "mlp":
        return jnp.asarray(rng.normal(size=(batch, 4)), jnp.float32)
    if torso == "minatar_cnn":
        return jnp.asarray(rng.integers(0, 2, size=(batch, 10, 10, 4)), jnp.float32)
    if torso == "nature_cnn":
        return jnp.asarray(rng.integers(0, 256, size=(batch, 4, 84, 84)), jnp.uint8)
    raise AssertionError(torso)


# Feature width each torso produces with the default spec.
FEATURES = {"mlp": 84, "minatar_cnn": 128, "nature_cnn": 512}

_cache: dict = {}


def _net_and_params(torso: str, dueling: bool):
    """Initialises each (torso, head) pair once per test session."""
    if (torso, dueling) not in _cache:
        net = QNetwork(NetworkSpec(torso=torso, dueling=dueling), NUM_ACTIONS)
        obs = _example_obs(torso)
        params = net.init(jax.random.PRNGKey(0), obs)
        _cache[(torso, dueling)] = (net, params, obs)
    return _cache[(torso, dueling)]


@pytest.mark.parametrize("torso,dueling", list(itertools.product(TORSOS, (False, True))))
def test_q_values_shape_and_dtype(torso, dueling):
    net, params, obs = _net_and_params(torso, dueling)
    q = net.apply(params, obs)
    assert q.shape == (BATCH, NUM_ACTIONS)
    assert q.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(q)))
    # Different observations give different Q-values (the torso is not ignored).
    other = net.apply(params, _example_obs(torso, seed=1))
    assert not np.allclose(np.asarray(q), np.asarray(other))


@pytest.mark.parametrize("torso,dueling", list(itertools.product(TORSOS, (False, True))))
def test_param_tree_has_torso_and_head(torso, dueling):
    net, params, obs = _net_and_params(torso, dueling)
    assert set(params) == {"torso", "head"}
    features = net.features(params["torso"], obs)
    assert features.shape == (BATCH, FEATURES[torso])
    if dueling:
        assert set(params["head"]) == {"value", "advantage"}
        assert params["head"]["value"]["kernel"].shape == (FEATURES[torso], 1)
        assert params["head"]["advantage"]["kernel"].shape == (FEATURES[torso], NUM_ACTIONS)
    else:
        assert set(params["head"]) == {"Dense_0"}
        assert params["head"]["Dense_0"]["kernel"].shape == (FEATURES[torso], NUM_ACTIONS)


def test_apply_works_on_a_batch_of_one_and_under_jit():
    net, params, obs = _net_and_params("mlp", False)
    q_all = jax.jit(net.apply)(params, obs)
    q_one = net.apply(params, obs[:1])
    np.testing.assert_allclose(np.asarray(q_one), np.asarray(q_all[:1]), rtol=1e-5, atol=1e-6)


def test_mlp_layer_shapes_follow_hidden_sizes():
    net = QNetwork(NetworkSpec(torso="mlp", hidden_sizes=(32, 16, 8)), 3)
    params = net.init(jax.random.PRNGKey(1), jnp.zeros((2, 4), jnp.float32))
    torso = params["torso"]
    assert [torso[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(4, 32), (32, 16), (16, 8)]
    assert "Dense_3" not in torso
    assert params["head"]["Dense_0"]["kernel"].shape == (8, 3)
    assert num_params(params) == (4 * 32 + 32) + (32 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)


@pytest.mark.parametrize("channels", [4, 7, 10])
def test_minatar_torso_layers(channels):
    obs = jnp.zeros((2, 10, 10, channels), jnp.float32)
    params = MinAtarTorso().init(jax.random.PRNGKey(0), obs)["params"]
    assert set(params) == {"Conv_0", "Dense_0"}
    assert params["Conv_0"]["kernel"].shape == (3, 3, channels, 16)
    # VALID 3x3 conv on 10x10 -> 8x8x16 features, then 128 units.
    assert params["Dense_0"]["kernel"].shape == (8 * 8 * 16, 128)
    out = MinAtarTorso().apply({"params": params}, obs)
    assert out.shape == (2, 128)


def test_nature_torso_layers_and_strides():
    torso = NatureTorso()
    obs = jnp.zeros((2, 4, 84, 84), jnp.uint8)
    params = torso.init(jax.random.PRNGKey(0), obs)["params"]
    assert params["Conv_0"]["kernel"].shape == (8, 8, 4, 32)
    assert params["Conv_1"]["kernel"].shape == (4, 4, 32, 64)
    assert params["Conv_2"]["kernel"].shape == (3, 3, 64, 64)
    assert params["Dense_0"]["kernel"].shape == (7 * 7 * 64, 512)
    _, state = torso.apply({"params": params}, obs, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    # 84 -(8x8 stride 4)-> 20 -(4x4 stride 2)-> 9 -(3x3 stride 1)-> 7
    assert inter["Conv_0"]["__call__"][0].shape == (2, 20, 20, 32)
    assert inter["Conv_1"]["__call__"][0].shape == (2, 9, 9, 64)
    assert inter["Conv_2"]["__call__"][0].shape == (2, 7, 7, 64)
    assert inter["__call__"][0].shape == (2, 512)


def test_nature_torso_reads_frames_first():
    """Frames are on axis 1: changing only the last frame changes the features."""
    torso = NatureTorso()
    obs = jnp.zeros((1, 4, 84, 84), jnp.uint8)
    params = torso.init(jax.random.PRNGKey(3), obs)["params"]
    changed = obs.at[0, 3].set(255)
    a = torso.apply({"params": params}, obs)
    b = torso.apply({"params": params}, changed)
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_preprocess_scales_uint8_to_unit_interval():
    pixels = jnp.asarray([[0, 1, 128, 255]], jnp.uint8)
    out = preprocess(pixels)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), [[0.0, 1 / 255, 128 / 255, 1.0]], rtol=1e-6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_preprocess_leaves_float_values_alone():
    x = jnp.asarray([[-3.0, 0.5, 255.0]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(preprocess(x)), np.asarray(x))
    ints = jnp.asarray([[2, 300]], jnp.int32)
    out = preprocess(ints)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), [[2.0, 300.0]])


def test_network_scales_uint8_inputs_before_the_first_layer():
    """A uint8 observation gives the same Q-values as the float one divided by 255."""
    net = QNetwork(NetworkSpec(torso="mlp", hidden_sizes=(16,)), 3)
    pixels = jnp.asarray([[0, 17, 200, 255], [3, 90, 1, 64]], jnp.uint8)
    params = net.init(jax.random.PRNGKey(0), pixels)
    q_pixels = net.apply(params, pixels)
    q_scaled = net.apply(params, pixels.astype(jnp.float32) / 255.0)
    q_raw = net.apply(params, pixels.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(q_pixels), np.asarray(q_scaled), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(q_pixels), np.asarray(q_raw))


@pytest.mark.parametrize("torso", TORSOS)
def test_dueling_q_is_value_plus_zero_mean_advantage(torso):
    net, params, obs = _net_and_params(torso, True)
    features = np.asarray(net.features(params["torso"], obs), np.float64)
    head = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params["head"])
    value = features @ head["value"]["kernel"] + head["value"]["bias"]  # [B, 1]
    advantage = features @ head["advantage"]["kernel"] + head["advantage"]["bias"]  # [B, A]
    q = np.asarray(net.apply(params, obs), np.float64)

    np.testing.assert_allclose((q - value).mean(axis=-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(q, value + advantage - advantage.mean(axis=-1, keepdims=True), rtol=1e-4, atol=1e-4)
    # The raw advantages do not average to zero by themselves; the head centres them.
    assert np.abs(advantage.mean(axis=-1)).max() > 1e-3


def test_dueling_head_intermediates():
    """The ``advantage`` sub-layer's output, read from the module, is centred in Q."""
    head = DuelingHead(4)
    features = jax.random.normal(jax.random.PRNGKey(5), (6, 10))
    variables = head.init(jax.random.PRNGKey(6), features)
    # Give the advantage layer a large bias so that centring is visible.
    params = jax.tree_util.tree_map(lambda x: x, variables["params"])
    params["advantage"]["bias"] = jnp.asarray([3.0, -1.0, 7.0, 0.5])
    q, state = head.apply({"params": params}, features, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    value = np.asarray(inter["value"]["__call__"][0])
    advantage = np.asarray(inter["advantage"]["__call__"][0])
    assert value.shape == (6, 1) and advantage.shape == (6, 4)
    centred = np.asarray(q) - value
    np.testing.assert_allclose(centred.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(centred, advantage - advantage.mean(axis=-1, keepdims=True), atol=1e-5)


def test_plain_and_dueling_heads_differ():
    plain, p_params, obs = _net_and_params("mlp", False)
    dueling, d_params, _ = _net_and_params("mlp", True)
    assert "Dense_0" in p_params["head"] and "value" in d_params["head"]
    # Same seed, same torso parameters: the torso does not depend on the head kind.
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_params["torso"], d_params["torso"])


def test_unknown_torso_is_rejected_with_allowed_names():
    with pytest.raises(ValueError) as info:
        make_torso(NetworkSpec(torso="resnet"))
    message = str(info.value)
    assert "'resnet'" in message
    for name in TORSOS:
        assert name in message


def test_network_spec_round_trips_through_dict():
    spec = NetworkSpec(torso="minatar_cnn", hidden_sizes=(7, 9), dueling=True)
    data = spec.to_dict()
    assert data == {"torso": "minatar_cnn", "hidden_sizes": [7, 9], "dueling": True}
    assert NetworkSpec.from_dict(data) == spec
    assert NetworkSpec.from_dict({"torso": "mlp"}) == NetworkSpec()


@pytest.mark.parametrize(
    "torso, shape, dtype",
    [("minatar_cnn", (5, 10, 10, 7), jnp.float32), ("nature_cnn", (3, 4, 84, 84), jnp.uint8)],
)
def test_patch_convolution_equals_xla_convolution(torso, shape, dtype):
    key = jax.random.PRNGKey(4)
    if dtype == jnp.uint8:
        obs = jax.random.randint(key, shape, 0, 256).astype(jnp.uint8)
    else:
        obs = jax.random.bernoulli(key, 0.3, shape).astype(dtype)
    xla = QNetwork(NetworkSpec(torso=torso, conv_impl="xla"), 5)
    patches = QNetwork(NetworkSpec(torso=torso, conv_impl="patches"), 5)
    params = xla.init(jax.random.PRNGKey(0), obs)
    # Same parameter tree and the same initial values, so checkpoints move freely between the two.
    same_init = patches.init(jax.random.PRNGKey(0), obs)
    assert jax.tree_util.tree_structure(same_init) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(same_init), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(patches.apply(params, obs), xla.apply(params, obs), rtol=1e-5, atol=1e-5)

    def grad(net):
        return jax.grad(lambda p: (net.apply(p, obs) ** 2).sum())(params)

    for a, b in zip(jax.tree_util.tree_leaves(grad(patches)), jax.tree_util.tree_leaves(grad(xla))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# -- the MinAtar CNN's widths ------------------------------------------------


def minatar_param_count(in_channels: int, channels: int, hidden: int, actions: int) -> int:
    """3x3 conv (VALID on 10x10 -> 8x8), dense, linear head: weights + biases."""
    return (9 * in_channels * channels + channels) + (64 * channels * hidden + hidden) + (hidden * actions + actions)


@pytest.mark.parametrize("channels, hidden", [(16, 128), (8, 64), (4, 128), (3, 5)])
def test_minatar_cnn_widths_set_layer_shapes_and_parameter_count(channels, hidden):
    spec = NetworkSpec(torso="minatar_cnn", cnn_channels=channels, cnn_hidden=hidden)
    obs = _example_obs("minatar_cnn")  # [3, 10, 10, 4]
    net = QNetwork(spec, NUM_ACTIONS)
    params = net.init(jax.random.PRNGKey(0), obs)
    assert params["torso"]["Conv_0"]["kernel"].shape == (3, 3, 4, channels)
    assert params["torso"]["Dense_0"]["kernel"].shape == (8 * 8 * channels, hidden)
    assert params["head"]["Dense_0"]["kernel"].shape == (hidden, NUM_ACTIONS)
    assert num_params(params) == minatar_param_count(4, channels, hidden, NUM_ACTIONS)
    assert net.features(params["torso"], obs).shape == (BATCH, hidden)
    assert net.apply(params, obs).shape == (BATCH, NUM_ACTIONS)


def test_default_minatar_cnn_is_young_and_tian_and_a_quarter_size_student_is_about_25_percent():
    teacher = num_params(QNetwork(NetworkSpec(torso="minatar_cnn"), 3).init(jax.random.PRNGKey(0), _example_obs("minatar_cnn")))
    assert teacher == 132_179  # Breakout: 4 input channels, 3 actions
    student_spec = NetworkSpec(torso="minatar_cnn", cnn_channels=8, cnn_hidden=64)
    student = num_params(QNetwork(student_spec, 3).init(jax.random.PRNGKey(0), _example_obs("minatar_cnn")))
    assert student == 33_323
    assert 0.24 < student / teacher < 0.26


def test_minatar_widths_are_recorded_only_when_not_the_default():
    small = NetworkSpec(torso="minatar_cnn", cnn_channels=8, cnn_hidden=64)
    assert small.to_dict()["cnn_channels"] == 8 and small.to_dict()["cnn_hidden"] == 64
    assert NetworkSpec.from_dict(small.to_dict()) == small
    assert "cnn_channels" not in NetworkSpec(torso="minatar_cnn").to_dict()
    # a record written before the widths existed is the default network
    assert NetworkSpec.from_dict({"torso": "minatar_cnn"}) == NetworkSpec(torso="minatar_cnn")
