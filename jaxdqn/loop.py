"""The one host loop behind ``jaxdqn train``, ``distill`` and ``transfer``.

A run is a :class:`~jaxdqn.agents.system.System` driven in compiled chunks of
``train.log_every`` env steps (per task). Between chunks the host writes one
metrics row per task (plus the mean), updates the progress bar, evaluates
every ``train.eval_every`` env steps and at the end, and checkpoints every
``train.checkpoint_every`` env steps and at the end, keeping the last
``train.keep_checkpoints``. ``resume`` continues from the latest checkpoint
(bit for bit, for pure-JAX envs); SIGTERM or SIGUSR1 saves the chunk in flight
and stops (:mod:`jaxdqn.preemption`); Ctrl-C saves a checkpoint of the last
finished chunk before leaving (with several processes it keeps the last
periodic one instead: saving is collective). With several processes
(:mod:`jaxdqn.distributed`) the state is built or restored straight onto the
mesh, and process 0 alone writes metrics, events and the progress bar.

What differs between the kinds of run lives in a :class:`Job`: the metadata a
checkpoint records, extra columns of a row, and anything written next to
``metrics.csv`` (distillation's ``distill.csv``).
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdqn import distributed, preemption, sharding
from jaxdqn.agents.system import chunk_rows
from jaxdqn.checkpoint import Checkpointer
from jaxdqn.config import TrainConfig
from jaxdqn.errors import JaxdqnError
from jaxdqn.runners import make_runner
from jaxdqn.run_outputs import MetricsWriter
from jaxdqn.nonfinite import check_finite


def new_run_dir(output_dir: str, name: str) -> Path:
    now = distributed.agree(int(time.time()))  # one name for every process of a multi-process run
    stamp = datetime.datetime.fromtimestamp(now).strftime("%Y%m%d-%H%M%S")
    return Path(output_dir) / f"{name}-{stamp}"


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """``--resume`` needs checkpoints; a new run refuses a directory that has some."""
    ckpt_dir = run_dir / "checkpoints"
    if resume and not ckpt_dir.is_dir():
        raise JaxdqnError(f"--resume: no checkpoints in {str(run_dir)!r}")
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise JaxdqnError(f"{str(run_dir)!r} already holds checkpoints; pass --resume to continue it")


class Job:
    """What one kind of run adds to the loop. Subclasses override what they need."""

    def __init__(self, name: str, settings: TrainConfig, system: Any, task_keys: jax.Array, evaluator):
        self.name = name
        self.settings = settings  # the train: section (steps, intervals, outputs)
        self.system = system
        self.task_keys = task_keys
        self.evaluator = evaluator  # (params, env_steps) -> returns [T, episodes]

    def meta(self, env_steps: int, eval_return: list[float] | None) -> dict:
        """What a checkpoint says about itself."""
        return {"env_steps": env_steps, "eval_return": eval_return}

    def rows(self, state, metrics, evaluation: np.ndarray | None) -> dict[str, dict]:
        """One row per task: the chunk's metrics, exploration, the evaluation if there was one."""
        epsilon = float(self.system.epsilon(state.env_steps))
        per_task = chunk_rows(self.system.tasks.labels, metrics)
        for i, row in enumerate(per_task.values()):
            row["epsilon"] = epsilon
            if evaluation is not None:
                row["eval_return"] = float(evaluation[i].mean())
                row["eval_return_std"] = float(evaluation[i].std())
        return per_task

    def evaluated(self, state, env_steps: int, per_task: dict[str, dict]) -> None:
        """Called after an evaluation's rows are built (distillation adds its teachers here)."""

    def postfix(self, per_task: dict[str, dict], last_eval: list[float] | None) -> dict:
        returns = [r["episode_return"] for r in per_task.values()]
        postfix = {"return": f"{np.nanmean(returns):.1f}" if not np.all(np.isnan(returns)) else "-"}
        if last_eval is not None:
            postfix["eval"] = f"{np.mean(last_eval):.1f}"
        return postfix

    def start(self, run_dir: Path, resume: bool, state) -> None:
        """Called once the state is ready, before the first chunk."""

    def close(self) -> None:
        """Called when the loop ends, however it ends."""


