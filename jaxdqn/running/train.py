"""DQN training runs: what ``jaxdqn train`` drives through the host loop (:mod:`jaxdqn.running.loop`).

A run directory holds ``config.yaml``, ``metrics.csv``, ``tensorboard/`` and
``checkpoints/``. Ctrl-C saves a checkpoint of the last finished chunk before
leaving, so ``--resume`` continues from there. Before anything is written at a
host visit, a nan or inf in a task's loss statistics or parameters stops the
run (``NonFiniteError``), so the last good checkpoint stays the latest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxdqn import config as config_lib
from jaxdqn.parallel import distributed, peer_watch
from jaxdqn.running import loop, memory
from jaxdqn.agents.build import build_agent, network_spec, task_keys
from jaxdqn.agents.dqn import DQNAgent
from jaxdqn.agents.seeds import Seeded, seed_mesh
from jaxdqn.config import Config
from jaxdqn.errors import JaxdqnError
from jaxdqn.io.run_layout import seed_run_dir
from jaxdqn.running.evaluate import Evaluator  # noqa: F401  (also imported from here by scripts)


def new_run_dir(cfg: Config) -> Path:
    return loop.new_run_dir(cfg.train.output_dir, cfg.name)


def checkpoint_meta(cfg: Config, agent: DQNAgent, env_steps: int, eval_return: list[float] | None) -> dict:
    """What a checkpoint says about itself (read by evaluate, inspect and transfer)."""
    return {
        "config": config_lib.to_dict(cfg),
        "network": network_spec(cfg).to_dict(),
        "mode": cfg.multitask.mode,
        "tasks": [t.env_id for t in cfg.tasks],
        "task_labels": agent.tasks.labels,
        "num_actions": agent.tasks.num_actions,
        "task_num_actions": agent.tasks.task_num_actions,
        "obs_shape": list(agent.tasks.obs_shape),
        "env_steps": env_steps,
        "eval_return": eval_return,
    }


class TrainJob(loop.Job):
    """A DQN training run (``extra_meta`` is added to every checkpoint's metadata)."""

    def __init__(self, cfg: Config, agent: DQNAgent, extra_meta: dict | None = None):
        super().__init__(cfg.name, cfg.train, agent, task_keys(cfg), Evaluator(cfg, agent))
        self.cfg = cfg
        self.extra_meta = extra_meta or {}

    def meta(self, env_steps: int, eval_return: list[float] | None) -> dict:
        return {**checkpoint_meta(self.cfg, self.system, env_steps, eval_return), **self.extra_meta}


def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    resume: bool = False,
    agent: DQNAgent | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Trains as ``cfg`` says; returns the run directory.

    ``agent`` replaces the one ``cfg`` builds (transfer runs pass a learner
    that starts from a source); ``extra_meta`` is added to every checkpoint's
    metadata.
    """
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    loop.check_run_dir(run_dir, resume)
    if cfg.train.seeds and agent is not None:
        raise JaxdqnError(f"config key 'train.seeds': got {list(cfg.train.seeds)}; allowed: [] (transfer runs take one seed)")
    if cfg.train.seeds and distributed.process_count() > 1:
        raise JaxdqnError("--distributed: train.seeds runs in one process (its copies split over that process's devices)")
    agent = build_agent(cfg) if agent is None else agent  # checks env ids and env params before anything is written
    if cfg.train.seeds:
        return _train_seeds(cfg, run_dir, resume, agent)
    abstract_state = jax.eval_shape(agent.init, task_keys(cfg))  # shapes only: nothing is allocated yet
    _check_fits(cfg, abstract_state)
    job = TrainJob(cfg, agent, extra_meta)
    run_dir.mkdir(parents=True, exist_ok=True)
    peer_watch.resume_from(run_dir / "checkpoints")  # named if a peer process dies
    if distributed.is_primary():  # process 0 alone writes the files meant for people
        (run_dir / "config.yaml").write_text(config_lib.dump(cfg))
    loop.run(job, run_dir, resume)
    return run_dir


def _check_fits(cfg: Config, abstract_state) -> None:
    """Refuses a state this machine cannot hold, naming the key that sizes its store."""
    store_key, store_size = "dqn.replay_capacity", cfg.dqn.replay_capacity
    if cfg.system == "pqn":  # its store holds one rollout
        store_key, store_size = "pqn.rollout_length", cfg.pqn.rollout_length
    memory.check_state_fits(abstract_state, abstract_state.replay, store_key, store_size)


def seed_configs(cfg: Config) -> list[Config]:
    """The runs of ``train.seeds``: ``cfg`` with each seed, as a one-seed run."""
    one = dataclasses.replace(cfg.train, seeds=())
    return [dataclasses.replace(cfg, seed=seed, train=one) for seed in cfg.train.seeds]


def _train_seeds(cfg: Config, run_dir: Path, resume: bool, agent) -> Path:
    """``train.seeds``: the copies of ``agent`` vmapped over seeds, each written as a run of its own."""
    configs = seed_configs(cfg)
    system = Seeded(agent, len(configs), seed_mesh(len(configs)))
    abstract_state = jax.eval_shape(system.init, jnp.stack([task_keys(c) for c in configs]))
    _check_fits(cfg, abstract_state)
    jobs = [TrainJob(c, agent) for c in configs]
    dirs = [seed_run_dir(run_dir, c.seed) for c in configs]
    for c, d in zip(configs, dirs):
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.yaml").write_text(config_lib.dump(c))
    (run_dir / "config.yaml").write_text(config_lib.dump(cfg))
    loop.run_seeds(system, jobs, dirs, resume)
    return run_dir
