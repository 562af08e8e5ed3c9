"""A short real training run, then its outputs: checkpoints, evaluation, plots, errors."""

from __future__ import annotations

import csv
import re
import shutil

import jax
import numpy as np
import pytest
import yaml

from jaxdqn.io import checkpoint

from jaxdqn import cli, config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.errors import CheckpointError
from jaxdqn.io.run_outputs import COLUMNS

from helpers import latest_train_state, tiny_config

RUN_CONFIG = tiny_config(
    "train.total_env_steps=2000",
    "train.keep_checkpoints=1",
    name="ckpt_test",
    seed=0,
    network={"hidden_sizes": [32, 16]},
    dqn={"learning_starts": 500, "batch_size": 32, "update_every": 10, "updates_per_round": 1},
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("ckpt")
    config_path = base / "config.yaml"
    config_path.write_text(yaml.safe_dump(RUN_CONFIG))
    run_dir = base / "run"
    code = cli.main(["train", str(config_path), "--run-dir", str(run_dir)])
    assert code == 0
    return {"config": config_path, "run_dir": run_dir, "base": base}


def _summary_means(out: str) -> dict[str, float]:
    """``{task: mean}`` from the table ``jaxdqn evaluate`` prints."""
    means = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(\d+)$", line)
        if m:
            means[m.group(1)] = (float(m.group(2)), float(m.group(3)), int(m.group(4)))
    return means


def test_run_directory_contents(trained):
    run_dir = trained["run_dir"]
    assert (run_dir / "config.yaml").is_file()
    saved = config.load(run_dir / "config.yaml")
    assert saved == config.from_dict(RUN_CONFIG)
    assert not (run_dir / "tensorboard").exists()
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert steps == ["2000"]
    for item in ("state", "params", "meta"):
        assert (run_dir / "checkpoints" / "2000" / item).is_dir()


def test_metrics_csv(trained):
    path = trained["run_dir"] / "metrics.csv"
    with path.open() as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLUMNS
    with path.open() as f:
        rows = list(csv.DictReader(f))
    task_rows = [r for r in rows if r["task"] == "CartPole-v1"]
    assert [int(float(r["env_steps"])) for r in task_rows] == [1000, 2000]
    assert [r["task"] for r in rows] == ["CartPole-v1", "mean", "CartPole-v1", "mean"]
    for r in task_rows:
        assert float(r["episodes"]) > 0
        assert 8 <= float(r["episode_length"]) <= 500
        assert float(r["episode_return"]) == pytest.approx(float(r["episode_length"]))
    # Learning starts at 500 env steps: both chunks take gradient steps
    # (one every update_every=10 env steps per task).
    assert int(float(task_rows[0]["updates"])) == 51
    assert int(float(task_rows[1]["updates"])) == 151
    assert float(task_rows[1]["loss"]) >= 0
    # Evaluation runs at the end only (eval_every 100000 > total).
    assert task_rows[0]["eval_return"] == ""
    assert 1 <= float(task_rows[1]["eval_return"]) <= 500


def test_checkpoint_meta(trained):
    meta = checkpoint.read_meta(trained["run_dir"])
    assert meta["env_steps"] == 2000
    assert meta["tasks"] == ["CartPole-v1"]
    assert meta["num_actions"] == 2 and meta["obs_shape"] == [4]
    assert meta["network"] == {"torso": "mlp", "hidden_sizes": [32, 16], "dueling": False}
    assert config.from_dict(meta["config"]) == config.from_dict(RUN_CONFIG)
    assert len(meta["eval_return"]) == 1


def test_resolve_accepts_run_checkpoints_and_step_folders(trained):
    run_dir = trained["run_dir"]
    expected = ((run_dir / "checkpoints").absolute(), 2000)
    assert checkpoint.resolve(run_dir) == expected
    assert checkpoint.resolve(run_dir / "checkpoints") == expected
    assert checkpoint.resolve(run_dir / "checkpoints" / "2000") == expected


def test_load_params_round_trip(trained):
    from jaxdqn.running.evaluate import load_checkpoint

    cfg = config.from_dict(RUN_CONFIG)
    agent = build_agent(cfg)
    target = jax.eval_shape(agent.init, task_keys(cfg)).params
    params, meta = checkpoint.load_params(trained["run_dir"], target)
    assert meta["env_steps"] == 2000
    assert params["torso"]["Dense_0"]["kernel"].shape == (1, 4, 32)
    fresh = agent.init(task_keys(cfg)).params
    # 151 Adam steps moved the weights away from their initial values.
    assert not np.allclose(np.asarray(params["torso"]["Dense_0"]["kernel"]), np.asarray(fresh["torso"]["Dense_0"]["kernel"]))
    _, _, again, _ = load_checkpoint(trained["run_dir"])  # the path evaluate, inspect and teachers load through
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)


