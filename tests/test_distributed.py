"""One run over several processes, tested as two processes on this machine.

Each process gets 2 CPU devices (``JAX_NUM_CPU_DEVICES=2``), the coordinator
listens on a free localhost port, and cross-process collectives run over gloo.
Process 0 learns who it is from the ``JAX_*`` variables, process 1 from the
command-line flags. Over 4 CartPole tasks, independent, hard and soft modes end with
the parameters of one process with 4 devices; every metrics row is written once;
a two-process run cut after its first checkpoint and resumed ends where the
uninterrupted one does; its checkpoints read back in one process.

To stay quick on 2 cores, the one-process reference trains every mode in one
process (alongside the two-process runs), and the cut run is the uninterrupted
run's directory as it stood after its first checkpoint (config, that checkpoint
and the metrics rows up to it), resumed with two processes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import yaml

from jaxdqn import config

from jaxdqn.parallel import distributed, sharding
from jaxdqn.errors import ConfigError, JaxdqnError
from jaxdqn.io.run_outputs import read_metrics

from helpers import latest_train_state, max_abs_diff, tiny_config

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240  # a hung process fails the test instead of hanging CI

TINY = tiny_config(
    "dqn.learning_starts=100",
    "dqn.batch_size=16",
    "dqn.replay_capacity=500",
    "train.num_envs=5",
    "train.total_env_steps=400",
    "train.log_every=200",
    "train.checkpoint_every=200",
    name="two_hosts",
    seed=1,
    tasks=[
        {"env_id": "CartPole-v1", "name": f"pole-{length}", "env_params": {"length": length}} for length in (0.5, 0.6, 0.8, 1.0)
    ],
    network={"hidden_sizes": [16, 16]},
)
LABELS = [t["name"] for t in TINY["tasks"]]
# Overrides per mode; soft with a lambda large enough to move the parameters within 400 env steps.
MODES = {
    "independent": ["multitask.mode=independent"],
    "hard": ["multitask.mode=hard"],
    "soft": ["multitask.mode=soft", "multitask.soft_lambda=0.1"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    # the device count comes from JAX_NUM_CPU_DEVICES alone; the other flags (the tests') stay
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def start_processes(config_path: Path, run_dir: Path, overrides=(), processes: int = 2, resume: bool = False):
    """``jaxdqn train --distributed`` started in ``processes`` processes with 2 devices each."""
    command = [sys.executable, "-m", "jaxdqn.cli", "train", str(config_path), *overrides, "--run-dir", str(run_dir)]
    command += ["--resume"] if resume else []
    port = free_port()
    procs = []
    for pid in range(processes):
        env, args = child_env(2), ["--distributed", "--coordinator-timeout", "60"]
        if pid == 0:  # as the README's two-command example: the JAX_* variables
            env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID="0")
        else:  # the same through flags
            args += ["--coordinator-address", f"localhost:{port}", "--num-processes", str(processes), "--process-id", str(pid)]
        procs.append(subprocess.Popen(command + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def jaxdqn_train(config_path: Path, run_dir: Path, overrides=(), processes: int = 2, resume: bool = False) -> list[str]:
    """``jaxdqn train --distributed`` in ``processes`` processes with 2 devices each; their stdout."""
    procs = start_processes(config_path, run_dir, overrides, processes, resume)
    outputs = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for pid, proc in enumerate(procs):
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"process {pid} exited with {proc.returncode}:\n{err[-3000:]}"
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


REFERENCE = """
import json, sys
from pathlib import Path
from jaxdqn import config
from jaxdqn.running.train import train
config_path, root, modes = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
for mode, overrides in modes.items():
    train(config.load(config_path, overrides), run_dir=root / f"{mode}-1")
