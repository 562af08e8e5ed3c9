"""The training loop: compiled chunks of iterations, host visits in between.

Every ``train.log_every`` env steps (per task) the host reads the chunk's
statistics, writes metrics, and, when due, evaluates and checkpoints. A run
directory holds ``config.yaml``, ``metrics.csv``, ``tensorboard/`` and
``checkpoints/``. Ctrl-C saves a checkpoint of the last finished chunk before
leaving, so ``--resume`` continues from there. Before anything is written at a
host visit, a nan or inf in a task's loss statistics or parameters stops the
run (``NonFiniteError``), so the last good checkpoint stays the latest.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn import config as config_lib, distributed, memory, sharding
from jaxdqn.agents.build import build_agent, build_eval_tasks, eval_epsilon, network_spec, task_keys
from jaxdqn.agents.dqn import DQNAgent, TrainState, evaluate
from jaxdqn.checkpoint import Checkpointer
from jaxdqn.config import Config
from jaxdqn.errors import JaxdqnError
from jaxdqn.host_loop import make_evaluation, make_runner
from jaxdqn.logging import MetricsWriter
from jaxdqn.nonfinite import check_finite


def new_run_dir(cfg: Config) -> Path:
    now = distributed.agree(int(time.time()))  # one name for every process of a multi-process run
    stamp = datetime.datetime.fromtimestamp(now).strftime("%Y%m%d-%H%M%S")
    return Path(cfg.train.output_dir) / f"{cfg.name}-{stamp}"


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


class Evaluator:
    """Compiled evaluation of every task, ``train.eval_episodes`` episodes each."""

    def __init__(self, cfg: Config, agent: DQNAgent):
        self.tasks = build_eval_tasks(cfg)
        self.learner = agent.learner
        self.epsilon = eval_epsilon(cfg, self.tasks)
        self.seed = cfg.seed
        # compiled, or stepped by the host for Atari pools that step on the host
        self._run = make_evaluation(self.learner, self.tasks, self.epsilon)

    def __call__(self, params, env_steps: int) -> np.ndarray:
        """Returns ``[T, episodes]``; the keys depend only on the seed and the step."""
        base = jax.random.fold_in(jax.random.PRNGKey(self.seed), 0x5EED)
        keys = jax.random.split(jax.random.fold_in(base, env_steps), self.tasks.num_tasks)
        return np.asarray(distributed.fetch(self._run(params, keys)))


def _chunk_rows(agent: DQNAgent, state: TrainState, evaluation: np.ndarray | None) -> dict[str, dict]:
    stats = distributed.fetch(state.stats)
    epsilon = float(agent.epsilon(state.env_steps))
    updates = max(int(stats.updates), 1)
    per_task = {}
    for i, label in enumerate(agent.tasks.labels):
        episodes = float(stats.episodes[i])
        row = {
            "episode_return": float(stats.return_sum[i]) / episodes if episodes else math.nan,
            "episode_length": float(stats.length_sum[i]) / episodes if episodes else math.nan,
            "episodes": episodes,
            "loss": float(stats.loss_sum[i]) / updates if stats.updates else math.nan,
            "q_mean": float(stats.q_sum[i]) / updates if stats.updates else math.nan,
            "epsilon": epsilon,
            "penalty": float(stats.penalty_sum) / updates if stats.updates else math.nan,
        }
        if evaluation is not None:
            row["eval_return"] = float(evaluation[i].mean())
            row["eval_return_std"] = float(evaluation[i].std())
        per_task[label] = row
    return per_task


def _progress_bar(cfg: Config, start: int, show: bool = True):
    from tqdm.auto import tqdm

    return tqdm(
        total=cfg.train.total_env_steps,
        initial=start,
        unit="step",
        unit_scale=True,
        disable=not (cfg.train.progress and show),
        dynamic_ncols=True,
        desc=cfg.name,
    )


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
    t = cfg.train
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    if resume and not ckpt_dir.is_dir():
        raise JaxdqnError(f"--resume: no checkpoints in {str(run_dir)!r}")
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise JaxdqnError(f"{str(run_dir)!r} already holds checkpoints; pass --resume to continue it")
    agent = build_agent(cfg) if agent is None else agent  # checks env ids and env params before anything is written
    keys = task_keys(cfg)
    abstract_state = jax.eval_shape(agent.init, keys)  # shapes only: nothing is allocated yet
    memory.check_state_fits(abstract_state, abstract_state.replay, "dqn.replay_capacity", cfg.dqn.replay_capacity)
    evaluator = Evaluator(cfg, agent)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(ckpt_dir, keep=t.keep_checkpoints)
    runner = make_runner(agent)  # the agent's compiled chunks, or the host-stepped Atari loop
    if resume and checkpointer.latest_step() is None:  # stopped before its first checkpoint was complete
        print(f"--resume: no complete checkpoint in {ckpt_dir} yet; starting the run from env step 0", file=sys.stderr)
        resume = False
    # Built (or restored) straight onto the mesh: each device, and each process, holds only its own part.
    placement = (agent.mesh, agent.num_tasks, agent.learner.mode, agent.learner.shared_head)
    if resume:
        state, _ = checkpointer.restore_state(sharding.abstract_state(agent.init, keys, *placement))
        state = runner.after_restore(state)
    else:
        state = sharding.init_on_mesh(agent.init, keys, *placement)
    state = agent.place(state)
    primary = distributed.is_primary()  # process 0 alone writes config, metrics, events and the bar
    if primary:
        (run_dir / "config.yaml").write_text(config_lib.dump(cfg))

    env_steps = int(state.env_steps)
    # drops rows a killed run wrote after its checkpoint
    writer = MetricsWriter(run_dir, tensorboard=t.tensorboard, keep_through=env_steps) if primary else None
    bar = _progress_bar(cfg, env_steps, show=primary)
    last_eval = None
    saved_at = env_steps if resume else -1
    try:
        while env_steps < t.total_env_steps:
            # up to the next multiple of log_every (a run saved by Ctrl-C mid-chunk realigns)
            iterations = min(t.log_every - env_steps % t.log_every, t.total_env_steps - env_steps) // t.num_envs
            started = time.perf_counter()
            state = runner.run(state, iterations)
            jax.block_until_ready(state)
            elapsed = time.perf_counter() - started
            env_steps = int(state.env_steps)
            check_finite(state.params, agent.learner.param_axes(), state.stats, agent.tasks.labels, env_steps)  # before anything is written
            finished = env_steps >= t.total_env_steps
            evaluation = None
            if finished or (t.eval_every and env_steps % t.eval_every == 0):
                evaluation = evaluator(state.params, env_steps)
                last_eval = [float(x) for x in evaluation.mean(axis=1)]
            steps_per_sec = iterations * t.num_envs * agent.num_tasks / elapsed
            per_task = _chunk_rows(agent, state, evaluation)
            if writer is not None:
                writer.write(
                    {"env_steps": env_steps, "updates": int(state.updates), "steps_per_sec": steps_per_sec, "wall_time": time.time()},
                    per_task,
                )
            returns = [r["episode_return"] for r in per_task.values()]
            postfix = {"steps/s": f"{steps_per_sec:,.0f}", "return": f"{np.nanmean(returns):.1f}" if not np.all(np.isnan(returns)) else "-"}
            if last_eval is not None:
                postfix["eval"] = f"{np.mean(last_eval):.1f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(env_steps - bar.n)
            if finished or (t.checkpoint_every and env_steps % t.checkpoint_every == 0):
                checkpointer.save(env_steps, state, {**checkpoint_meta(cfg, agent, env_steps, last_eval), **(extra_meta or {})})
                saved_at = env_steps
    except KeyboardInterrupt as interrupt:
        state = getattr(interrupt, "state", state)  # a host-stepped chunk hands back the state it reached
        if state is None:  # a second Ctrl-C inside a host-stepped chunk: nothing whole to save
            raise
        jax.block_until_ready(state)  # the chunk in flight still finishes; keep it
        env_steps = int(state.env_steps)
        if distributed.process_count() > 1:
            # saving is collective, and the other processes may stand anywhere: keep the last periodic checkpoint
            bar.write(f"interrupted: --resume continues from the latest checkpoint in {ckpt_dir}")
        elif saved_at != env_steps:
            bar.write(f"interrupted: saving a checkpoint at env step {env_steps} in {ckpt_dir}")
            checkpointer.save(env_steps, state, {**checkpoint_meta(cfg, agent, env_steps, last_eval), **(extra_meta or {})})
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        checkpointer.close()
    return run_dir


def final_state_params(run_dir: str | Path):
    """Convenience for tests and notebooks: the latest checkpoint's parameters."""
    from jaxdqn import checkpoint

    cfg = config_lib.load(Path(run_dir) / "config.yaml")
    agent = build_agent(cfg)
    target = jax.eval_shape(agent.init, task_keys(cfg)).params
    params, _ = checkpoint.load_params(run_dir, target)
    return jax.tree_util.tree_map(jnp.asarray, params)
