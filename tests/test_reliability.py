"""What a run does when something goes wrong: bad values, sizes, full disks,
non-finite numbers, hard kills and Ctrl-C. Each failure is one line naming
what to change, and nothing already written is lost or duplicated."""

from __future__ import annotations

import pytest

from jaxdqn import cli, config
from jaxdqn.errors import ConfigError

from helpers import error_line, latest_train_state, tiny_config

BASE = {"tasks": [{"env_id": "CartPole-v1"}]}


# --------------------------------------------------------------------------
# config values and files
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,key",
    [
        ("dqn: {gamma: .nan}", "dqn.gamma"),
        ("dqn: {learning_rate: .inf}", "dqn.learning_rate"),
        ("dqn: {huber_delta: -.inf}", "dqn.huber_delta"),
        ("train: {eval_epsilon: .NaN}", "train.eval_epsilon"),
        ("tasks: [{env_id: CartPole-v1, weight: .inf}]", "tasks[0].weight"),
        ("tasks: [{env_id: CartPole-v1, env_params: {length: .nan}}]", "tasks[0].env_params.length"),
    ],
)
def test_non_finite_values_in_a_file_name_the_key(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert f"'{key}'" in str(info.value) and "finite" in str(info.value)


@pytest.mark.parametrize(
    "override", ["dqn.learning_rate=nan", "dqn.gamma=.nan", "dqn.adam_eps=inf", "dqn.max_grad_norm=-Infinity"]
)
def test_non_finite_overrides_exit_2_naming_the_key(write_config, tmp_path, capsys, override):
    run_dir = tmp_path / "run"
    assert cli.main(["train", str(write_config(BASE)), override, "--run-dir", str(run_dir)]) == 2
    line = error_line(capsys)
    assert f"config key '{override.split('=')[0]}'" in line and "finite" in line
    assert not run_dir.exists()


def test_every_float_key_refuses_nan():
    """Not only the keys above: each float field of every section is checked."""
    import dataclasses
    import typing

    sections = {
        "dqn": config.DQNConfig,
        "train": config.TrainConfig,
        "multitask": config.MultitaskConfig,
        "atari": config.AtariConfig,
    }
    checked = 0
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            if typing.get_type_hints(cls)[f.name] is float:
                with pytest.raises(ConfigError, match=f"'{section}.{f.name}'"):
                    config.from_dict({section: {f.name: float("nan")}})
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "content,pieces",
    [
        (b"", ["is empty"]),
        (b"# only a comment\n", ["is empty"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", ["not UTF-8"]),
        (b"- a\n- list\n", ["list at the top level", "mapping"]),
    ],
)
def test_empty_binary_and_non_mapping_files_are_one_line_errors(tmp_path, capsys, content, pieces):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    for command in ("train", "distill", "transfer"):
        assert cli.main([command, str(path), "--run-dir", str(tmp_path / "run")]) == 2
        line = error_line(capsys)
        assert line.startswith(f"jaxdqn {command}: error: config file ") and str(path) in line
        for piece in pieces:
            assert piece in line, (piece, line)
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_replay_names_both_keys():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"dqn": {"batch_size": 10_000_000, "replay_capacity": 10_000}})
    message = str(info.value)
    assert "'dqn.batch_size'" in message and "10000000" in message
    assert "dqn.replay_capacity" in message and "10000" in message
    config.from_dict({"dqn": {"batch_size": 64, "replay_capacity": 64, "learning_starts": 64}})  # equal is fine


def test_distill_batch_larger_than_replay_names_both_keys():
    from jaxdqn.transfer import config as tconfig

    data = {"teachers": [{"checkpoint": "runs/teacher"}], "distill": {"batch_size": 512, "replay_capacity": 100}}
    with pytest.raises(ConfigError, match=r"'distill.batch_size': got 512; allowed: at most distill.replay_capacity \(100\)"):
        tconfig.distill_from_dict(data)


# --------------------------------------------------------------------------
# metrics: each logged step exactly once after a resume
# --------------------------------------------------------------------------


