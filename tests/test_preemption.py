"""Runs that survive a cluster: real signals, requeue with --resume auto, damaged checkpoints."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
import yaml

from jaxdqn import config

from jaxdqn.running import preemption
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.agents.dqn import DQNAgent
from jaxdqn.io.checkpoint import Checkpointer, complete_steps
from jaxdqn.cli import main
from jaxdqn.running.train import train

from helpers import TINY_CARTPOLE, assert_trees_identical, latest_train_state, tiny_config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = config.from_dict(TINY_CARTPOLE)
    run_dir = train(cfg, run_dir=tmp_path_factory.mktemp("full") / "run")
    return latest_train_state(cfg, run_dir)


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_sigterm_mid_run_saves_the_chunk_and_resume_auto_ends_bit_equal(tmp_path, monkeypatch, uninterrupted, capsys):
    real_run = DQNAgent.run
    calls = {"n": 0}

    def run_then_signal(self, state, n):
        out = real_run(self, state, n)
        calls["n"] += 1
        if calls["n"] == 2:  # a real SIGTERM while the second chunk is in flight
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(DQNAgent, "run", run_then_signal)
    cfg_path = write_config(tmp_path / "tiny.yaml", tiny_config("train.checkpoint_every=0"))  # only the signal saves mid-run
    run_dir = tmp_path / "run"
    args = ["train", str(cfg_path), "--run-dir", str(run_dir), "--resume", "auto"]
    assert main(args) == preemption.EXIT_STATUS
    err = capsys.readouterr().err
    assert "starting a new run" in err and "SIGTERM: saved a checkpoint at env step 2000" in err
    assert complete_steps(run_dir / "checkpoints") == [2000]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back
    monkeypatch.setattr(DQNAgent, "run", real_run)
    assert main(args) == 0  # the same command, requeued
    assert "continuing the run" in capsys.readouterr().err
    assert_trees_identical(latest_train_state(config.from_dict(TINY_CARTPOLE), run_dir), uninterrupted)


def test_sigusr1_stops_a_real_process_with_the_documented_status(tmp_path):
    data = tiny_config("train.total_env_steps=10000000", "train.checkpoint_every=0", "train.log_every=500")
    cfg_path = write_config(tmp_path / "long.yaml", data)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxdqn.cli", "train", str(cfg_path), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) > 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == preemption.EXIT_STATUS, err
    assert "SIGUSR1: saved a checkpoint" in err and "Traceback" not in err
    steps = complete_steps(run_dir / "checkpoints")
    assert len(steps) == 1 and steps[0] >= 500


def test_resume_auto_needs_a_run_dir(tmp_path, capsys):
    cfg_path = write_config(tmp_path / "tiny.yaml", TINY_CARTPOLE)
    assert main(["train", str(cfg_path), "--resume", "auto"]) == 2
    assert "--resume auto needs --run-dir" in capsys.readouterr().err


# -- damaged checkpoints -------------------------------------------------------------------


def _largest_state_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)), key=lambda p: p.stat().st_size)


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def remove(path: Path):
    path.unlink()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run with checkpoints at 3000 and 4000 (keep 2)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(config.from_dict(TINY_CARTPOLE), run_dir=run_dir)
    return run_dir


@pytest.mark.parametrize("damage", [truncate, flip_byte, remove])
def test_resume_falls_back_to_the_newest_whole_checkpoint(tmp_path, finished_run, damage, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    latest = run_dir / "checkpoints" / "4000"
    damaged = _largest_state_file(latest)
    damage(damaged)
    cfg = config.from_dict(TINY_CARTPOLE)
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=2)
    try:
        target = jax.eval_shape(build_agent(cfg).init, task_keys(cfg))
        state, _ = checkpointer.restore_state(target)
    finally:
        checkpointer.close()
    assert int(state.env_steps) == 3000
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipping" in line]
    assert len(lines) == 1 and "4000" in lines[0] and damaged.name in lines[0]
    assert (run_dir / "checkpoints" / "4000.damaged").is_dir()  # kept aside, not deleted


@pytest.mark.parametrize("command", ["evaluate", "inspect"])
@pytest.mark.parametrize("damage", [truncate, flip_byte, remove])
def test_reading_a_damaged_checkpoint_is_one_line_and_status_2(tmp_path, finished_run, command, damage, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    victim = run_dir / "checkpoints" / "4000" / "params" / "manifest.ocdbt"
    damage(victim)
    args = [command, str(run_dir)] + (["--episodes", "1"] if command == "evaluate" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoints/4000" in err[0] and "params/manifest.ocdbt" in err[0]
