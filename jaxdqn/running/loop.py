"""The one host loop behind ``jaxdqn train``, ``distill`` and ``transfer``.

A run is a :class:`~jaxdqn.agents.system.System` driven in compiled chunks of
``train.log_every`` env steps (per task). Between chunks the host writes one
metrics row per task (plus the mean), updates the progress bar, evaluates
every ``train.eval_every`` env steps and at the end, and checkpoints every
``train.checkpoint_every`` env steps and at the end, keeping the last
``train.keep_checkpoints``. ``resume`` continues from the latest checkpoint
(bit for bit, for pure-JAX envs); SIGTERM or SIGUSR1 saves the chunk in flight
and stops (:mod:`jaxdqn.running.preemption`); Ctrl-C saves a checkpoint of the last
finished chunk before leaving (with several processes it keeps the last
periodic one instead: saving is collective). With several processes
(:mod:`jaxdqn.parallel.distributed`) the state is built or restored straight onto the
mesh, and process 0 alone writes metrics, events and the progress bar.

What differs between the kinds of run lives in a :class:`Job`: the metadata a
checkpoint records, extra columns of a row, and anything written next to
``metrics.csv`` (distillation's ``distill.csv``).
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.parallel import distributed, sharding

from jaxdqn.running import preemption
from jaxdqn.agents import seeds
from jaxdqn.agents.seeds import Seeded
from jaxdqn.agents.system import chunk_rows
from jaxdqn.io.checkpoint import Checkpointer
from jaxdqn.config import TrainConfig
from jaxdqn.errors import JaxdqnError
from jaxdqn.running.runners import make_runner
from jaxdqn.io.run_layout import checkpoint_dirs
from jaxdqn.io.run_outputs import MetricsWriter
from jaxdqn.running.nonfinite import check_finite


def new_run_dir(output_dir: str, name: str) -> Path:
    now = distributed.agree(int(time.time()))  # one name for every process of a multi-process run
    stamp = datetime.datetime.fromtimestamp(now).strftime("%Y%m%d-%H%M%S")
    return Path(output_dir) / f"{name}-{stamp}"


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """``--resume`` needs checkpoints; a new run refuses a directory that has some."""
    dirs = checkpoint_dirs(run_dir)
    if resume and not dirs:
        raise JaxdqnError(f"--resume: no checkpoints in {str(run_dir)!r}")
    if not resume and any(any(d.iterdir()) for d in dirs):
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


@dataclasses.dataclass(eq=False)
class _Lane:
    """One run's files: its job, directory, checkpoints and metrics (a seeded run has one per seed)."""

    job: Job
    run_dir: Path
    checkpointer: Checkpointer
    writer: MetricsWriter | None = None
    last_eval: list[float] | None = None
    saved_at: int = -1

    def save(self, env_steps: int, state) -> None:
        self.checkpointer.save(env_steps, state, self.job.meta(env_steps, self.last_eval))
        self.saved_at = env_steps


def run(job: Job, run_dir: Path, resume: bool = False):
    """Drives ``job.system`` to ``train.total_env_steps`` -> the final state."""
    return _drive(job.system, [job], [run_dir], resume, lambda state, _: state)


def run_seeds(system: Seeded, jobs: list[Job], run_dirs: list[Path], resume: bool = False):
    """Drives the copies of a :class:`~jaxdqn.agents.seeds.Seeded` system together; copy ``s``
    is the run of ``jobs[s]`` (its seed's task keys, evaluator, metadata), written to
    ``run_dirs[s]`` as an ordinary run directory -> the final seeded state."""
    return _drive(system, jobs, run_dirs, resume, seeds.take)


def _restore_lanes(lanes: list[_Lane], target) -> list:
    """Each lane's newest readable checkpoint, all at one env step (the oldest of those)."""
    states = [lane.checkpointer.restore_state(target)[0] for lane in lanes]
    common = min(int(state.env_steps) for state in states)
    return [
        state if int(state.env_steps) == common else lane.checkpointer.restore_state(target, step=common)[0]
        for lane, state in zip(lanes, states)
    ]


