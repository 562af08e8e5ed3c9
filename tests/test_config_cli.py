"""Tests for jaxdqn.config and the jaxdqn command line (argument and config errors)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import yaml
from pathlib import Path

from jaxdqn import cli, config
from jaxdqn.errors import ConfigError

from helpers import error_line

BASE = {"tasks": [{"env_id": "CartPole-v1"}]}


# --------------------------------------------------------------------------
# config: loading, checking, overriding
# --------------------------------------------------------------------------


def test_defaults_and_round_trip():
    cfg = config.from_dict({})
    assert cfg.dqn.gamma == 0.99 and cfg.train.num_envs == 10
    assert [t.env_id for t in cfg.tasks] == ["CartPole-v1"]
    again = config.from_dict(yaml.safe_load(config.dump(cfg)))
    assert again == cfg


def test_load_reads_the_file(write_config):
    path = write_config(
        {
            "seed": 4,
            "tasks": [{"env_id": "Breakout-MinAtar", "env_params": {"max_steps_in_episode": 99}}],
            "network": {"torso": "mlp", "hidden_sizes": [32]},
            "dqn": {"learning_rate": 0.001},
        }
    )
    cfg = config.load(path)
    assert cfg.seed == 4
    assert cfg.tasks[0].env_id == "Breakout-MinAtar"
    assert cfg.tasks[0].env_params == {"max_steps_in_episode": 99}
    assert cfg.network.torso == "mlp" and cfg.network.hidden_sizes == (32,)
    assert cfg.dqn.learning_rate == 0.001 and isinstance(cfg.dqn.learning_rate, float)


def test_minatar_cnn_widths_reach_the_network_spec():
    from jaxdqn.agents.build import network_spec

    cfg = config.from_dict(
        {"tasks": [{"env_id": "Breakout-MinAtar"}], "network": {"torso": "minatar_cnn", "cnn_channels": 8, "cnn_hidden": 64}}
    )
    spec = network_spec(cfg)
    assert (spec.cnn_channels, spec.cnn_hidden) == (8, 64)
    assert config.from_dict(yaml.safe_load(config.dump(cfg))) == cfg


def test_int_is_accepted_where_a_float_is_expected():
    cfg = config.from_dict({"dqn": {"gamma": 1}})
    assert cfg.dqn.gamma == 1.0 and isinstance(cfg.dqn.gamma, float)


@pytest.mark.parametrize(
    "data,pieces",
    [
        # unknown key: names the key and the keys allowed at that level
        ({"dqn": {"gama": 0.9}}, ["'dqn.gama'", "unknown key", "gamma", "batch_size"]),
        ({"trian": {}}, ["'trian'", "unknown key", "train", "dqn", "tasks"]),
        ({"tasks": [{"env_id": "CartPole-v1", "weigth": 2.0}]}, ["'tasks[0].weigth'", "weight", "env_params"]),
        # wrong type
        ({"dqn": {"batch_size": "big"}}, ["'dqn.batch_size'", "'big'", "str", "an integer >= 1"]),
        ({"dqn": {"batch_size": 3.5}}, ["'dqn.batch_size'", "3.5", "an integer"]),
        ({"train": {"tensorboard": 1}}, ["'train.tensorboard'", "got 1", "true or false"]),
        ({"dqn": {"gamma": True}}, ["'dqn.gamma'", "True", "a number"]),
        ({"network": {"hidden_sizes": 64}}, ["'network.hidden_sizes'", "64", "a list"]),
        ({"network": {"hidden_sizes": [64, "x"]}}, ["'network.hidden_sizes[1]'", "'x'"]),
        ({"dqn": [1, 2]}, ["'dqn'", "expected a mapping"]),
        # out of range
        ({"dqn": {"gamma": 1.5}}, ["'dqn.gamma'", "1.5", "a number in [0.0, 1.0]"]),
        ({"dqn": {"learning_rate": 0.0}}, ["'dqn.learning_rate'", "0.0", "a number > 0.0"]),
        ({"dqn": {"batch_size": 0}}, ["'dqn.batch_size'", "got 0", ">= 1"]),
        ({"seed": -1}, ["'seed'", "-1", ">= 0"]),
        # bad choice
        ({"dqn": {"loss": "l1"}}, ["'dqn.loss'", "'l1'", "one of 'huber', 'squared'"]),
        ({"network": {"torso": "resnet"}}, ["'network.torso'", "'resnet'", "'mlp'", "'minatar_cnn'", "'nature_cnn'"]),
        ({"multitask": {"mode": "shared"}}, ["'multitask.mode'", "'shared'", "'independent'", "'hard'", "'soft'"]),
        # unknown environment
        (
            {"tasks": [{"env_id": "CartPole-v1"}, {"env_id": "Pong-v5"}]},
            ["'tasks[1].env_id'", "'Pong-v5'", "CartPole-v1", "Breakout-MinAtar"],
        ),
        # consistency between keys
        ({"train": {"num_envs": 3}}, ["'train.log_every'", "multiple of train.num_envs (3)"]),
        ({"dqn": {"epsilon_start": 0.1, "epsilon_end": 0.5}}, ["'dqn.epsilon_end'", "0.5", "epsilon_start (0.1)"]),
        ({"dqn": {"update_every": 3}}, ["'dqn.update_every'", "got 3", "train.num_envs (10)"]),
        ({"tasks": []}, ["'tasks'", "empty"]),
        # the MinAtar CNN's widths: only on that torso, and positive
        ({"network": {"cnn_channels": 8}}, ["'network.cnn_channels'", "got 8", "'mlp'", "only with network.torso 'minatar_cnn'"]),
        (
            {"network": {"torso": "nature_cnn", "cnn_hidden": 64}},
            ["'network.cnn_hidden'", "got 64", "'nature_cnn'", "'minatar_cnn'"],
        ),
        ({"network": {"torso": "minatar_cnn", "cnn_channels": 0}}, ["'network.cnn_channels'", "got 0", "an integer >= 1"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(data, pieces):
    with pytest.raises(ConfigError) as info:
        config.from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, (piece, message)


def test_overrides_apply(write_config):
    path = write_config(BASE)
    cfg = config.load(
        path,
        [
            "dqn.gamma=0.9",
            "tasks.0.env_id=Breakout-MinAtar",
            "seed=3",
            "network.hidden_sizes=[7, 5]",
            "train.tensorboard=false",
            "tasks.0.env_params={max_steps_in_episode: 20}",
        ],
    )
    assert cfg.dqn.gamma == 0.9
    assert cfg.tasks[0].env_id == "Breakout-MinAtar"
    assert cfg.tasks[0].env_params == {"max_steps_in_episode": 20}
    assert cfg.seed == 3
    assert cfg.network.hidden_sizes == (7, 5)
    assert cfg.train.tensorboard is False
    # The file itself is unchanged by overrides.
    assert config.load(path).dqn.gamma == 0.99


def test_task_override_without_tasks_in_the_file(write_config):
    cfg = config.load(write_config({"seed": 1}), ["tasks.0.env_id=Acrobot-v1"])
    assert [t.env_id for t in cfg.tasks] == ["Acrobot-v1"]


def test_overrides_get_the_same_checks(write_config):
    with pytest.raises(ConfigError, match=r"'dqn.gamma': got 2.0; allowed: a number in \[0.0, 1.0\]"):
        config.load(write_config(BASE), ["dqn.gamma=2.0"])


@pytest.mark.parametrize(
    "override,pieces",
    [
        ("dqn.gamma", ["'dqn.gamma'", "KEY=VALUE"]),
        ("tasks.3.env_id=Acrobot-v1", ["tasks.3", "not an index"]),
        ("tasks.x.env_id=Acrobot-v1", ["tasks.x", "not an index"]),
    ],
)
def test_malformed_overrides(write_config, override, pieces):
    with pytest.raises(ConfigError) as info:
        config.load(write_config(BASE), [override])
    for piece in pieces:
        assert piece in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dqn: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_exponent_without_a_dot_is_a_number(write_config):
    cfg = config.load(write_config(BASE), ["dqn.learning_rate=1e-4"])
    assert cfg.dqn.learning_rate == pytest.approx(1e-4)


def test_describe_keys_lists_every_leaf_key():
    lines = "\n".join(config.describe_keys())
    for section in ("network", "dqn", "multitask", "train"):
        cls = type(getattr(config.Config(), section))
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default):  # a nested section lists its own keys
                for sub in dataclasses.fields(f.default):
                    assert f"  {section}.{f.name}.{sub.name} = " in lines
            else:
                assert f"  {section}.{f.name} = " in lines
    for f in dataclasses.fields(config.TaskConfig):
        assert f"  tasks.N.{f.name} = " in lines
    assert "  dqn.gamma = 0.99: discount" in lines


# --------------------------------------------------------------------------
# command line, in process
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,pieces",
    [
        ("dqn.gama=0.9", ["'dqn.gama'", "unknown key", "gamma"]),
        ("dqn.batch_size=big", ["'dqn.batch_size'", "'big'", "an integer >= 1"]),
        ("dqn.gamma=1.5", ["'dqn.gamma'", "1.5", "[0.0, 1.0]"]),
        ("dqn.loss=l1", ["'dqn.loss'", "'l1'", "one of 'huber', 'squared'"]),
        ("tasks.0.env_id=Pong", ["'tasks[0].env_id'", "'Pong'", "CartPole-v1"]),
        ("dqn.gamma", ["'dqn.gamma'", "KEY=VALUE"]),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(write_config, tmp_path, capsys, override, pieces):
    run_dir = tmp_path / "run"
    code = cli.main(["train", str(write_config(BASE)), override, "--run-dir", str(run_dir)])
    assert code == 2
    line = error_line(capsys)
    assert line.startswith("jaxdqn train: error: ")
    for piece in pieces:
        assert piece in line, (piece, line)
    assert not run_dir.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert cli.main(["train", str(missing)]) == 2
    line = error_line(capsys)
    assert line.startswith("jaxdqn train: error: ")
    assert str(missing) in line and "does not exist" in line


def test_cli_resume_needs_run_dir(write_config, capsys):
    assert cli.main(["train", str(write_config(BASE)), "--resume"]) == 2
    line = error_line(capsys)
    assert line.startswith("jaxdqn train: error: ")
    assert "--resume" in line and "--run-dir" in line


def test_cli_resume_of_a_run_without_checkpoints(write_config, tmp_path, capsys):
    run_dir = tmp_path / "empty_run"
    run_dir.mkdir()
    assert cli.main(["train", str(write_config(BASE)), "--resume", "--run-dir", str(run_dir)]) == 2
    line = error_line(capsys)
    assert "--resume" in line and str(run_dir) in line


def test_cli_evaluate_nonexistent_path(capsys):
    assert cli.main(["evaluate", "/nonexistent"]) == 2
    line = error_line(capsys)
    assert line.startswith("jaxdqn evaluate: error: ")
    assert "'/nonexistent'" in line and "does not exist" in line


def test_cli_evaluate_folder_without_checkpoints(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "no checkpoint found" in line and str(tmp_path) in line


def test_cli_plot_folder_without_metrics(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert line.startswith("jaxdqn plot: error: ")
    assert "metrics.csv" in line and str(tmp_path) in line


def _options_of(command: str) -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    options = []
    for action in sub.choices[command]._actions:
        options.extend(action.option_strings or [action.metavar or action.dest])
    return options


@pytest.mark.parametrize(
    "command,expected",
    [
        ("train", ["config", "KEY=VALUE", "--run-dir", "--resume", "-h"]),
        ("evaluate", ["checkpoint", "--episodes", "--epsilon", "--seed", "-h"]),
        ("plot", ["run_dirs", "--output", "-o", "--metric", "--tasks", "-h"]),
    ],
)
def test_cli_help_mentions_every_option(command, expected, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in expected + _options_of(command):
        assert option in out, (command, option)
    if command == "train":
        for line in config.describe_keys():
            key = line.split("=")[0].strip()
            assert key in out, key


def test_cli_without_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# --------------------------------------------------------------------------
# command line, as a separate process
# --------------------------------------------------------------------------


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "jaxdqn.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_subprocess_bad_value(write_config, tmp_path, subprocess_env):
    proc = _run(["train", str(write_config(BASE)), "dqn.gamma=1.5", "--run-dir", str(tmp_path / "r")], subprocess_env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == "jaxdqn train: error: config key 'dqn.gamma': got 1.5; allowed: a number in [0.0, 1.0]"
    assert proc.stdout == ""


def test_subprocess_missing_file_and_help(tmp_path, subprocess_env):
    proc = _run(["train", str(tmp_path / "absent.yaml")], subprocess_env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("jaxdqn train: error: ")
    assert "absent.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    proc = _run(["plot", "--help"], subprocess_env)
    assert proc.returncode == 0
    assert "--metric" in proc.stdout and "--output" in proc.stdout


def test_cli_unknown_env_param(write_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["train", str(write_config(BASE)), "tasks.0.env_params={lenght: 1.0}", "--run-dir", str(run_dir)])
    assert code == 2
    line = error_line(capsys)
    assert line.startswith("jaxdqn train: error: ")
    assert "'lenght'" in line and "CartPole-v1" in line and "length" in line and "max_steps_in_episode" in line


def test_cli_unknown_env_param_leaves_no_run_dir(write_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", str(write_config(BASE)), "tasks.0.env_params={lenght: 1.0}", "--run-dir", str(run_dir)]) == 2
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "data, key",
    [
        ({"tasks": [{"env_id": "CartPole-v1", "weight": 2.0}]}, "tasks[0].weight"),
        (
            {"network": {"torso": "minatar_cnn", "hidden_sizes": [32]}, "tasks": [{"env_id": "Breakout-MinAtar"}]},
            "network.hidden_sizes",
        ),
        ({"multitask": {"mode": "hard", "soft_lambda": 0.1}}, "multitask.soft_lambda"),
        ({"multitask": {"soft_penalty_on": "torso"}}, "multitask.soft_penalty_on"),
        ({"multitask": {"mode": "soft", "hard_heads": "shared"}}, "multitask.hard_heads"),
        ({"dqn": {"popart_step_size": 1e-3}}, "dqn.popart_step_size"),
        ({"dqn": {"popart": False, "popart_scale_ub": 10.0}}, "dqn.popart_scale_ub"),
    ],
)
def test_keys_without_effect_in_the_chosen_mode_are_errors(data, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'") + ".*no effect"):
        config.from_dict(data)


def test_keys_with_effect_and_stored_configs_still_load():
    config.from_dict({"tasks": [{"env_id": "CartPole-v1", "weight": 2.0}], "multitask": {"mode": "hard", "hard_heads": "shared"}})
    config.from_dict({"multitask": {"mode": "soft", "soft_lambda": 0.1, "soft_penalty_on": "torso"}})
    config.from_dict({"dqn": {"popart": True, "popart_step_size": 1e-3, "popart_scale_ub": 10.0}})
    # what a run stored before such keys became errors is read as it was written
    config.from_dict({"tasks": [{"env_id": "CartPole-v1", "weight": 2.0}]}, strict=False)


def test_distill_reuses_the_optimizer_replay_and_schedule_keys():
    from jaxdqn.transfer import config as tconfig

    shared = [f.name for cls in config.LEARNING_SECTIONS for f in dataclasses.fields(cls)]
    distill = {f.name: f for f in dataclasses.fields(tconfig.DistillSettings)}
    dqn = {f.name: f for f in dataclasses.fields(config.DQNConfig)}
    for name in shared:  # one declaration: same help text and allowed range in both sections
        assert distill[name].metadata == dqn[name].metadata
    # the checks are the same; distillation keeps its own defaults
    with pytest.raises(ConfigError, match="'distill.learning_rate'"):
        tconfig.distill_from_dict({"teachers": [{"checkpoint": "x"}], "distill": {"learning_rate": -1.0}})
    assert tconfig.DistillSettings().learning_rate == 1e-3 and config.DQNConfig().learning_rate == 2.5e-4


def test_an_atari_id_without_envpool_names_the_extra(monkeypatch):
    from jaxdqn.envs import envpool_env

    monkeypatch.setattr(envpool_env, "registered_ids", lambda: ())  # as on an install without the atari extra
    with pytest.raises(ConfigError) as err:
        config.from_dict({"tasks": [{"env_id": "Pong-v5"}]})
    assert "'tasks[0].env_id'" in str(err.value) and "pip install 'jaxdqn[atari]'" in str(err.value)
    with pytest.raises(ConfigError, match="unknown environment 'Pongg-v1'"):
        config.from_dict({"tasks": [{"env_id": "Pongg-v1"}]})


def test_a_gymnax_run_without_wandb_imports_neither_envpool_nor_wandb(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from jaxdqn import config; from jaxdqn.agents.build import build_agent; "
        "build_agent(config.load('configs/cartpole_dqn.yaml', [])); print('envpool' in sys.modules or 'wandb' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize(
    "path",
    sorted(
        p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml") if not p.name.startswith(("distill_", "transfer_"))
    ),
)
def test_every_shipped_training_config_loads(path):
    cfg = config.load(Path(__file__).parents[1] / "configs" / path)
    assert cfg.num_tasks >= 1
