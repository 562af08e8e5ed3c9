"""Transfer: fine-tuning, progressive networks, distillation-assisted learning, inspect.

The source is a tiny CartPole run (a few thousand steps): what these tests
check is plumbing and guarantees (parameters placed, frozen, untouched;
mismatches refused with clear messages), not how well transfer works.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxdqn import cli, config
from jaxdqn.errors import CheckpointError
from jaxdqn.io.run_outputs import read_metrics
from jaxdqn.running.train import train
from jaxdqn.transfer import config as tconfig
from jaxdqn.transfer.assisted import beta_at
from jaxdqn.networks.progressive import FrozenColumn, ProgressiveQNetwork, column_activations
from jaxdqn.transfer.run import build_transfer_agent, transfer
from jaxdqn.running.stored import load_source
from jaxdqn.transfer.teachers import fixed_q

from helpers import random_batch, tiny_config


def run_config(**extra) -> dict:
    """A CartPole target run of 2,000 env steps (longer poles than the source's); keywords replace its entries."""
    return tiny_config(
        "train.total_env_steps=2000",
        "train.eval_episodes=1",
        "train.checkpoint_every=0",
        "dqn.epsilon_decay_steps=2000",
        **{
            "name": "target",
            "seed": 0,
            "tasks": [{"env_id": "CartPole-v1", "env_params": {"length": 1.0, "polemass_length": 0.1}}],
            **extra,
        },
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small CartPole DQN checkpoint (hidden sizes 32, 32)."""
    data = run_config(name="source", tasks=[{"env_id": "CartPole-v1"}])
    return train(config.from_dict(data), run_dir=tmp_path_factory.mktemp("source") / "run")


def transfer_cfg(source: Path, method: str, **settings) -> tconfig.TransferConfig:
    data = run_config(name=f"t_{method}")
    data["transfer"] = {"method": method, "sources": [str(source)], **settings}
    return tconfig.transfer_from_dict(data)


def initial_params(agent):
    """The learner's starting parameters (what ``agent.init`` puts in the state)."""
    return agent.learner.init_params(jax.random.PRNGKey(0)[None], jnp.zeros((1,) + tuple(agent.tasks.obs_shape)))


def tree_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def files_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def train_steps(agent, params, n, seed=0):
    """``n`` gradient steps of the agent's learner on random batches (target = start)."""
    learner = agent.learner
    opt_state = learner.init_opt_state(params)
    target = params
    update = jax.jit(learner.update)
    for i in range(n):
        params, opt_state, info = update(
            params, target, opt_state, random_batch(seed + i, agent.num_tasks, 16, agent.tasks.obs_shape)
        )
    return params, info


# -- fine-tuning ----------------------------------------------------------


def test_finetune_starts_from_the_source(source):
    src = load_source(str(source))
    agent, _, meta = build_transfer_agent(transfer_cfg(source, "finetune"))
    params = initial_params(agent)
    assert tree_equal(jax.tree_util.tree_map(lambda x: x[0], params), src.task_params(0))
    assert meta["kind"] == "transfer" and meta["transfer"]["sources"] == [src.path]

    fresh, _, _ = build_transfer_agent(transfer_cfg(source, "finetune", finetune={"reinit_head": True}))
    p2 = initial_params(fresh)
    assert tree_equal(p2["torso"], params["torso"])
    assert not tree_equal(p2["head"], params["head"])


def test_frozen_torso_never_moves_and_head_learns(source):
    agent, _, _ = build_transfer_agent(transfer_cfg(source, "finetune", finetune={"freeze_torso": "always"}))
    start = initial_params(agent)
    end, _ = train_steps(agent, start, 5)
    assert tree_equal(end["torso"], start["torso"])
    assert not tree_equal(end["head"], start["head"])


def test_torso_frozen_for_the_first_updates_only(source):
    # learning_starts 500, update_every 10 -> freeze_steps 530 is 3 gradient steps
    cfg = transfer_cfg(source, "finetune", finetune={"freeze_torso": "first", "freeze_steps": 530})
    agent, _, _ = build_transfer_agent(cfg)
    start = initial_params(agent)
    after3, _ = train_steps(agent, start, 3)
    after5, _ = train_steps(agent, start, 5)
    assert tree_equal(after3["torso"], start["torso"]) and not tree_equal(after3["head"], start["head"])
    assert not tree_equal(after5["torso"], start["torso"])


def test_finetune_from_a_checkpoint_of_the_wrong_shape_names_leaf_and_shapes(source):
    data = run_config(network={"hidden_sizes": [64, 64]})
    data["transfer"] = {"method": "finetune", "sources": [str(source)]}
    with pytest.raises(CheckpointError) as err:
        build_transfer_agent(tconfig.transfer_from_dict(data))
    message = str(err.value)
    assert "torso.Dense_0.kernel" in message
    assert "(4, 32)" in message and "(4, 64)" in message
    assert "hidden_sizes is [32, 32] in the checkpoint but [64, 64] in the config" in message


def test_finetune_refuses_another_action_set_unless_the_head_is_new(source, tmp_path, write_config, capsys):
    data = run_config(tasks=[{"env_id": "Acrobot-v1"}])
    data["transfer"] = {"method": "finetune", "sources": [str(source)]}
    path = write_config(data)
    assert cli.main(["transfer", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, "one line, no traceback"
    assert "2 actions in the checkpoint but the target task 'Acrobot-v1' has 3" in err
    assert "observations have shape [4] in the checkpoint but [6]" in err
    assert not (tmp_path / "run").exists(), "nothing written for a refused run"


# -- progressive networks -------------------------------------------------


def test_column_activations_match_the_trained_torso(source):
    src = load_source(str(source))
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    acts = column_activations(src.network_spec, src.task_params(0)["torso"], obs)
    features = src.learner.network.features(src.task_params(0)["torso"], obs)
    assert [a.shape for a in acts] == [(5, 32), (5, 32)]
    np.testing.assert_array_equal(np.asarray(acts[-1]), np.asarray(features))


def test_a_narrowed_minatar_source_is_a_column_with_its_own_widths_and_convolution():
    from jaxdqn.networks import NetworkSpec, make_torso

    narrow = NetworkSpec(torso="minatar_cnn", cnn_channels=4, cnn_hidden=24, conv_impl="patches")
    obs = jax.random.bernoulli(jax.random.PRNGKey(2), 0.3, (3, 10, 10, 4)).astype(jnp.float32)
    torso_params = make_torso(narrow).init(jax.random.PRNGKey(3), obs)["params"]
    acts = column_activations(narrow, torso_params, obs)
    assert [a.shape for a in acts] == [(3, 8, 8, 4), (3, 24)]
    np.testing.assert_array_equal(np.asarray(acts[-1]), np.asarray(make_torso(narrow).apply({"params": torso_params}, obs)))
    # XLA's convolution reads the same parameters and gives the same activations
    xla = column_activations(dataclasses.replace(narrow, conv_impl="xla"), torso_params, obs)
    for a, b in zip(acts, xla):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # a new column of another width over it: its first layer is the patch convolution too
    network = ProgressiveQNetwork(
        NetworkSpec(torso="minatar_cnn", cnn_channels=6, cnn_hidden=16, conv_impl="patches"),
        num_actions=3,
        columns=(FrozenColumn(narrow, torso_params, (10, 10, 4)),),
    )
    params = network.init(jax.random.PRNGKey(4), obs)
    assert params["torso"]["layer_0"]["kernel"].shape == (3, 3, 4, 6)
    assert network.apply(params, obs).shape == (3, 3)
    assert "PatchConv" in str(network.module.tabulate(jax.random.PRNGKey(0), obs, network.source_activations(obs)))


@pytest.fixture(scope="module")
def progressive(source, tmp_path_factory):
    """A short progressive run on the source, with what the source looked like before it."""
    before_files = files_digest(source / "checkpoints")
    before = load_source(str(source)).task_params(0)
    cfg = transfer_cfg(source, "progressive")
    agent, _, _ = build_transfer_agent(cfg)
    run_dir = transfer(cfg, run_dir=tmp_path_factory.mktemp("progressive") / "run")
    return {"agent": agent, "run_dir": run_dir, "before": before, "before_files": before_files}


def test_progressive_training_leaves_the_source_bit_identical(source, progressive):
    agent = progressive["agent"]
    network = agent.learner.network
    assert isinstance(network, ProgressiveQNetwork)
    from jaxdqn.io import checkpoint

    target = jax.eval_shape(agent.learner.init_params, jax.random.PRNGKey(0)[None], jnp.zeros((1, 4)))
    trained, meta = checkpoint.load_params(progressive["run_dir"], target)
    assert meta["transfer"]["method"] == "progressive"
    # The trained state holds only the new column and its adapters ...
    assert not tree_equal(trained, initial_params(agent)), "the new column learned"
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(trained)[0]}
    assert any("lateral_1_0" in n for n in names) and any("out_lateral_0" in n for n in names)
    assert not any("Dense_" in n for n in names), "no source leaf inside the trained parameters"
    # ... while the source column, the source checkpoint and its files are untouched, bit for bit.
    before = progressive["before"]
    assert tree_equal(network.columns[0].torso_params, before["torso"])
    assert tree_equal(load_source(str(source)).task_params(0), before)
    assert files_digest(source / "checkpoints") == progressive["before_files"]


def test_progressive_output_uses_the_source_column(progressive):
    network = progressive["agent"].learner.network
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    obs = jax.random.normal(jax.random.PRNGKey(2), (8, 4))
    column = network.columns[0]
    zeroed = type(column)(column.spec, jax.tree_util.tree_map(jnp.zeros_like, column.torso_params), column.obs_shape)
    other = ProgressiveQNetwork(network.spec, network.num_actions, (zeroed,), network.adapter_size, network.scale_init)
    assert not np.allclose(network.apply(params, obs), other.apply(params, obs))
    assert float(params["torso"]["lateral_1_0"]["scale"]) == pytest.approx(0.01)  # learned scale, starts at scale_init


def test_a_progressive_checkpoint_is_evaluated_inspected_and_teaches(progressive, source, tmp_path, capsys):
    from jaxdqn.io import checkpoint
    from jaxdqn.running.evaluate import evaluate_checkpoint
    from jaxdqn.transfer.run import build_distiller

    run_dir = progressive["run_dir"]
    # jaxdqn evaluate rebuilds the new column over its frozen source column
    result = evaluate_checkpoint(run_dir, episodes=2)
    assert result.returns.shape == (1, 2) and np.all(result.returns >= 1)
    # as a teacher: the same Q-values as the trained progressive network
    src = load_source(str(run_dir))
    network = progressive["agent"].learner.network
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, 4))
    trained, _ = checkpoint.load_params(
        run_dir, jax.eval_shape(progressive["agent"].learner.init_params, jax.random.PRNGKey(0)[None], jnp.zeros((1, 4)))
    )
    want = network.apply(jax.tree_util.tree_map(lambda x: x[0], trained), obs)
    np.testing.assert_allclose(fixed_q(src, 0)(obs), want, rtol=1e-6)
    data = {
        "name": "from_progressive",
        "teachers": [{"checkpoint": str(run_dir)}],
        "network": {"hidden_sizes": [16]},
        "train": {**run_config()["train"], "total_env_steps": 1000, "log_every": 500},
    }
    assert build_distiller(tconfig.distill_from_dict(data)).distiller.teachers.num_tasks == 1
    assert cli.main(["inspect", str(run_dir)]) == 0
    assert "progressive column over the sources below" in capsys.readouterr().out
    # its torso is not a plain torso: it cannot seed fine-tuning or another progressive column
    for method in ("finetune", "progressive"):
        with pytest.raises(CheckpointError, match="progressive network"):
            build_transfer_agent(transfer_cfg(run_dir, method))


# -- distillation-assisted ------------------------------------------------


def test_beta_schedules():
    assert float(beta_at(123, "constant", 0.5, 0.0, 100)) == 0.5
    assert float(beta_at(0, "linear", 1.0, 0.2, 100)) == pytest.approx(1.0)
    assert float(beta_at(50, "linear", 1.0, 0.2, 100)) == pytest.approx(0.6)
    assert float(beta_at(500, "linear", 1.0, 0.2, 100)) == pytest.approx(0.2)
    assert float(beta_at(100, "exponential", 1.0, 0.0, 100)) == pytest.approx(0.5)
    assert float(beta_at(300, "exponential", 2.0, 1.0, 100)) == pytest.approx(1.125)


def test_distill_assisted_adds_a_decaying_term(source, tmp_path):
    # beta falls linearly from 1 at env step 0 to 0 at env step 1000 (updates start at 500); the run lasts 2000
    cfg = transfer_cfg(source, "distill", distill={"beta_decay_steps": 1000, "loss": "mse"})
    run_dir = transfer(cfg, run_dir=tmp_path / "run")
    rows = [r for r in read_metrics(run_dir) if r["task"] == "CartPole-v1"]
    by_step = {int(r["env_steps"]): r for r in rows}
    assert set(by_step) == {0, 1000, 2000}  # with the evaluation before training at step 0
    assert not np.isnan(by_step[0]["eval_return"])
    assert by_step[1000]["penalty"] > 0
    assert by_step[2000]["penalty"] == 0.0  # beta is 0 after env step 1000
    assert (run_dir / "transfer.yaml").is_file() and (run_dir / "config.yaml").is_file()
    # the run's checkpoint is a plain network: jaxdqn evaluate and inspect read it
    assert cli.main(["evaluate", str(run_dir), "--episodes", "2"]) == 0
    assert cli.main(["inspect", str(run_dir)]) == 0


def test_assisted_refuses_a_teacher_with_other_actions(source):
    data = run_config(tasks=[{"env_id": "Acrobot-v1"}])
    data["transfer"] = {"method": "distill", "sources": [str(source)]}
    with pytest.raises(CheckpointError, match="2 actions in the checkpoint but the target task 'Acrobot-v1' has 3"):
        build_transfer_agent(tconfig.transfer_from_dict(data))


# -- inspect and configs --------------------------------------------------


def test_inspect_prints_metadata(source, capsys):
    assert cli.main(["inspect", str(source)]) == 0
    out = capsys.readouterr().out
    for text in (
        "kind         train",
        "hidden_sizes=[32, 32]",
        "1,282 parameters per task network",
        "env steps    2,000",
        "actions [0, 1]",
    ):
        assert text in out


def test_inspect_refuses_a_config_that_does_not_fit(source, write_config, capsys):
    path = write_config(run_config(network={"hidden_sizes": [64, 64]}, tasks=[{"env_id": "Acrobot-v1"}]))
    assert cli.main(["inspect", str(source), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hidden_sizes is [32, 32] in the checkpoint but [64, 64]" in err
    assert "2 actions in the checkpoint but the target task 'Acrobot-v1' has 3" in err


def test_transfer_config_errors_name_the_key():
    data = run_config()
    data["transfer"] = {"method": "finetune"}
    with pytest.raises(config.ConfigError, match="'transfer.sources'"):
        tconfig.transfer_from_dict(data)
    data["transfer"] = {"method": "teleport", "sources": ["x"]}
    with pytest.raises(config.ConfigError, match="'transfer.method'.*'finetune'"):
        tconfig.transfer_from_dict(data)
    data["transfer"] = {"method": "finetune", "sources": ["x"], "finetune": {"freeze_torso": "first"}}
    with pytest.raises(config.ConfigError, match="freeze_steps"):
        tconfig.transfer_from_dict(data)
    data["transfer"] = {"method": "progressive", "sources": ["x"], "finetune": {"learning_rate": 1e-3}}
    with pytest.raises(
        config.ConfigError, match="'transfer.finetune.learning_rate'.*no effect with transfer.method: progressive"
    ):
        tconfig.transfer_from_dict(data)


def test_shipped_transfer_configs_parse():
    root = Path(__file__).resolve().parent.parent / "configs"
    paths = sorted(root.glob("transfer_*.yaml"))
    assert paths
    for path in paths:
        cfg = tconfig.load_transfer(path, ["transfer.sources=[somewhere]"])
        assert cfg.transfer.method in tconfig.TRANSFER_METHODS
    assert yaml.safe_load(paths[0].read_text())["transfer"]


def test_train_runs_a_config_with_a_transfer_block_as_a_transfer(source, write_config, tmp_path, monkeypatch, capsys):
    import jaxdqn.transfer.run as run_module

    seen = {}

    def fake_transfer(cfg, run_dir=None, resume=False):
        seen.update(method=cfg.transfer.method, run_dir=run_dir, lr=cfg.run.dqn.learning_rate)
        return Path(run_dir)

    monkeypatch.setattr(run_module, "transfer", fake_transfer)
    data = run_config()
    data["transfer"] = {"method": "progressive", "sources": [str(source)]}
    path = write_config(data)
    assert cli.main(["train", str(path), "dqn.learning_rate=0.01", "--run-dir", str(tmp_path / "r")]) == 0
    assert seen == {"method": "progressive", "run_dir": tmp_path / "r", "lr": 0.01}
    assert "run finished (progressive)" in capsys.readouterr().out


# -- the shared host loop: transfer runs resume exactly and save on Ctrl-C --


def test_transfer_interrupted_saves_and_resume_continues_the_same_trajectory(source, tmp_path, monkeypatch):
    from jaxdqn.agents.dqn import DQNAgent
    from jaxdqn.io.checkpoint import Checkpointer

    def cfg(checkpoint_every=1000):
        data = run_config(name="t_resume")
        data["train"].update(checkpoint_every=checkpoint_every)
        data["transfer"] = {"method": "distill", "sources": [str(source)]}
        return tconfig.transfer_from_dict(data)

    def final(run_dir):
        agent, _, _ = build_transfer_agent(cfg())
        target = jax.eval_shape(agent.init, jax.random.PRNGKey(0)[None])
        return Checkpointer(run_dir / "checkpoints").restore_state(target)[0]

    transfer(cfg(), run_dir=tmp_path / "full")
    uninterrupted = final(tmp_path / "full")

    real_run, calls = DQNAgent.run, {"n": 0}

    def flaky_run(self, state, n):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_run(self, state, n)

    monkeypatch.setattr(DQNAgent, "run", flaky_run)
    with pytest.raises(KeyboardInterrupt):
        transfer(cfg(checkpoint_every=0), run_dir=tmp_path / "cut")
    assert Checkpointer(tmp_path / "cut" / "checkpoints").latest_step() == 1000  # saved by the interruption
    monkeypatch.setattr(DQNAgent, "run", real_run)
    transfer(cfg(checkpoint_every=0), run_dir=tmp_path / "cut", resume=True)
    # Bit-identical, the assisted learner's beta step count in the optimizer state included.
    assert tree_equal(final(tmp_path / "cut"), uninterrupted)
