"""``jaxdqn distill`` and ``jaxdqn transfer``: their systems and jobs for the host loop (:mod:`jaxdqn.running.loop`).

Both write a run directory like training does: ``config.yaml``,
``metrics.csv`` (one row per task per host visit, plus the mean),
``tensorboard/`` and ``checkpoints/`` whose ``meta`` makes them readable by
``jaxdqn evaluate`` and ``jaxdqn inspect``.

- distillation: ``config.yaml`` is the distillation config; ``student.yaml`` is
  the equivalent training config of the student (what its checkpoints record);
  ``distill.csv`` has, at every evaluation, each task's student and teacher
  return on the same episodes, the percentage, and the greedy-action
  agreement on replay batches; ``summary.json`` holds the final numbers.
- transfer: ``config.yaml`` is the target training config (runnable with
  ``jaxdqn train``); ``transfer.yaml`` is the whole transfer config.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np

from jaxdqn.io import checkpoint

from jaxdqn.running import loop, memory
from jaxdqn import config as config_lib
from jaxdqn.agents import parts
from jaxdqn.agents.build import build_agent, build_learner, lr_decay_updates, network_spec, schedule, task_keys, task_specs
from jaxdqn.agents.dqn import DQNAgent
from jaxdqn.config import Config, DQNConfig, MultitaskConfig
from jaxdqn.envs import TaskSet
from jaxdqn.errors import ConfigError
from jaxdqn.io.run_outputs import MetricsWriter
from jaxdqn.running.evaluate import Evaluator
from jaxdqn.networks import QNetwork
from jaxdqn.running.train import checkpoint_meta
from jaxdqn.running.train import train as train_loop
from jaxdqn.transfer import config as tconfig
from jaxdqn.transfer.assisted import TeacherPull
from jaxdqn.transfer.distill import Distiller, LossSpec
from jaxdqn.transfer.finetune import finetune_learner
from jaxdqn.running.stored import Source, as_numpy, load_source, progressive_network, refuse_progressive
from jaxdqn.transfer.teachers import TeacherSet, fixed_q
from jaxdqn.transfer.fit import fit_problems, refuse


# --------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------


@dataclasses.dataclass
class DistillSetup:
    distiller: Distiller
    student_cfg: Config
    teachers: list[dict]  # what checkpoint meta records about each teacher


def _unique(labels: list[str]) -> list[str]:
    out = []
    for i, label in enumerate(labels):
        out.append(label if labels.count(label) == 1 else f"{label}-{i}")
    return out


def build_distiller(cfg: tconfig.DistillConfig) -> DistillSetup:
    """Loads the teachers, derives the student's training config, builds the compiled distiller."""
    cache: dict[str, Source] = {}
    sources = []
    for i, teacher in enumerate(cfg.teachers):
        if teacher.checkpoint not in cache:
            cache[teacher.checkpoint] = load_source(teacher.checkpoint, "teacher checkpoint")
        src = cache[teacher.checkpoint]
        src.check_task(teacher.task, f"teachers[{i}].task")
        sources.append(src)
    labels = _unique([t.name or src.label(t.task) for t, src in zip(cfg.teachers, sources)])
    tasks = tuple(
        dataclasses.replace(src.cfg.tasks[t.task], name=label, weight=1.0, seed_offset=-1)
        for t, src, label in zip(cfg.teachers, sources, labels)
    )
    d = cfg.distill
    student_cfg = config_lib.check(
        Config(
            name=cfg.name,
            seed=cfg.seed,
            tasks=tasks,
            network=cfg.network,
            dqn=DQNConfig(**config_lib.learning_values(d), epsilon_start=d.actor_epsilon, epsilon_end=d.actor_epsilon),
            multitask=MultitaskConfig(mode="hard" if len(tasks) > 1 else "independent"),
            train=cfg.train,
        )
    )
    task_set = TaskSet(task_specs(student_cfg), cfg.train.num_envs)
    if getattr(task_set, "is_atari", False):
        raise ConfigError("teachers: distillation runs on gymnax tasks; Atari teachers are not supported yet")
    for i, (t, src, label) in enumerate(zip(cfg.teachers, sources, labels)):
        problems = fit_problems(src, t.task, label, task_set.task_num_actions[i], task_set.obs_shape)
        refuse(f"teachers[{i}]: checkpoint", src, problems)
    student = build_learner(student_cfg, task_set)
    teachers = TeacherSet(tuple(fixed_q(src, t.task, task_set.num_actions) for t, src in zip(cfg.teachers, sources)))
    loss = LossSpec(d.loss, d.tau_teacher, d.tau_student)
    distiller = Distiller(student, teachers, task_set, schedule(student_cfg), loss, actor=d.actor)
    records = [
        {
            "checkpoint": src.path,
            "task": t.task,
            "label": src.label(t.task),
            "network": src.meta["network"],
            "train_eval_return": (src.meta.get("eval_return") or [None] * src.num_tasks)[t.task],
        }
        for t, src in zip(cfg.teachers, sources)
    ]
    return DistillSetup(distiller, student_cfg, records)