def _tensorboard_scalars(logdir) -> dict[str, list[int]]:
    """Steps per tag as TensorBoard shows them: event files in name order, and a
    ``SessionLog.START`` at step s hides the events already read at steps >= s
    (what tensorboardX's ``purge_step`` writes)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event, SessionLog

    steps: dict[str, list[int]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                steps = {tag: [s for s in seen if s < event.step] for tag, seen in steps.items()}
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_metrics_writer_keeps_rows_through_the_resume_step_and_a_cut_last_line(tmp_path):
    from jaxdqn.io.run_outputs import MetricsWriter, read_metrics

    writer = MetricsWriter(tmp_path, tensorboard=True, keep_through=0)
    for step in (100, 200, 300):
        writer.write({"env_steps": step, "updates": step // 10}, {"a": {"loss": 1.0}, "b": {"loss": 2.0}})
    writer.close()
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("40")  # a row a hard kill cut short: '40' must not read as env step 40
    writer = MetricsWriter(tmp_path, tensorboard=True, keep_through=200)  # resumed from a checkpoint at 200
    writer.write({"env_steps": 300, "updates": 31}, {"a": {"loss": 3.0}, "b": {"loss": 4.0}})
    writer.close()
    rows = read_metrics(tmp_path)
    assert [(int(r["env_steps"]), r["task"]) for r in rows] == [(s, t) for s in (100, 200, 300) for t in ("a", "b", "mean")]
    assert [r["loss"] for r in rows if r["env_steps"] == 300] == [3.0, 4.0, 3.5]  # the new rows, not the old
    assert not (tmp_path / "metrics.csv.tmp").exists()
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["a/loss"] == [100, 200, 300] and scalars["run/updates"] == [100, 200, 300]
    assert len(list((tmp_path / "tensorboard").glob("events.*"))) == 2  # the second writer did not replace the first file


# --------------------------------------------------------------------------
# checkpoints: a failed write, and the training runs around it
# --------------------------------------------------------------------------

TINY = tiny_config("train.total_env_steps=3000")


def test_write_failures_are_recognised_from_python_and_from_tensorstore():
    from jaxdqn.io.checkpoint import write_failure_reason

    assert write_failure_reason(OSError(28, "No space left on device")) == "No space left on device"
    tensorstore = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/ck/2.orbax-checkpoint-tmp/": '
        "Failed to write 308460 bytes to file 11: No space left on device [os_error_code='28']"
    )
    assert write_failure_reason(tensorstore) == "No space left on device"
    assert write_failure_reason(ValueError("shapes do not match")) is None  # other errors are not hidden


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_so_in_one_line(write_config, tmp_path, monkeypatch, capsys):
    import orbax.checkpoint as ocp

    from jaxdqn.io.checkpoint import complete_steps

    real_save = ocp.StandardCheckpointHandler.async_save

    def disk_full_at_2000(self, directory, *args, **kwargs):
        if "2000" in str(directory):
            raise OSError(28, "No space left on device")
        return real_save(self, directory, *args, **kwargs)

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", disk_full_at_2000)
    run_dir = tmp_path / "run"
    assert cli.main(["train", str(write_config(TINY)), "--run-dir", str(run_dir)]) == 2
    line = error_line(capsys)
    assert line == (
        f"jaxdqn train: error: could not write the checkpoint at env step 2000 in {run_dir.absolute() / 'checkpoints'}: "
        "No space left on device; the checkpoint at env step 1000 is intact and still the latest"
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1000"]  # no half-written folder left
    assert complete_steps(run_dir / "checkpoints") == [1000]
    assert int(latest_train_state(config.from_dict(TINY), run_dir).env_steps) == 1000


# --------------------------------------------------------------------------
# sizes: refused before anything is allocated
# --------------------------------------------------------------------------


def _state_shapes(cfg):
    import jax

    from jaxdqn.agents.build import build_agent, task_keys

    return jax.eval_shape(build_agent(cfg).init, task_keys(cfg))


def test_a_replay_that_cannot_fit_is_refused_before_allocating(write_config, tmp_path, capsys):
    import re

    from jaxdqn.running.memory import tree_nbytes

    run_dir = tmp_path / "run"
    huge = "dqn.replay_capacity=10000000000000"
    assert cli.main(["train", str(write_config(BASE)), huge, "--run-dir", str(run_dir)]) == 2  # at once: nothing allocated
    line = error_line(capsys)
    assert line.startswith("jaxdqn train: error: config key 'dqn.replay_capacity': got 10000000000000; ")
    shapes = _state_shapes(config.load(write_config(BASE), [huge]))
    assert f"needs {tree_nbytes(shapes):,} bytes" in line and f"(replay {tree_nbytes(shapes.replay):,} bytes" in line
    assert tree_nbytes(shapes.replay) >= 10**13 * 4 * 4 * 2  # at least two 4-float32 observations per transition
    available = int(re.search(r"but ([\d,]+) bytes", line).group(1).replace(",", ""))
    assert 0 < available < tree_nbytes(shapes) and "(host MemAvailable)" in line
    assert not run_dir.exists()


def test_state_fits_compares_shapes_with_the_given_budget():
    from jaxdqn.running.memory import check_state_fits, tree_nbytes

    small, large = (
        _state_shapes(config.from_dict({"dqn": {"replay_capacity": c, "learning_starts": 100}})) for c in (1000, 2000)
    )
    per_transition = (tree_nbytes(large.replay) - tree_nbytes(small.replay)) // 1000
    assert tree_nbytes(large) - tree_nbytes(small) == 1000 * per_transition  # only replay grows with the capacity
    needed = tree_nbytes(small)
    check_state_fits(small, small.replay, "dqn.replay_capacity", 1000, available=needed)  # exactly enough
    with pytest.raises(ConfigError, match=rf"'dqn.replay_capacity': got 1000; the training state needs {needed:,} bytes"):
        check_state_fits(small, small.replay, "dqn.replay_capacity", 1000, available=needed - 1)


# --------------------------------------------------------------------------
# non-finite values during training
# --------------------------------------------------------------------------


def test_nonfinite_tasks_blames_the_task_or_every_task_for_a_shared_leaf():
    import jax.numpy as jnp
    import numpy as np

    from jaxdqn.running.nonfinite import nonfinite_tasks

    params = {"torso": {"w": jnp.ones((5, 4))}, "head": {"w": jnp.ones((3, 4, 2)), "b": jnp.zeros((3, 2))}}
    hard = {"torso": None, "head": 0}
    finite_loss = [jnp.zeros(3)]
    bad_params, bad_loss = nonfinite_tasks(params, hard, finite_loss)
    assert not bad_params.any() and not bad_loss.any()
    head_nan = {**params, "head": {**params["head"], "b": params["head"]["b"].at[1, 0].set(jnp.nan)}}
    np.testing.assert_array_equal(nonfinite_tasks(head_nan, hard, finite_loss)[0], [False, True, False])
    torso_inf = {**params, "torso": {"w": params["torso"]["w"].at[2, 2].set(jnp.inf)}}
    np.testing.assert_array_equal(nonfinite_tasks(torso_inf, hard, finite_loss)[0], [True, True, True])
    np.testing.assert_array_equal(nonfinite_tasks(params, hard, [jnp.asarray([0.0, 0.0, jnp.nan])])[1], [False, False, True])
    # independent: every leaf has the task axis
    stacked = {"torso": {"w": jnp.ones((3, 4)).at[0, 1].set(jnp.nan)}, "head": {"w": jnp.ones((3, 2))}}
    np.testing.assert_array_equal(nonfinite_tasks(stacked, {"torso": 0, "head": 0}, finite_loss)[0], [True, False, False])


def test_a_nonfinite_parameter_stops_training_naming_task_and_step_without_saving_it(write_config, tmp_path, monkeypatch, capsys):
    import jax.numpy as jnp

    from jaxdqn.agents.dqn import DQNAgent
    from jaxdqn.io.checkpoint import complete_steps

    real_run = DQNAgent.run
    calls = {"n": 0}

    def diverging_run(self, state, n):
        state, metrics = real_run(self, state, n)
        calls["n"] += 1
        if calls["n"] == 3:  # the chunk ending at env step 3000 turns task 'b''s parameters into nan
            params = {**state.params, "head": {**state.params["head"]}}
            layer = sorted(params["head"])[0]
            params["head"][layer] = {k: v.at[1].set(jnp.nan) for k, v in params["head"][layer].items()}
            state = state._replace(params=params)
        return state, metrics

    monkeypatch.setattr(DQNAgent, "run", diverging_run)
    data = {
        **TINY,
        "tasks": [{"env_id": "CartPole-v1", "name": "a"}, {"env_id": "CartPole-v1", "name": "b"}],
        "train": {**TINY["train"], "total_env_steps": 4000},
    }
    run_dir = tmp_path / "run"
    assert cli.main(["train", str(write_config(data)), "--run-dir", str(run_dir)]) == 2
    line = error_line(capsys)
    assert line.startswith(
        "jaxdqn train: error: training stopped at env step 3000: non-finite (nan or inf) parameters in task 'b'"
    )
    assert "'a'" not in line
    assert complete_steps(run_dir / "checkpoints") == [1000, 2000]  # no checkpoint of the nan state
    assert [int(r) for r in _metric_steps(run_dir)] == [1000, 2000]  # nor a metrics row


def _metric_steps(run_dir):
    from jaxdqn.io.run_outputs import read_metrics

    return [r["env_steps"] for r in read_metrics(run_dir) if r["task"] == "mean"]


# --------------------------------------------------------------------------
# Ctrl-C in host-stepped (Atari) training
# --------------------------------------------------------------------------


def test_ctrl_c_during_a_host_stepped_chunk_saves_a_usable_checkpoint(tmp_path, monkeypatch):
    import os
    import signal

    pytest.importorskip("envpool")
    from jaxdqn.io.checkpoint import Checkpointer
    from jaxdqn.envs.envpool_env import AtariGroup
    from jaxdqn.running.train import train

    from conftest import REPO_ROOT

    smoke = [
        "train.total_env_steps=120",
        "train.num_envs=8",
        "train.log_every=80",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.eval_episodes=1",
        "train.progress=false",
        "train.tensorboard=false",
        "dqn.replay_capacity=200",
        "dqn.learning_starts=16",
        "dqn.batch_size=8",
        "atari.max_episode_steps=20",
        "atari.num_threads=1",
        "atari.stepping=host",
        "atari.img_height=21",
        "atari.img_width=21",
        "network.torso=mlp",
        "network.hidden_sizes=[16]",
    ]
    cfg = config.load(REPO_ROOT / "configs" / "atari_pong_dqn.yaml", smoke)
    real_recv = AtariGroup.host_recv
    calls = {"n": 0}

    def recv_then_ctrl_c(self):
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C while the 5th iteration (env steps 32 -> 40) is in flight
            os.kill(os.getpid(), signal.SIGINT)
        return real_recv(self)

    monkeypatch.setattr(AtariGroup, "host_recv", recv_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
    run_dir = tmp_path / "run"
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir=run_dir)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the runner put Ctrl-C back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert Checkpointer(run_dir / "checkpoints").latest_step() == 40  # the iteration in flight finished
    monkeypatch.setattr(AtariGroup, "host_recv", real_recv)
    train(cfg, run_dir=run_dir, resume=True)  # the saved state is whole: it resumes and finishes
    assert _metric_steps(run_dir) == [80.0, 120.0]  # the resumed run realigned to log_every: 40 -> 80 -> 120
    assert Checkpointer(run_dir / "checkpoints").latest_step() == 120


# --------------------------------------------------------------------------
# SIGKILL at a few moments, resumed each time
# --------------------------------------------------------------------------


def test_sigkill_at_two_moments_and_resume_equals_the_uninterrupted_run(write_config, tmp_path, subprocess_env):
    import subprocess
    import sys
    import time

    import jax
    import numpy as np

    from jaxdqn.io.run_outputs import read_metrics
    from jaxdqn.running.train import train

    data = {**TINY, "train": {**TINY["train"], "total_env_steps": 16000, "keep_checkpoints": 3, "tensorboard": True}}
    path = write_config(data)
    run_dir = tmp_path / "killed"
    ckpt_dir = run_dir / "checkpoints"

    def logged_steps():
        try:
            lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
        except FileNotFoundError:
            return []
        return [int(line.split(",")[0]) for line in lines if line.split(",")[0].isdigit()]

    def partial_folders():
        return {p.name for p in ckpt_dir.iterdir() if "tmp" in p.name} if ckpt_dir.is_dir() else set()

    def mid_save():  # the row of the step being saved is written: it is beyond the latest complete checkpoint
        return bool(partial_folders() - leftovers)

    moments = [
        ("the first metrics row (its checkpoint may not exist yet)", lambda: bool(logged_steps())),
        ("a checkpoint being written", mid_save),
    ]
    for i, (moment, due) in enumerate(moments):
        leftovers = partial_folders()  # an earlier kill's half-written folder
        args = [sys.executable, "-m", "jaxdqn.cli", "train", str(path), "--run-dir", str(run_dir)] + (["--resume"] if i else [])
        proc = subprocess.Popen(args, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not due() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.kill()
        stderr = proc.communicate()[1].decode()
        assert proc.returncode == -9, f"the run ended before the kill at: {moment}\n{stderr}"
    proc = subprocess.run(args, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    reference = train(config.from_dict({**data, "train": {**data["train"], "tensorboard": False}}), run_dir=tmp_path / "whole")
    resumed, whole = latest_train_state(config.from_dict(data), run_dir), latest_train_state(config.from_dict(data), reference)
    assert int(resumed.env_steps) == 16000
    for x, y in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(whole)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit for bit: params, optimizer, replay, keys

    steps = list(range(1000, 16001, 1000))
    rows = read_metrics(run_dir)
    assert [(int(r["env_steps"]), r["task"]) for r in rows] == [(s, t) for s in steps for t in ("CartPole-v1", "mean")]
    scalars = _tensorboard_scalars(run_dir / "tensorboard")
    assert scalars["CartPole-v1/loss"] == steps and scalars["run/updates"] == steps