def test_load_params_into_other_hidden_sizes_names_the_leaf(trained):
    other = config.from_dict({**RUN_CONFIG, "network": {"hidden_sizes": [64, 16]}})
    agent = build_agent(other)
    target = jax.eval_shape(agent.init, task_keys(other)).params
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_params(trained["run_dir"], target)
    message = str(info.value)
    assert "torso" in message and "Dense_0" in message
    m = re.search(r"leaf 'torso\.Dense_0\.(kernel|bias)' has shape (\([\d, ]+\)) .* expects (\([\d, ]+\))", message)
    assert m, message
    leaf, stored, wanted = m.groups()
    expected = {"kernel": ("(1, 4, 32)", "(1, 4, 64)"), "bias": ("(1, 32)", "(1, 64)")}[leaf]
    assert (stored, wanted) == expected
    # The shapes named are those of that leaf in the target tree.
    assert wanted == str(tuple(target["torso"]["Dense_0"][leaf].shape))


def test_load_params_with_a_missing_layer_names_it(trained):
    other = config.from_dict({**RUN_CONFIG, "network": {"hidden_sizes": [32, 16, 8]}})
    agent = build_agent(other)
    target = jax.eval_shape(agent.init, task_keys(other)).params
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_params(trained["run_dir"], target)
    assert "torso.Dense_2" in str(info.value)


def test_resuming_into_another_config_names_the_leaf_and_says_why_it_may_differ(trained):
    other = config.from_dict({**RUN_CONFIG, "network": {"hidden_sizes": [64, 16]}})
    with pytest.raises(CheckpointError) as info:
        latest_train_state(other, trained["run_dir"])
    message = str(info.value)
    assert "leaf 'params.torso.Dense_0.kernel' has shape (1, 4, 32) (float32) in the checkpoint" in message, message
    assert "this run's training state expects (1, 4, 64) (float32)" in message and "another config" in message


def test_evaluate_prints_a_mean(trained, capsys):
    assert cli.main(["evaluate", str(trained["run_dir"]), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "env step 2000" in out
    header = [line for line in out.splitlines() if line.startswith("task")]
    assert header and header[0].split() == ["task", "mean", "std", "episodes"]
    means = _summary_means(out)
    assert set(means) == {"CartPole-v1"}
    mean, std, episodes = means["CartPole-v1"]
    assert episodes == 3
    assert 1.0 <= mean <= 500.0 and std >= 0.0


def test_evaluate_skips_half_written_checkpoints(trained, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(trained["run_dir"], run_dir)
    ckpts = run_dir / "checkpoints"
    partial = ckpts / "3000.orbax-checkpoint-tmp-123"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk.bin").write_bytes(b"\x00garbage")
    (ckpts / "notes").mkdir()
    (ckpts / "notes" / "readme.txt").write_text("not a checkpoint")
    (ckpts / "4000").mkdir()  # a step folder with nothing in it
    assert checkpoint.resolve(run_dir) == (ckpts.absolute(), 2000)
    assert cli.main(["evaluate", str(run_dir), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "env step 2000" in out
    assert _summary_means(out)["CartPole-v1"][2] == 2


def test_train_again_without_resume_is_refused(trained, capsys):
    run_dir = trained["run_dir"]
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    metrics_before = (run_dir / "metrics.csv").read_text()
    assert cli.main(["train", str(trained["config"]), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("jaxdqn train: error: ")
    assert str(run_dir) in lines[0] and "pass --resume" in lines[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
    assert (run_dir / "metrics.csv").read_text() == metrics_before


def test_plot_writes_a_png(trained, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["plot", str(trained["run_dir"]), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1024


def test_plot_unknown_metric_lists_columns(trained, tmp_path, capsys):
    assert cli.main(["plot", str(trained["run_dir"]), "--metric", "nope", "-o", str(tmp_path / "y.png")]) == 2
    line = capsys.readouterr().err.strip()
    assert "'nope'" in line and "episode_return" in line and "eval_return" in line
    assert not (tmp_path / "y.png").exists()


def test_resume_past_a_half_written_checkpoint(trained, tmp_path, capsys):
    run_dir = tmp_path / "resumed"
    shutil.copytree(trained["run_dir"], run_dir)
    ckpts = run_dir / "checkpoints"
    (ckpts / "3000.orbax-checkpoint-tmp-7" / "state").mkdir(parents=True)
    (ckpts / "3000.orbax-checkpoint-tmp-7" / "state" / "junk").write_text("partial")
    (ckpts / "notes").mkdir()
    code = cli.main(["train", str(trained["config"]), "train.total_env_steps=3000", "--run-dir", str(run_dir), "--resume"])
    assert code == 0, capsys.readouterr().err
    meta = checkpoint.read_meta(run_dir)
    assert meta["env_steps"] == 3000
    assert checkpoint.resolve(run_dir)[1] == 3000
    assert not (ckpts / "2000").exists()  # keep_checkpoints = 1
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "CartPole-v1"]
    assert [int(float(r["env_steps"])) for r in rows] == [1000, 2000, 3000]
    # The update counter carries on from the checkpoint: 151 + 100 more.
    assert int(float(rows[-1]["updates"])) == 251


def test_resume_ignores_a_step_folder_without_items(trained, tmp_path, capsys):
    run_dir = tmp_path / "resume_empty_step"
    shutil.copytree(trained["run_dir"], run_dir)
    (run_dir / "checkpoints" / "4000").mkdir()
    code = cli.main(["train", str(trained["config"]), "train.total_env_steps=3000", "--run-dir", str(run_dir), "--resume"])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert "4000" in err