"""


def cut_after_first_checkpoint(run_dir: Path, cut: Path, step: int) -> None:
    """``cut`` holds what ``run_dir`` held right after its checkpoint at ``step``."""
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "config.yaml", cut / "config.yaml")
    shutil.copytree(run_dir / "checkpoints" / str(step), cut / "checkpoints" / str(step))
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    (cut / "metrics.csv").write_text("".join([lines[0]] + [row for row in lines[1:] if int(row.split(",")[0]) <= step]))


def restored(run_dir: Path):
    """The latest checkpoint's full training state, restored in this (one-device) process."""
    return jax.device_get(latest_train_state(config.load(run_dir / "config.yaml"), run_dir))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    # one process with 4 devices, every mode, while the two-process runs go
    reference = subprocess.Popen(
        [sys.executable, "-c", REFERENCE, str(config_path), str(root), json.dumps(MODES)],
        env=child_env(4),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        result = {}
        for mode, overrides in MODES.items():
            run_dir = root / f"{mode}-2"
            out = jaxdqn_train(config_path, run_dir, [*overrides, "train.tensorboard=true"])
            result[mode, 2] = SimpleNamespace(dir=run_dir, stdout=out)
        cut = root / "independent-2-resumed"
        cut_after_first_checkpoint(result["independent", 2].dir, cut, step=200)
        result["resumed"] = SimpleNamespace(dir=cut, stdout=jaxdqn_train(config_path, cut, resume=True))
        _, err = reference.communicate(timeout=TIMEOUT_S)
        assert reference.returncode == 0, err[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    for mode in MODES:
        result[mode, 1] = SimpleNamespace(dir=root / f"{mode}-1")
    return result


@pytest.mark.parametrize("mode", list(MODES))
def test_two_processes_end_like_one_process_with_four_devices(runs, mode):
    two, one = restored(runs[mode, 2].dir), restored(runs[mode, 1].dir)
    assert int(two.env_steps) == int(one.env_steps) == 400 and int(two.updates) == int(one.updates) > 0
    assert max_abs_diff(two.params, one.params) < 1e-5
    assert max_abs_diff(two.target_params, one.target_params) < 1e-5
    if mode == "independent":  # tasks never meet: same replay, same episodes
        np.testing.assert_array_equal(two.replay.storage.action, one.replay.storage.action)
    if mode == "soft":  # the penalty, summed over tasks that live in both processes, moved the parameters
        assert max_abs_diff(two.params, restored(runs["independent", 1].dir).params) > 1e-3


@pytest.mark.parametrize("mode", list(MODES))
def test_process_zero_alone_writes_each_metrics_row_once(runs, mode):
    run = runs[mode, 2]
    rows = read_metrics(run.dir)
    keys = [(int(r["env_steps"]), r["task"]) for r in rows]
    assert sorted(keys) == sorted((step, label) for step in (200, 400) for label in LABELS + ["mean"])
    # the gathered statistics and evaluation match the one-process run's
    reference = {(int(r["env_steps"]), r["task"]): r for r in read_metrics(runs[mode, 1].dir)}
    for row in rows:
        ref = reference[int(row["env_steps"]), row["task"]]
        for column in ("episode_return", "episodes", "loss", "q_mean", "eval_return"):
            assert math.isclose(row[column], ref[column], rel_tol=1e-4, abs_tol=1e-5) or (
                math.isnan(row[column]) and math.isnan(ref[column])
            )
    assert not math.isnan(rows[-1]["eval_return"])  # evaluated at the end, all tasks gathered
    assert len(list((run.dir / "tensorboard").iterdir())) == 1  # one events file, process 0's
    assert [("run finished" in out) for out in run.stdout] == [True, False]


def test_two_process_run_resumed_with_two_processes_ends_where_the_uninterrupted_one_does(runs):
    resumed, uninterrupted = restored(runs["resumed"].dir), restored(runs["independent", 2].dir)
    assert int(resumed.env_steps) == 400
    # the whole state (chunk metrics are returned by run, not kept in it)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(uninterrupted), strict=True):
        np.testing.assert_array_equal(a, b)
    keys = [(int(r["env_steps"]), r["task"]) for r in read_metrics(runs["resumed"].dir)]
    assert len(keys) == len(set(keys)) == 2 * (len(LABELS) + 1)


def test_checkpoint_of_two_processes_is_evaluated_inspected_and_taught_from_in_one(runs):
    from jaxdqn.running.evaluate import evaluate_checkpoint
    from jaxdqn.reports.checkpoint_summary import describe
    from jaxdqn.running.stored import load_source

    run_dir = runs["independent", 2].dir
    result = evaluate_checkpoint(run_dir, episodes=2)
    assert result.returns.shape == (4, 2) and result.env_steps == 400
    assert "pole-1.0" in describe(str(run_dir))
    teacher = load_source(str(run_dir), "teacher")
    assert max_abs_diff(teacher.params, restored(runs["independent", 1].dir).params) < 1e-5


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_stops_the_other_in_one_line_naming_the_checkpoint(tmp_path, victim):
    from jaxdqn.io import checkpoint
    from jaxdqn.parallel import peer_watch

    config_path = tmp_path / "long.yaml"
    long_run = {**TINY, "train": {**TINY["train"], "total_env_steps": 10**7, "checkpoint_every": 200}}
    config_path.write_text(yaml.safe_dump(long_run, sort_keys=False))
    run_dir = tmp_path / "run"
    procs = start_processes(config_path, run_dir)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (run_dir / "checkpoints" / "200" / "meta").is_dir() and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
            time.sleep(0.1)
        time.sleep(1.0)  # mid-run, past the first checkpoint
        procs[victim].kill()
        killed_at = time.monotonic()
        survivor = procs[1 - victim]
        _, err = survivor.communicate(timeout=60)
        waited = time.monotonic() - killed_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    print(f"victim {victim}: the survivor exited with {survivor.returncode} {waited:.1f} s after the kill")
    assert waited < peer_watch.GRACE_S + 20  # JAX's own wait for a dead peer is about 100 s
    if victim == 0 and survivor.returncode == -signal.SIGABRT:
        # process 0 held JAX's coordination service: its client in the survivor may abort first (README)
        assert "coordination service" in err, err[-3000:]
        return
    assert survivor.returncode == peer_watch.EXIT_STATUS, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("jaxdqn")]
    assert len(lines) == 1 and f"process {victim} of the run is gone" in lines[0], err[-3000:]
    newest = checkpoint.complete_steps(run_dir / "checkpoints")[-1]
    assert f"env step {newest} in {run_dir / 'checkpoints'}" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in err and "gloo" not in err.lower(), err[-3000:]


PEER_ERROR_FIRST = """
import socket, sys, threading
from jax.errors import JaxRuntimeError
from jaxdqn.parallel import peer_watch
from jaxdqn import cli

ours, theirs = socket.socketpair()
peer_watch._watch(ours, 1, 0)  # process 0 watching process 1

def failing_collective(args):
    # gloo's error reaches the main thread first; the peer's socket closes a moment later
    threading.Timer(0.5, theirs.close).start()
    raise JaxRuntimeError("INTERNAL: Gloo AllGather failed: Connection reset by peer")

cli.cmd_train = failing_collective
sys.exit(cli.main(["train", "unused.yaml"]))
"""


def test_a_collective_that_fails_before_the_watcher_sees_the_peer_gone_ends_in_one_line(tmp_path):
    script = tmp_path / "peer_error_first.py"
    script.write_text(PEER_ERROR_FIRST)
    done = subprocess.run([sys.executable, str(script)], env=child_env(1), capture_output=True, text=True, timeout=60)
    from jaxdqn.parallel import peer_watch

    assert done.returncode == peer_watch.EXIT_STATUS, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "gloo" not in done.stderr.lower(), done.stderr[-3000:]
    assert done.stderr.strip().startswith("jaxdqn: process 1 of the run is gone; stopping process 0.")


def test_a_collective_error_with_every_peer_alive_is_raised_as_it_is(tmp_path):
    script = tmp_path / "peer_alive.py"
    script.write_text(PEER_ERROR_FIRST.replace("threading.Timer(0.5, theirs.close).start()", "pass"))
    done = subprocess.run([sys.executable, str(script)], env=child_env(1), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Gloo AllGather failed" in done.stderr, done.stderr[-3000:]


BACKGROUND_LOG_FIRST = """
import socket, sys, threading, time
from absl import logging
from jax.errors import JaxRuntimeError
from jaxdqn.parallel import peer_watch

ours, theirs = socket.socketpair()
peer_watch._watch(ours, 0, 1)  # process 1 watching process 0

def signalling_thread():
    # as orbax's checkpoint thread does when the coordination service is gone
    try:
        raise JaxRuntimeError("UNAVAILABLE: recvmsg:Connection reset by peer")
    except JaxRuntimeError:
        logging.exception("_SignalingThread.run() raised an exception")

threading.Timer(0.5, theirs.close).start()
threading.Thread(target=signalling_thread).start()
time.sleep(30)
"""


@pytest.mark.parametrize("peer_dies", [True, False])
def test_a_library_thread_logging_the_lost_connection_is_quiet_only_when_the_peer_is_gone(tmp_path, peer_dies):
    from jaxdqn.parallel import peer_watch

    script = tmp_path / "background_log_first.py"
    text = BACKGROUND_LOG_FIRST if peer_dies else BACKGROUND_LOG_FIRST.replace("theirs.close", "lambda: None")
    script.write_text(text.replace("time.sleep(30)", "time.sleep(30)" if peer_dies else "time.sleep(7)"))
    done = subprocess.run([sys.executable, str(script)], env=child_env(1), capture_output=True, text=True, timeout=60)
    if peer_dies:
        assert done.returncode == peer_watch.EXIT_STATUS, done.stderr[-3000:]
        assert done.stderr.strip().startswith("jaxdqn: process 0 of the run is gone; stopping process 1.")
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
    else:
        assert done.returncode == 0 and "Traceback" in done.stderr and "Connection reset" in done.stderr


# -- start-up, without starting JAX's runtime ------------------------------------


def test_flags_come_before_environment_variables():
    env = {"JAX_COORDINATOR_ADDRESS": "head:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.resolve(environ=env, detect=False) == distributed.Cluster("head:1234", 4, 3)
    cluster = distributed.resolve("other:99", 2, 1, timeout_s=7, environ=env, detect=False)
    assert cluster == distributed.Cluster("other:99", 2, 1, 7)


def test_unset_values_come_from_the_cluster_manager(monkeypatch):
    # SLURM as srun presents it to the sixth of 8 processes; JAX's detection reads these
    for name, value in dict(
        SLURM_JOB_ID="12345", SLURM_STEP_NODELIST="node[01-02]", SLURM_NTASKS="8", SLURM_PROCID="5", SLURM_LOCALID="1"
    ).items():
        monkeypatch.setenv(name, value)
    cluster = distributed.resolve(environ={})
    assert cluster.coordinator_address.startswith("node01:") and (cluster.num_processes, cluster.process_id) == (8, 5)
    assert distributed.resolve(environ={"JAX_PROCESS_ID": "2"}).process_id == 2  # a variable still wins


@pytest.mark.parametrize(
    "settings, message",
    [
        ({}, "no coordinator address; pass --coordinator-address or set JAX_COORDINATOR_ADDRESS"),
        (
            {"JAX_COORDINATOR_ADDRESS": "head:1", "JAX_NUM_PROCESSES": "2"},
            "no process id; pass --process-id or set JAX_PROCESS_ID",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "head:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
            "process id is 2; allowed: 0 to 1",
        ),
        ({"JAX_COORDINATOR_ADDRESS": "head", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "allowed: HOST:PORT"),
        ({"JAX_COORDINATOR_ADDRESS": "head:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES is 'two'"),
    ],
)
def test_missing_or_wrong_cluster_settings_are_one_line(settings, message):
    with pytest.raises(JaxdqnError, match=message.replace("(", r"\(")) as err:
        distributed.resolve(environ=settings, detect=False)
    assert "\n" not in str(err.value)


def test_a_process_that_cannot_reach_the_coordinator_gives_up_naming_it():
    address = f"localhost:{free_port()}"  # nobody listens there
    started = time.monotonic()
    with pytest.raises(JaxdqnError, match=f"process 1 could not reach the coordinator at {address} within 2 s"):
        distributed.meet(distributed.Cluster(address, 2, 1, timeout_s=2))
    assert time.monotonic() - started < 10


def test_the_coordinator_gives_up_naming_the_missing_processes():
    with pytest.raises(JaxdqnError, match="process 0 waited 1 s at localhost:.* for processes 1, 2 of 3"):
        distributed.meet(distributed.Cluster(f"localhost:{free_port()}", 3, 0, timeout_s=1))


def test_cli_reports_an_unreachable_coordinator_in_one_line(tmp_path, subprocess_env):
    address = f"localhost:{free_port()}"
    command = [
        sys.executable,
        "-m",
        "jaxdqn.cli",
        "train",
        str(REPO_ROOT / "configs/cartpole_dqn.yaml"),
        "--run-dir",
        str(tmp_path / "run"),
    ]
    command += [
        "--distributed",
        "--coordinator-address",
        address,
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--coordinator-timeout",
        "1",
    ]
    proc = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"jaxdqn train: error: --distributed: process 1 could not reach the coordinator at {address} within 1 s; "
        "is process 0 running there, and is the port open? (--coordinator-timeout sets the wait)"
    ]
    assert not (tmp_path / "run").exists()


def test_cluster_flags_need_distributed(write_config, capsys):
    from jaxdqn.cli import main

    assert main(["train", str(write_config(TINY)), "--num-processes", "2"]) == 2
    assert "--num-processes needs --distributed" in capsys.readouterr().err


def test_a_split_that_does_not_use_every_device_of_every_process_is_explained():
    sharding._check_splits_over_all("independent", 8, 32, 4, 2)  # 8 tasks over 4 devices: fine
    with pytest.raises(ConfigError) as err:
        sharding._check_splits_over_all("independent", 6, 32, 4, 2)
    assert str(err.value) == (
        "multitask.mode 'independent' splits the tasks (6 tasks) over all 4 devices of 2 processes, and 4 does not "
        "divide 6; allowed: a multiple of 4 (4, 8, 12, ...); or 2 or 6 devices in all"
    )
    with pytest.raises(ConfigError, match=r"splits the batch of each gradient step \(dqn.batch_size 30\) over all 4 devices"):
        sharding._check_splits_over_all("hard", 4, 30, 4, 2)


def test_atari_tasks_are_refused_across_processes():
    cfg = SimpleNamespace(tasks=[SimpleNamespace(env_id="CartPole-v1"), SimpleNamespace(env_id="Pong-v5")])
    with pytest.raises(JaxdqnError, match="tasks.1.env_id is 'Pong-v5', an Atari \\(envpool\\) task; Atari runs use one process"):
        distributed.check_supported(cfg)