def _drive(system, jobs: list[Job], run_dirs: list[Path], resume: bool, part):
    """The loop over the lanes ``jobs``/``run_dirs``; ``part(state, i)`` is lane ``i``'s state."""
    t = jobs[0].settings
    lanes = [_Lane(job, d, Checkpointer(d / "checkpoints", keep=t.keep_checkpoints)) for job, d in zip(jobs, run_dirs)]
    seeded = isinstance(system, Seeded)
    runner = make_runner(system)  # the system's compiled chunks, or the host-stepped Atari loop
    if resume and any(lane.checkpointer.latest_step() is None for lane in lanes):  # stopped before its first was complete
        where = ", ".join(str(lane.run_dir / "checkpoints") for lane in lanes if lane.checkpointer.latest_step() is None)
        print(f"--resume: no complete checkpoint in {where} yet; starting the run from env step 0", file=sys.stderr)
        resume = False
    if seeded:
        if resume:
            state = seeds.stack(_restore_lanes(lanes, jax.eval_shape(system.system.init, jobs[0].task_keys)))
        else:
            state = system.fresh_state(jnp.stack([job.task_keys for job in jobs]))
    else:
        # Built (or restored) straight onto the mesh: each device, and each process, holds only its own part.
        shapes = jax.eval_shape(system.init, jobs[0].task_keys)
        labels = system.state_labels(shapes) if system.mesh is not None else None
        if resume:
            (state,) = _restore_lanes(lanes, sharding.abstract_state(shapes, system.mesh, labels))
            state = runner.after_restore(state)
        else:
            state = sharding.init_on_mesh(system.init, jobs[0].task_keys, system.mesh, labels)
    state = system.place(state)
    for i, lane in enumerate(lanes):
        lane.job.start(lane.run_dir, resume, part(state, i))

    env_steps = int(state.env_steps)
    primary = distributed.is_primary()  # process 0 alone writes metrics, events and the bar
    for lane in lanes:
        lane.saved_at = env_steps if resume else -1
        if primary:  # drops rows a killed run wrote after its checkpoint
            lane.writer = MetricsWriter(lane.run_dir, tensorboard=t.tensorboard, keep_through=env_steps, wandb=t.wandb)
    bar = _progress_bar(jobs[0].name, t.total_env_steps, env_steps, t.progress and primary)
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
            lane_metrics = [seeds.take_metrics(metrics, i) if seeded else metrics for i in range(len(lanes))]
            for i, lane in enumerate(lanes):  # every lane, before anything is written
                params = jax.tree_util.tree_map(lambda x: x[i], state.params) if seeded else state.params
                check_finite(params, system.learner.param_axes(params), lane_metrics[i], labels, env_steps)
            finished = env_steps >= t.total_env_steps
            steps_per_sec = (env_steps - before) * system.num_tasks / elapsed  # per lane
            all_rows = {}
            for i, lane in enumerate(lanes):
                lane_state = part(state, i)
                evaluation = None
                if finished or (t.eval_every and env_steps % t.eval_every == 0):
                    evaluation = lane.job.evaluator(lane_state.params, env_steps)
                    lane.last_eval = [float(x) for x in evaluation.mean(axis=1)]
                per_task = lane.job.rows(lane_state, lane_metrics[i], evaluation)
                if evaluation is not None:
                    lane.job.evaluated(lane_state, env_steps, per_task)
                all_rows.update({f"{i}/{label}": row for label, row in per_task.items()})
                if lane.writer is not None:
                    counters = {"env_steps": env_steps, "updates": int(state.updates), "steps_per_sec": steps_per_sec}
                    lane.writer.write({**counters, "wall_time": time.time()}, per_task)
                if finished or (t.checkpoint_every and env_steps % t.checkpoint_every == 0):
                    lane.save(env_steps, lane_state)
                del lane_state
            last_evals = [x for lane in lanes for x in lane.last_eval or []] or None
            postfix = jobs[0].postfix(all_rows, last_evals)
            bar.set_postfix({"steps/s": f"{steps_per_sec * len(lanes):,.0f}", **postfix}, refresh=False)
            bar.update(env_steps - bar.n)
            if distributed.any_process(preemption.requested()):  # every process stops at the same chunk
                for i, lane in enumerate(lanes):
                    if lane.saved_at != env_steps:
                        lane.save(env_steps, part(state, i))
                raise preemption.Preempted(preemption.signal_name(), env_steps, _checkpoint_dirs(lanes))
    except KeyboardInterrupt as interrupt:
        state = getattr(interrupt, "state", state)  # a host-stepped chunk hands back the state it reached
        if state is None:  # a second Ctrl-C inside a host-stepped chunk: nothing whole to save
            raise
        jax.block_until_ready(state)  # the chunk in flight still finishes; keep it
        env_steps = int(state.env_steps)
        if distributed.process_count() > 1:
            # saving is collective, and the other processes may stand anywhere: keep the last periodic checkpoint
            bar.write(f"interrupted: --resume continues from the latest checkpoint in {_checkpoint_dirs(lanes)}")
        else:
            for i, lane in enumerate(lanes):
                if lane.saved_at != env_steps:
                    bar.write(f"interrupted: saving a checkpoint at env step {env_steps} in {lane.run_dir / 'checkpoints'}")
                    lane.save(env_steps, part(state, i))
        raise
    finally:
        restore_signals()
        bar.close()
        for lane in lanes:
            if lane.writer is not None:
                lane.writer.close()
            lane.checkpointer.close()
            lane.job.close()
    return state


def _checkpoint_dirs(lanes: list[_Lane]) -> str:
    return ", ".join(str(lane.run_dir / "checkpoints") for lane in lanes)
