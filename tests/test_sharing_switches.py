"""What makes sharing work: HL-Gauss, per-task input layers, task conditioning,
LayerNorm and T gradient steps per round, each checked for what it computes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdqn import config, losses
from jaxdqn.agents.build import build_agent, network_spec, schedule, task_keys
from jaxdqn.errors import ConfigError
from jaxdqn.networks import TASK_INPUT, NetworkSpec, QNetwork, ValueSupport
from jaxdqn.running.train import train

from helpers import latest_train_state, random_batch, tiny_config

# -- HL-Gauss ------------------------------------------------------------------------

SUPPORT = ValueSupport(num_bins=41, v_min=-5.0, v_max=15.0)
SIGMA = 0.75 * SUPPORT.bin_width


def expected_value(target: float) -> float:
    probs = losses.hl_gauss_histogram(jnp.float32(target), SUPPORT.edges, SIGMA)
    return float(probs @ SUPPORT.centers)


@pytest.mark.parametrize("target", [-3.0, -0.37, 0.0, 2.5, 7.21, 12.9])
def test_hl_gauss_histogram_expectation_is_the_target_inside_the_support(target):
    probs = losses.hl_gauss_histogram(jnp.float32(target), SUPPORT.edges, SIGMA)
    assert float(probs.min()) >= 0.0
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    # Two or more bin widths from the edges the truncation of the Gaussian is negligible.
    assert expected_value(target) == pytest.approx(target, abs=0.02 * SUPPORT.bin_width)


def test_hl_gauss_histogram_near_an_edge_stays_within_a_bin():
    for target in (-4.9, 14.8):
        assert abs(expected_value(target) - target) < SUPPORT.bin_width


@pytest.mark.parametrize("outside, edge", [(40.0, 15.0), (-100.0, -5.0)])
def test_hl_gauss_targets_outside_the_support_are_clipped(outside, edge):
    clipped = losses.hl_gauss_histogram(jnp.float32(outside), SUPPORT.edges, SIGMA)
    at_edge = losses.hl_gauss_histogram(jnp.float32(edge), SUPPORT.edges, SIGMA)
    np.testing.assert_allclose(np.asarray(clipped), np.asarray(at_edge), atol=1e-7)


def test_hl_gauss_loss_matches_a_hand_computation():
    edges = [0.0, 1.0, 2.0, 3.0]
    logits = [0.1, 0.5, -0.3]
    target, sigma = 1.2, 0.8
    phi = [0.5 * (1 + math.erf((e - target) / (sigma * math.sqrt(2)))) for e in edges]
    probs = [(phi[j + 1] - phi[j]) / (phi[-1] - phi[0]) for j in range(3)]
    log_z = math.log(sum(math.exp(logit) for logit in logits))
    expected = -sum(p * (logit - log_z) for p, logit in zip(probs, logits))
    got = losses.hl_gauss_loss(jnp.asarray(logits), jnp.float32(target), jnp.asarray(edges), sigma)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_hl_gauss_loss_gradients_are_finite_and_the_target_is_stopped():
    logits = jnp.linspace(-3.0, 3.0, SUPPORT.num_bins)
    for target in (-1e4, -5.0, 3.3, 15.0, 1e4):
        g_logits, g_target = jax.grad(losses.hl_gauss_loss, argnums=(0, 1))(logits, jnp.float32(target), SUPPORT.edges, SIGMA)
        assert np.isfinite(np.asarray(g_logits)).all()
        assert float(g_target) == 0.0
    # The gradient of a cross-entropy wrt logits is softmax - p: it sums to zero.
    g = jax.grad(losses.hl_gauss_loss)(logits, jnp.float32(3.3), SUPPORT.edges, SIGMA)
    assert float(g.sum()) == pytest.approx(0.0, abs=1e-5)


def test_classification_head_gives_q_as_the_expectation_of_its_logits():
    spec = NetworkSpec(torso="mlp", hidden_sizes=(16,), value_bins=11, value_min=-2.0, value_max=2.0)
    for dueling in (False, True):
        net = QNetwork(NetworkSpec(**{**spec.__dict__, "dueling": dueling}), num_actions=3)
        obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
        params = net.init(jax.random.PRNGKey(0), obs)
        logits = net.head_output(params, obs)
        assert logits.shape == (5, 3, 11)
        q = net.apply(params, obs)
        centers = -2.0 + (np.arange(11) + 0.5) * 4.0 / 11  # bin centres of [-2, 2]
        manual = (jax.nn.softmax(logits, -1) * centers).sum(-1)
        np.testing.assert_allclose(np.asarray(q), np.asarray(manual), atol=1e-5)


@pytest.mark.parametrize("mode", ["independent", "hard", "soft"])
def test_hl_gauss_learner_lowers_its_loss_on_a_fixed_batch(mode):
    extra = ["multitask.soft_lambda=0.001"] if mode == "soft" else []
    cfg = config.from_dict(
        tiny_config(
            "tasks=[{env_id: CartPole-v1}, {env_id: Acrobot-v1}]",
            f"multitask.mode={mode}",
            "dqn.loss=hl_gauss",
            "dqn.hl_gauss_bins=21",
            "dqn.hl_gauss_min=-5",
            "dqn.hl_gauss_max=5",
            *extra,
        )
    )
    agent = build_agent(cfg)
    learner = agent.learner
    state = agent.init(task_keys(cfg))
    batch = random_batch(3, num_tasks=2, batch=32, obs_shape=state.obs.shape[2:], actions=3)
    params, opt_state = state.params, state.opt_state
    update = jax.jit(learner.update)  # one compile instead of 30 op-by-op passes
    first = None
    for _ in range(30):
        params, opt_state, info = update(params, state.target_params, opt_state, batch)
        first = info.task_loss if first is None else first
    assert np.isfinite(np.asarray(info.task_loss)).all()
    assert (np.asarray(info.task_loss) < np.asarray(first)).all()


# -- per-task input layers, conditioning, LayerNorm, steps per round -----------------------

MIXED = "tasks=[{env_id: CartPole-v1}, {env_id: Acrobot-v1}]"  # 4 and 6 features, padded to 6


def mixed_hard(*overrides: str) -> config.Config:
    return config.from_dict(tiny_config(MIXED, "multitask.mode=hard", *overrides))


def test_task_input_layer_is_per_task_and_reads_only_the_tasks_own_features():
    cfg = mixed_hard("network.task_input_layers=true")
    state = build_agent(cfg).init(task_keys(cfg))
    kernel = np.asarray(state.params["torso"][TASK_INPUT]["kernel"])
    assert kernel.shape == (2, 6, 32)  # per task, over the padded features
    assert (kernel[0, 4:] == 0).all() and (kernel[0, :4] != 0).all()  # CartPole: its own 4 features only
    assert (kernel[1] != 0).all()
    # Scaled to its own fan-in: lecun-normal std 1 / sqrt(4), not 1 / sqrt(6).
    assert np.std(kernel[0, :4]) == pytest.approx(0.5, rel=0.25)
    assert state.params["torso"]["Dense_1"]["kernel"].shape == (32, 32)  # the rest is shared


def test_conditioning_starts_as_the_identity_and_is_per_task():
    for kind in ("embedding", "film"):
        plain = QNetwork(NetworkSpec(torso="mlp", hidden_sizes=(8, 8)), 2)
        cond = QNetwork(NetworkSpec(torso="mlp", hidden_sizes=(8, 8), task_conditioning=kind), 2)
        obs = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
        params = cond.init(jax.random.PRNGKey(1), obs)
        film = params["torso"].pop("task_conditioning")
        assert set(film) == ({"shift", "scale"} if kind == "film" else {"shift"})
        np.testing.assert_array_equal(
            np.asarray(plain.apply(params, obs)),
            np.asarray(cond.apply({**params, "torso": {**params["torso"], "task_conditioning": film}}, obs)),
        )
    cfg = mixed_hard("network.task_conditioning=film")
    state = build_agent(cfg).init(task_keys(cfg))
    assert state.params["torso"]["task_conditioning"]["scale"].shape == (2, 32)


def test_layer_norm_makes_the_network_blind_to_the_scale_of_a_layer():
    net = QNetwork(NetworkSpec(torso="minatar_cnn", cnn_channels=4, cnn_hidden=8, layer_norm=True), 3)
    obs = jax.random.uniform(jax.random.PRNGKey(0), (2, 10, 10, 5))
    params = net.init(jax.random.PRNGKey(1), obs)
    assert {"LayerNorm_0", "LayerNorm_1"} <= set(params["torso"])
    scaled = jax.tree_util.tree_map(lambda x: x, params)
    scaled["torso"]["Dense_0"] = jax.tree_util.tree_map(lambda x: 7.0 * x, params["torso"]["Dense_0"])
    np.testing.assert_allclose(np.asarray(net.apply(params, obs)), np.asarray(net.apply(scaled, obs)), rtol=1e-4, atol=1e-5)
    plain = QNetwork(NetworkSpec(torso="minatar_cnn", cnn_channels=4, cnn_hidden=8), 3)
    plain_params = plain.init(jax.random.PRNGKey(1), obs)
    plain_scaled = {**plain_params, "torso": {**plain_params["torso"], "Dense_0": scaled["torso"]["Dense_0"]}}
    assert not np.allclose(np.asarray(plain.apply(plain_params, obs)), np.asarray(plain.apply(plain_scaled, obs)))


def test_hard_steps_per_round_tasks_takes_t_steps_and_keeps_the_target_period_in_env_steps():
    compute_matched = mixed_hard()
    equal_steps = mixed_hard("multitask.hard_steps_per_round=tasks")
    assert schedule(equal_steps).updates_per_round == 2 * schedule(compute_matched).updates_per_round
    assert build_agent(equal_steps).target.period == 2 * build_agent(compute_matched).target.period


def test_switches_outside_their_mode_are_errors():
    with pytest.raises(ConfigError, match="network.task_input_layers"):
        config.from_dict(tiny_config("network.task_input_layers=true"))
    with pytest.raises(ConfigError, match="hard_steps_per_round"):
        config.from_dict(tiny_config("multitask.hard_steps_per_round=tasks"))
    with pytest.raises(ConfigError, match="dqn.hl_gauss_bins"):
        config.from_dict(tiny_config("dqn.hl_gauss_bins=11"))
    with pytest.raises(ConfigError, match="dqn.popart"):
        config.from_dict(tiny_config("dqn.loss=hl_gauss", "dqn.popart=true"))


def test_network_records_stay_as_they_were_and_round_trip():
    assert NetworkSpec().to_dict() == {"torso": "mlp", "hidden_sizes": [120, 84], "dueling": False}
    spec = network_spec(mixed_hard("network.task_input_layers=true", "network.layer_norm=true", "dqn.loss=hl_gauss"))
    assert NetworkSpec.from_dict(spec.to_dict()) == spec


# -- all switches together: training, resume, evaluation ---------------------------------

ALL_SWITCHES = (
    "network.task_input_layers=true",
    "network.task_conditioning=film",
    "network.layer_norm=true",
    "dqn.loss=hl_gauss",
    "dqn.hl_gauss_bins=21",
    "dqn.hl_gauss_min=0",
    "dqn.hl_gauss_max=100",
    "multitask.hard_steps_per_round=tasks",
)


@pytest.fixture(scope="module")
def all_switches_run(tmp_path_factory):
    cfg = mixed_hard(*ALL_SWITCHES, "train.total_env_steps=2000")
    run_dir = train(cfg, run_dir=tmp_path_factory.mktemp("all") / "run")
    return cfg, run_dir, latest_train_state(cfg, run_dir)


def test_all_switches_resume_bit_exact(tmp_path, all_switches_run):
    cfg, _, uninterrupted = all_switches_run
    run_dir = tmp_path / "run"
    train(mixed_hard(*ALL_SWITCHES, "train.total_env_steps=1000"), run_dir=run_dir)
    train(cfg, run_dir=run_dir, resume=True)
    resumed = latest_train_state(cfg, run_dir)
    assert int(resumed.updates) == int(uninterrupted.updates) > 0
    for x, y in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(uninterrupted)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_padded_input_weights_stay_zero_through_training(all_switches_run):
    _, _, state = all_switches_run
    kernel = np.asarray(state.params["torso"][TASK_INPUT]["kernel"])
    assert (kernel[0, 4:] == 0).all()
    assert np.isfinite(kernel).all() and (kernel[0, :4] != 0).all()


def test_evaluate_reads_a_classification_checkpoint(all_switches_run):
    from jaxdqn.running.evaluate import evaluate_checkpoint

    _, run_dir, _ = all_switches_run
    result = evaluate_checkpoint(str(run_dir), episodes=2)
    assert result.labels == ["CartPole-v1", "Acrobot-v1"]
    assert result.returns.shape == (2, 2) and np.isfinite(result.returns).all()


@pytest.mark.parametrize(
    "torso, obs_shape, own", [("minatar_cnn", (10, 10, 10), (10, 10, 4)), ("nature_cnn", (4, 36, 36), (4, 36, 36))]
)
def test_task_input_layer_of_the_cnns_reads_the_tasks_own_channels(torso, obs_shape, own):
    from jaxdqn.agents.learner import Learner

    valid = np.zeros((2, *obs_shape), bool)
    valid[0][tuple(slice(0, d) for d in own)] = True
    valid[1] = True
    spec = NetworkSpec(torso=torso, task_input_layers=True, conv_impl="patches")
    learner = Learner(QNetwork(spec, 3), 2, np.ones((2, 3), bool), mode="hard", obs_valid=valid)
    params = learner.init_params(jax.random.split(jax.random.PRNGKey(0), 2), jnp.zeros((1, *obs_shape)))
    kernel = np.asarray(params["torso"][TASK_INPUT]["kernel"])  # [T, kh, kw, C, F]
    channels = own[-1] if torso == "minatar_cnn" else own[0]
    assert (kernel[0, :, :, channels:] == 0).all() and (kernel[0, :, :, :channels] != 0).all()
    assert (kernel[1] != 0).all()
    assert params["torso"]["Dense_0"]["kernel"].ndim == 2  # shared


def test_pcgrad_leaves_the_per_task_input_layers_their_own_gradients():
    plain = build_agent(mixed_hard("network.task_input_layers=true", "dqn.max_grad_norm=1e9"))
    surgery = build_agent(
        mixed_hard("network.task_input_layers=true", "dqn.max_grad_norm=1e9", "multitask.gradient_surgery=pcgrad")
    )
    cfg = mixed_hard("network.task_input_layers=true")
    state = plain.init(task_keys(cfg))
    batch = random_batch(5, num_tasks=2, batch=32, obs_shape=state.obs.shape[2:])
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    a = jax.jit(plain.learner.update)(state.params, state.target_params, state.opt_state, batch)[0]
    b = jax.jit(surgery.learner.update)(state.params, state.target_params, state.opt_state, batch, keys=keys)[0]
    np.testing.assert_allclose(
        np.asarray(a["torso"][TASK_INPUT]["kernel"]), np.asarray(b["torso"][TASK_INPUT]["kernel"]), rtol=1e-5, atol=1e-7
    )
    assert np.isfinite(np.asarray(b["torso"]["Dense_1"]["kernel"])).all()