def _progress_bar(name: str, total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, unit="step", unit_scale=True, disable=not enabled, dynamic_ncols=True, desc=name)


def run(job: Job, run_dir: Path, resume: bool = False):
    """Drives ``job.system`` to ``train.total_env_steps`` -> the final state."""
    t, system = job.settings, job.system
    ckpt_dir = run_dir / "checkpoints"
    checkpointer = Checkpointer(ckpt_dir, keep=t.keep_checkpoints)
    runner = make_runner(system)  # the system's compiled chunks, or the host-stepped Atari loop
    if resume and checkpointer.latest_step() is None:  # stopped before its first checkpoint was complete
        print(f"--resume: no complete checkpoint in {ckpt_dir} yet; starting the run from env step 0", file=sys.stderr)
        resume = False
    # Built (or restored) straight onto the mesh: each device, and each process, holds only its own part.
    shapes = jax.eval_shape(system.init, job.task_keys)
    labels = system.state_labels(shapes) if system.mesh is not None else None
    if resume:
        state, _ = checkpointer.restore_state(sharding.abstract_state(shapes, system.mesh, labels))
        state = runner.after_restore(state)
    else:
        state = sharding.init_on_mesh(system.init, job.task_keys, system.mesh, labels)
    state = system.place(state)
    job.start(run_dir, resume, state)

    env_steps = int(state.env_steps)
    primary = distributed.is_primary()  # process 0 alone writes metrics, events and the bar
    # drops rows a killed run wrote after its checkpoint
    writer = MetricsWriter(run_dir, tensorboard=t.tensorboard, keep_through=env_steps, wandb=t.wandb) if primary else None
    bar = _progress_bar(job.name, t.total_env_steps, env_steps, t.progress and primary)
    last_eval = None
    saved_at = env_steps if resume else -1
    restore_signals = preemption.install()
    try:
        while env_steps < t.total_env_steps:
            # up to the next multiple of log_every (a run saved by Ctrl-C mid-chunk realigns)
            iterations = min(t.log_every - env_steps % t.log_every, t.total_env_steps - env_steps) // t.num_envs
            started, before = time.perf_counter(), env_steps
            state, metrics = runner.run(state, iterations)
            jax.block_until_ready(state)
            elapsed = time.perf_counter() - started
            env_steps = int(state.env_steps)
            labels = system.tasks.labels
            check_finite(
                state.params, system.learner.param_axes(state.params), metrics, labels, env_steps
            )  # before anything is written
            finished = env_steps >= t.total_env_steps
            evaluation = None
            if finished or (t.eval_every and env_steps % t.eval_every == 0):
                evaluation = job.evaluator(state.params, env_steps)
                last_eval = [float(x) for x in evaluation.mean(axis=1)]
            per_task = job.rows(state, metrics, evaluation)
            if evaluation is not None:
                job.evaluated(state, env_steps, per_task)
            steps_per_sec = (env_steps - before) * system.num_tasks / elapsed
            if writer is not None:
                writer.write(
                    {
                        "env_steps": env_steps,
                        "updates": int(state.updates),
                        "steps_per_sec": steps_per_sec,
                        "wall_time": time.time(),
                    },
                    per_task,
                )
            bar.set_postfix({"steps/s": f"{steps_per_sec:,.0f}", **job.postfix(per_task, last_eval)}, refresh=False)
            bar.update(env_steps - bar.n)
            if finished or (t.checkpoint_every and env_steps % t.checkpoint_every == 0):
                checkpointer.save(env_steps, state, job.meta(env_steps, last_eval))
                saved_at = env_steps
            if distributed.any_process(preemption.requested()):  # every process stops at the same chunk
                if saved_at != env_steps:
                    checkpointer.save(env_steps, state, job.meta(env_steps, last_eval))
                    saved_at = env_steps
                raise preemption.Preempted(preemption.signal_name(), env_steps, str(ckpt_dir))
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
            checkpointer.save(env_steps, state, job.meta(env_steps, last_eval))
        raise
    finally:
        restore_signals()
        bar.close()
        if writer is not None:
            writer.close()
        checkpointer.close()
        job.close()
    return state
