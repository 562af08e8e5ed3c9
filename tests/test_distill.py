"""Policy distillation: the loss helper, the compiled distiller, and the headline claim:
a student distilled from a CartPole DQN teacher plays at >= 90% of the teacher's
greedy return on the same episodes.

The teacher is trained here (module fixture) with a recipe that gives a strong
CartPole policy in 500k env steps (~10-25 s on a 2-core CPU); the student gets a
small budget (15k env steps of teacher data) and a smaller network.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxdqn.io import checkpoint

from jaxdqn import cli, config, losses
from jaxdqn.transfer import config as tconfig
from jaxdqn.transfer.distill import greedy_agreement, task_distill_losses
from jaxdqn.agents.build import task_keys
from jaxdqn.transfer.run import build_distiller, distill

from conftest import train_in_child
from helpers import tiny_config

TEACHER = tiny_config(  # the CartPole recipe at 500,000 env steps: a teacher that solves the task
    "train.total_env_steps=500000",
    "train.log_every=50000",
    "train.eval_episodes=10",
    "train.checkpoint_every=0",
    name="teacher",
    seed=0,
    network={"hidden_sizes": [120, 84]},
    dqn={
        "loss": "squared",
        "learning_rate": 1e-3,
        "lr_decay": True,
        "batch_size": 128,
        "replay_capacity": 10000,
        "learning_starts": 10000,
        "update_every": 10,
        "target_update_period": 500,
        "epsilon_decay_steps": 250000,
    },
)


def student_config(teacher_dirs, **distill_settings) -> dict:
    return {
        "name": "student",
        "seed": 0,
        "teachers": [{"checkpoint": str(d)} for d in teacher_dirs],
        "network": {"hidden_sizes": [32, 32]},  # 1,282 parameters; the teacher has 10,934
        "distill": {"loss": "kl", **distill_settings},
        "train": {
            "total_env_steps": 15000,
            "num_envs": 10,
            "log_every": 5000,
            "eval_every": 0,  # only at the end
            "eval_episodes": 10,
            "checkpoint_every": 0,
            "tensorboard": False,
            "progress": False,
        },
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The teacher's run directory, trained by ``jaxdqn train`` in a child process compiled as a
    user's run is (500k env steps: 30 s there against 48 s at the tests' fast-compile settings,
    measured one after the other with a training run beside them)."""
    root = tmp_path_factory.mktemp("teacher")
    (root / "teacher.yaml").write_text(yaml.safe_dump(TEACHER, sort_keys=False))
    return train_in_child(root / "teacher.yaml", root / "run")


# -- the loss over tasks --------------------------------------------------