DISTILL_COLUMNS = ("env_steps", "task", "student_return", "teacher_return", "percent_of_teacher", "agreement", "loss")


def _percent(student: float, teacher: float) -> float:
    return 100.0 * student / teacher if teacher else math.nan


class DistillJob(loop.Job):
    """A distillation run: teachers evaluated on the same episodes as the student,
    ``distill.csv`` and the summary beside the usual outputs."""

    def __init__(self, cfg: tconfig.DistillConfig, setup: DistillSetup):
        distiller, student_cfg = setup.distiller, setup.student_cfg
        super().__init__(cfg.name, cfg.train, distiller, task_keys(student_cfg), Evaluator(student_cfg, distiller))
        self.cfg, self.setup = cfg, setup
        self.teacher_eval = Evaluator(student_cfg, distiller.teachers)
        self.summary: dict[str, dict] = {}
        self._file = self._csv = None

    def start(self, run_dir: Path, resume: bool, state) -> None:
        path = run_dir / "distill.csv"
        is_new = not (resume and path.exists())
        self._file = path.open("w" if is_new else "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=DISTILL_COLUMNS)
        if is_new:
            self._csv.writeheader()

    def evaluated(self, state, env_steps: int, per_task: dict[str, dict]) -> None:
        teacher_returns = self.teacher_eval(None, env_steps)  # the same episodes (same keys)
        for i, (label, row) in enumerate(per_task.items()):
            teacher = float(teacher_returns[i].mean())
            record = {
                "env_steps": env_steps,
                "task": label,
                "student_return": row["eval_return"],
                "teacher_return": teacher,
                "percent_of_teacher": _percent(row["eval_return"], teacher),
                "agreement": row["agreement"],
                "loss": row["loss"],
            }
            self._csv.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in record.items()})
            self.summary[label] = record
        self._file.flush()

    def postfix(self, per_task: dict[str, dict], last_eval) -> dict:
        if not self.summary:
            return {}
        return {"% of teacher": f"{np.mean([s['percent_of_teacher'] for s in self.summary.values()]):.0f}"}

    def meta(self, env_steps: int, eval_return) -> dict:
        return _distill_meta(self.cfg, self.setup, env_steps, eval_return, self.summary, self.system.tasks.labels)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def distill(cfg: tconfig.DistillConfig, run_dir: str | Path | None = None, resume: bool = False) -> tuple[Path, dict]:
    """Distils as ``cfg`` says; returns the run directory and the final summary."""
    t = cfg.train
    run_dir = Path(run_dir) if run_dir is not None else loop.new_run_dir(t.output_dir, cfg.name)
    loop.check_run_dir(run_dir, resume)
    setup = build_distiller(cfg)  # loads and checks the teachers before anything is written
    abstract_state = jax.eval_shape(setup.distiller.init, task_keys(setup.student_cfg))  # shapes only
    memory.check_state_fits(abstract_state, abstract_state.replay, "distill.replay_capacity", cfg.distill.replay_capacity)
    job = DistillJob(cfg, setup)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(tconfig.dump(cfg))
    (run_dir / "student.yaml").write_text(config_lib.dump(setup.student_cfg))
    state = loop.run(job, run_dir, resume)
    result = {"run_dir": str(run_dir), "env_steps": int(state.env_steps), "eval_episodes": t.eval_episodes, "tasks": job.summary}
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2))
    return run_dir, result