def test_task_losses_are_batch_means_of_the_per_example_losses():
    key = jax.random.PRNGKey(0)
    qs, qt = jax.random.normal(key, (2, 2, 8, 3))
    mask = jnp.array([[True, True, False], [True, True, True]])
    for kind, one in (
        ("kl", lambda s, t, m: losses.distill_kl(s, t, 0.1, 2.0, m)),
        ("mse", losses.distill_mse),
        ("nll", lambda s, t, m: losses.distill_nll(s, t, m, 2.0)),
    ):
        got = task_distill_losses(qs, qt, mask, kind, tau_teacher=0.1, tau_student=2.0)
        want = [np.mean([one(qs[i, b], qt[i, b], mask[i]) for b in range(8)]) for i in range(2)]
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_masked_actions_do_not_count():
    qt = jnp.array([[[1.0, 0.0, 0.0]]])
    qs = jnp.array([[[1.0, 0.0, 50.0]]])  # agrees on the two valid actions, wild on the masked one
    mask = jnp.array([[True, True, False]])
    assert float(task_distill_losses(qs, qt, mask, "mse")[0]) == 0.0
    assert float(task_distill_losses(qs, qt, mask, "kl", 1.0, 1.0)[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(greedy_agreement(qs, qt, mask)[0]) == 1.0
    with pytest.raises(ValueError, match="kl"):
        task_distill_losses(qs, qt, mask, "l1")


# -- one teacher into a smaller student ------------------------------------


def test_distilled_student_reaches_90_percent_of_its_teacher(teacher, tmp_path, write_config, capsys):
    path = write_config(student_config([teacher]))
    run_dir = tmp_path / "student"
    assert cli.main(["distill", str(path), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "% of teacher" in out

    summary = json.loads((run_dir / "summary.json").read_text())["tasks"]["CartPole-v1"]
    # The teacher really learned (a random policy scores ~20), so the comparison means something.
    assert summary["teacher_return"] >= 200
    assert summary["percent_of_teacher"] >= 90.0, summary
    assert summary["student_return"] >= 0.9 * summary["teacher_return"]

    # The student's checkpoint is an ordinary one: evaluate and inspect read it.
    meta = checkpoint.read_meta(run_dir)
    assert meta["kind"] == "distill" and meta["network"]["hidden_sizes"] == [32, 32]
    assert meta["teachers"][0]["percent"] == pytest.approx(summary["percent_of_teacher"])
    assert cli.main(["evaluate", str(run_dir), "--episodes", "10"]) == 0
    evaluated = float(capsys.readouterr().out.splitlines()[-1].split()[1])
    assert evaluated >= 0.9 * summary["teacher_return"]
    for name in ("config.yaml", "student.yaml", "metrics.csv", "distill.csv"):
        assert (run_dir / name).is_file()


@pytest.mark.parametrize("actor", ["teacher", "student"])
def test_replay_holds_the_teachers_q_values_of_its_observations(teacher, actor):
    # A teacher that acts hands its Q-values to replay; a student that acts leaves the teacher's
    # pass to replay. Either way replay must hold the teacher's Q-values of each stored state.
    setup = build_distiller(tconfig.distill_from_dict(student_config([teacher], actor=actor)))
    distiller = setup.distiller
    state, metrics = distiller.init(task_keys(setup.student_cfg)), distiller.empty_metrics()
    collect = jax.jit(distiller.collect)
    for _ in range(3):
        state, metrics, _ = collect(state, metrics)
    stored = 3 * distiller.tasks.num_envs
    assert int(state.replay.size[0]) == stored
    obs, q_teacher = state.replay.storage.obs[:, :stored], state.replay.storage.q_teacher[:, :stored]
    assert float(jnp.abs(q_teacher).max()) > 0
    np.testing.assert_allclose(np.asarray(q_teacher), np.asarray(distiller.teachers.q_values(None, obs)), rtol=1e-5, atol=1e-6)


def test_multi_teacher_student_shares_a_torso_with_a_head_per_task(teacher, tmp_path):
    data = student_config([teacher, teacher], actor="student", loss="mse")
    data["teachers"][0]["name"] = "first"
    data["train"].update(total_env_steps=1000, log_every=1000, eval_episodes=1)
    data["distill"].update(learning_starts=500, update_every=10)
    cfg = tconfig.distill_from_dict(data)
    setup = build_distiller(cfg)
    assert setup.student_cfg.multitask.mode == "hard"
    assert setup.distiller.tasks.labels == ["first", "CartPole-v1"]

    run_dir, result = distill(cfg, run_dir=tmp_path / "multi")
    assert set(result["tasks"]) == {"first", "CartPole-v1"}
    params, _ = checkpoint.load_params(
        run_dir, jax.eval_shape(setup.distiller.init, jax.random.PRNGKey(0)[None].repeat(2, 0)).params
    )
    kernel = params["torso"]["Dense_0"]["kernel"]
    assert kernel.shape == (4, 32), "one torso for both tasks"
    assert params["head"]["Dense_0"]["kernel"].shape == (2, 32, 2), "one head per task"


def test_missing_teacher_is_a_config_error(write_config, tmp_path, capsys):
    data = student_config([tmp_path / "nowhere"])
    assert cli.main(["distill", str(write_config(data)), "--run-dir", str(tmp_path / "run")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(config.ConfigError, match="'teachers'"):
        tconfig.distill_from_dict({**data, "teachers": []})
    with pytest.raises(config.ConfigError, match="'distill.loss'"):
        tconfig.distill_from_dict({**data, "distill": {"loss": "l2"}})


# -- the shared host loop: exact resume and Ctrl-C -------------------------


def _tiny_distill(teacher, total: int, checkpoint_every: int = 500) -> tconfig.DistillConfig:
    data = student_config([teacher], actor="student")
    data["train"].update(total_env_steps=total, log_every=500, checkpoint_every=checkpoint_every, eval_episodes=1)
    data["distill"].update(learning_starts=200, update_every=10, batch_size=16, replay_capacity=1000)
    return tconfig.distill_from_dict(data)


def _final_state(cfg, run_dir):
    from jaxdqn.io.checkpoint import Checkpointer

    setup = build_distiller(cfg)
    target = jax.eval_shape(setup.distiller.init, jax.random.PRNGKey(0)[None])
    state, _ = Checkpointer(run_dir / "checkpoints").restore_state(target)
    return state


def _assert_identical(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_distill_interrupted_saves_and_resume_continues_the_same_trajectory(teacher, tmp_path, monkeypatch):
    from jaxdqn.transfer.distill import Distiller

    full_dir = tmp_path / "full"
    distill(_tiny_distill(teacher, 1500), run_dir=full_dir)
    uninterrupted = _final_state(_tiny_distill(teacher, 1500), full_dir)

    real_run, calls = Distiller.run, {"n": 0}

    def flaky_run(self, state, n):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_run(self, state, n)

    monkeypatch.setattr(Distiller, "run", flaky_run)
    cut_dir = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        distill(_tiny_distill(teacher, 1500, checkpoint_every=0), run_dir=cut_dir)
    assert checkpoint.complete_steps(cut_dir / "checkpoints") == [500]  # saved by the interruption
    monkeypatch.setattr(Distiller, "run", real_run)
    _, result = distill(_tiny_distill(teacher, 1500, checkpoint_every=0), run_dir=cut_dir, resume=True)
    assert result["env_steps"] == 1500
    # Bit-identical: params, optimizer, replay (states and teacher Q-values), env state, RNG keys.
    _assert_identical(_final_state(_tiny_distill(teacher, 1500), cut_dir), uninterrupted)


# -- a multi-task independent checkpoint as one teacher per task -------------

INDEPENDENT = tiny_config(
    "train.total_env_steps=100",
    "train.log_every=100",
    "train.eval_episodes=1",
    "train.checkpoint_every=0",
    name="independent",
    seed=0,
    tasks=[{"env_id": "CartPole-v1"}, {"env_id": "Acrobot-v1"}],  # obs 4 and 6, actions 2 and 3
    multitask={"mode": "independent"},
    network={"hidden_sizes": [8]},
    dqn={"batch_size": 8, "replay_capacity": 200, "learning_starts": 40, "update_every": 10},
)


@pytest.fixture(scope="module")
def independent_run(tmp_path_factory):
    """A checkpoint of a two-task independent run, written as ``jaxdqn train`` writes one
    (same Checkpointer, same metadata) but at step 0: loading is what is tested, so the
    freshly initialised networks (different per task) stand in for trained ones."""
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.io.checkpoint import Checkpointer
    from jaxdqn.running.train import checkpoint_meta

    cfg = config.from_dict(INDEPENDENT)
    agent = build_agent(cfg)
    run_dir = tmp_path_factory.mktemp("independent") / "run"
    checkpointer = Checkpointer(run_dir / "checkpoints")
    checkpointer.save(0, agent.init(task_keys(cfg)), checkpoint_meta(cfg, agent, 0, None))
    checkpointer.close()
    return run_dir


def tiny_student(run_dir, tasks, network=None) -> dict:
    data = student_config([run_dir] * len(tasks))
    for teacher, task in zip(data["teachers"], tasks):
        teacher["task"] = task
    data["network"] = network or {"hidden_sizes": [8]}
    data["train"].update(total_env_steps=100, log_every=100, eval_episodes=1)
    data["distill"].update(learning_starts=40, batch_size=8, replay_capacity=200)
    return data


def test_independent_checkpoint_gives_one_teacher_per_task(independent_run):
    from jaxdqn.running.stored import load_source

    setup = build_distiller(tconfig.distill_from_dict(tiny_student(independent_run, [0, 1])))
    distiller = setup.distiller
    assert distiller.tasks.labels == ["CartPole-v1", "Acrobot-v1"]
    assert setup.student_cfg.multitask.mode == "hard"
    assert [t["task"] for t in setup.teachers] == [0, 1]

    src = load_source(independent_run)
    stored = src.params  # every leaf carries the task axis: two separate networks
    obs = jax.random.normal(jax.random.PRNGKey(1), (2, 5) + tuple(distiller.tasks.obs_shape))
    q_teachers = distiller.teachers.q_values(None, obs)
    q_run = src.learner.q_values(stored, obs)  # what the training run's greedy policy sees
    mask = np.asarray(distiller.tasks.action_mask)
    assert q_teachers.shape == (2, 5, 3)
    for i in range(2):
        np.testing.assert_allclose(q_teachers[i][:, mask[i]], q_run[i][:, mask[i]], rtol=1e-6)
        for teacher_leaf, stored_leaf in zip(
            jax.tree_util.tree_leaves(distiller.teachers.members[i].params), jax.tree_util.tree_leaves(stored)
        ):
            np.testing.assert_array_equal(teacher_leaf, stored_leaf[i])
    assert not np.allclose(q_teachers[0][:, :2], q_teachers[1][:, :2]), "each task has its own teacher"


def test_one_task_of_an_independent_checkpoint_teaches_a_single_game_student(independent_run):
    from jaxdqn.running.stored import load_source

    setup = build_distiller(tconfig.distill_from_dict(tiny_student(independent_run, [0])))
    distiller = setup.distiller
    assert distiller.tasks.obs_shape == (4,) and distiller.tasks.num_actions == 2  # CartPole alone: no padding
    assert setup.student_cfg.multitask.mode == "independent"
    src = load_source(independent_run)
    obs = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 4))
    padded = jnp.pad(obs, ((0, 0), (0, 0), (0, 2)))  # the teacher was trained on observations padded to Acrobot's 6
    q_teacher = distiller.teachers.q_values(None, obs)
    np.testing.assert_allclose(
        q_teacher[0], src.learner.q_values(src.params, jnp.concatenate([padded, padded]))[0][:, :2], rtol=1e-6
    )


def test_student_cnn_widths_are_checked_in_distill_configs(independent_run):
    data = tiny_student(independent_run, [0], network={"hidden_sizes": [8], "cnn_hidden": 32})
    with pytest.raises(config.ConfigError, match="'network.cnn_hidden'.*only with network.torso 'minatar_cnn'"):
        tconfig.distill_from_dict(data)