def _distill_meta(cfg, setup: DistillSetup, env_steps: int, last_eval, summary: dict, labels: list[str]) -> dict:
    meta = checkpoint_meta(setup.student_cfg, setup.distiller, env_steps, last_eval)
    teachers = []
    for record, label in zip(setup.teachers, labels):
        s = summary.get(label, {})
        teachers.append({**record, "eval_return": s.get("teacher_return"), "percent": s.get("percent_of_teacher")})
    meta.update({"kind": "distill", "distill": config_lib.to_dict(cfg.distill), "teachers": teachers})
    return meta


def format_distill_summary(result: dict) -> str:
    lines = [f"{'task':<24} {'teacher':>10} {'student':>10} {'% of teacher':>13} {'agreement':>10}"]
    for label, s in result["tasks"].items():
        lines.append(
            f"{label:<24} {s['teacher_return']:>10.2f} {s['student_return']:>10.2f} "
            f"{s['percent_of_teacher']:>12.1f}% {s['agreement']:>10.3f}"
        )
    lines.append(f"(greedy returns over the same {result['eval_episodes']} episodes per task, at env step {result['env_steps']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Transfer
# --------------------------------------------------------------------------


def _finetune_learner(cfg: tconfig.TransferConfig, run: Config, agent: DQNAgent, src: Source):
    """``run``: the training config (with fine-tuning's learning rate)."""
    tr = cfg.transfer
    f, j = tr.finetune, tr.source_task
    tasks = agent.tasks
    refuse_progressive(src, "of fine-tuning")
    target_net = QNetwork(network_spec(run), tasks.num_actions)
    example = jax.ShapeDtypeStruct((1,) + tuple(tasks.obs_shape), tasks.obs_dtype)
    wanted = jax.eval_shape(target_net.init, jax.random.PRNGKey(0), example)
    have = src.task_params(j)
    compared = ("torso",) if f.reinit_head else ("torso", "head")
    problems = checkpoint.leaf_problems({p: have[p] for p in compared}, {p: wanted[p] for p in compared})
    for i, label in enumerate(tasks.labels):
        actions = None if f.reinit_head else tasks.num_actions
        problems += fit_problems(src, j, label, actions, tasks.obs_shape, network_spec(run))
    problems = sorted(set(problems), key=problems.index)
    hint = "set transfer.finetune.reinit_head: true to start a new head" if any("actions" in p for p in problems) else ""
    refuse("source checkpoint", src, problems, hint)
    freeze_updates = agent.schedule.updates_by(f.freeze_steps) if f.freeze_torso == "first" else 0
    d = run.dqn
    return finetune_learner(
        agent.learner,
        as_numpy(have),
        reinit_head=f.reinit_head,
        freeze=f.freeze_torso,
        freeze_updates=freeze_updates,
        torso_lr_scale=f.torso_lr_scale,
        step_size=parts.step_size(d.learning_rate, lr_decay_updates(run)),
        max_grad_norm=d.max_grad_norm,
        adam_eps=d.adam_eps,
    )


def _progressive_learner(cfg: tconfig.TransferConfig, agent: DQNAgent, sources: list[Source]):
    tr = cfg.transfer
    tasks = agent.tasks
    for src in sources:
        refuse_progressive(src, "a progressive column")
        refuse("source checkpoint", src, fit_problems(src, tr.source_task, tasks.labels[0], None, tasks.obs_shape))
    p = tr.progressive
    network = progressive_network(network_spec(cfg.run), tasks.num_actions, sources, tr.source_task, p.adapter_size, p.scale_init)
    return dataclasses.replace(agent.learner, network=network)


def _assisted_learner(cfg: tconfig.TransferConfig, agent: DQNAgent, src: Source):
    tr = cfg.transfer
    tasks = agent.tasks
    problems = []
    for i, label in enumerate(tasks.labels):
        problems += fit_problems(src, tr.source_task, label, tasks.task_num_actions[i], tasks.obs_shape)
    refuse(
        "source checkpoint",
        src,
        sorted(set(problems), key=problems.index),
        "the teacher's Q-values must cover the target's actions",
    )
    a = tr.distill
    teacher = TeacherSet(tuple(fixed_q(src, tr.source_task, tasks.num_actions) for _ in range(tasks.num_tasks)))
    pull = TeacherPull(
        teacher=teacher,
        schedule=agent.schedule,
        distill_kind=a.loss,
        beta_decay_steps=float(a.beta_decay_steps),
        **{key: getattr(a, key) for key in ("tau_teacher", "tau_student", "beta_schedule", "beta_start", "beta_end")},
    )
    return dataclasses.replace(agent.learner, terms=agent.learner.terms + (pull,))


def build_transfer_agent(cfg: tconfig.TransferConfig) -> tuple[DQNAgent, Config, dict]:
    """The DQN agent of a transfer run, its training config and what its checkpoints record."""
    tr = cfg.transfer
    run = cfg.run
    if tr.method == "finetune" and tr.finetune.learning_rate > 0:
        run = dataclasses.replace(run, dqn=dataclasses.replace(run.dqn, learning_rate=tr.finetune.learning_rate))
    if run.dqn.popart and tr.method == "progressive":
        raise ConfigError(
            "config key 'dqn.popart': got True; allowed: false with transfer.method 'progressive' "
            "(a progressive column's head has no PopArt layout)"
        )
    agent = build_agent(run)
    sources = [load_source(path, "source checkpoint") for path in tr.sources] if tr.method != "scratch" else []
    for src in sources:
        src.check_task(tr.source_task, "transfer.source_task")
    if tr.method == "finetune":
        learner = _finetune_learner(cfg, run, agent, sources[0])
    elif tr.method == "progressive":
        learner = _progressive_learner(cfg, agent, sources)
    elif tr.method == "distill":
        learner = _assisted_learner(cfg, agent, sources[0])
    else:
        learner = agent.learner
    agent = dataclasses.replace(agent, learner=learner)
    settings = config_lib.to_dict(tr)
    settings["sources"] = [src.path for src in sources]
    meta = {"kind": "transfer" if tr.method != "scratch" else "train", "transfer": settings}
    return agent, run, meta


def transfer(cfg: tconfig.TransferConfig, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Trains the target task(s) with the configured transfer method; returns the run directory."""
    run_dir = Path(run_dir) if run_dir is not None else loop.new_run_dir(cfg.run.train.output_dir, cfg.name)
    loop.check_run_dir(run_dir, resume)
    agent, run, meta = build_transfer_agent(cfg)  # loads and checks the sources before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "transfer.yaml").write_text(tconfig.dump(cfg))
    if not resume:
        _evaluate_start(run, agent, run_dir)
    return train_loop(run, run_dir=run_dir, resume=resume, agent=agent, extra_meta=meta)


def _evaluate_start(run: Config, agent: DQNAgent, run_dir: Path) -> None:
    """Writes an ``env_steps = 0`` row with the evaluation of the starting parameters
    (what jumpstart compares), before the training loop appends its rows."""
    params = jax.jit(lambda keys: agent.init(keys).params)(task_keys(run))  # compiled: replay is never allocated
    returns = Evaluator(run, agent)(params, 0)
    per_task = {
        label: {"eval_return": float(returns[i].mean()), "eval_return_std": float(returns[i].std())}
        for i, label in enumerate(agent.tasks.labels)
    }
    writer = MetricsWriter(run_dir, tensorboard=False)
    try:
        writer.write({"env_steps": 0, "updates": 0, "wall_time": time.time()}, per_task)
    finally:
        writer.close()
