"""Tests for Atari through envpool: the adapter, pixel replay on real frames,
human-normalised scores, configs, and short training runs in both stepping modes."""

from __future__ import annotations

import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

envpool = pytest.importorskip("envpool")

from jaxdqn.envs import atari_scores as atari  # noqa: E402 - envpool must be importable first (importorskip above)
from jaxdqn import config  # noqa: E402 - envpool must be importable first (importorskip above)
from jaxdqn.envs import TaskSet, TaskSpec, known_env_ids  # noqa: E402 - envpool must be importable first (importorskip above)
from jaxdqn.envs.envpool_env import AtariGroup, RawStep, to_step  # noqa: E402 - envpool must be importable first (importorskip above)
from jaxdqn.errors import ConfigError  # noqa: E402 - envpool must be importable first (importorskip above)
from jaxdqn.replay.pixels import PixelReplay  # noqa: E402 - envpool must be importable first (importorskip above)
from jaxdqn.replay.uniform import Transition  # noqa: E402 - envpool must be importable first (importorskip above)

from conftest import REPO_ROOT  # noqa: E402 - envpool must be importable first (importorskip above)

PONG_CONFIG = REPO_ROOT / "configs" / "atari_pong_dqn.yaml"

# A few hundred agent steps on Pong with 8 envs, tiny replay and batch, short episodes.
SMOKE = [
    "train.total_env_steps=320",
    "train.num_envs=8",
    "train.log_every=160",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.eval_episodes=2",
    "train.progress=false",
    "train.tensorboard=false",
    "dqn.replay_capacity=400",
    "dqn.learning_starts=240",
    "dqn.batch_size=8",
    "atari.max_episode_steps=30",
    "atari.num_threads=1",
]


# --------------------------------------------------------------------------
# adapter: how envpool's steps become transitions
# --------------------------------------------------------------------------


def _raw(reward=0.0, game_over=False, trunc=False, lives=3):
    def a(v, d):
        return np.asarray([v], d)

    return RawStep(
        np.zeros((1, 4, 2, 2), np.uint8), a(reward, np.float32), a(game_over, bool), a(trunc, bool), a(lives, np.int32)
    )


def _run(options, raws, lives=3):
    lives, ended = np.asarray([lives], np.int32), np.zeros(1, bool)
    out = []
    for raw in raws:
        lives, ended, step = to_step(options, lives, ended, raw)
        out.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[0].item() if np.ndim(x) == 1 else x, step))
    return out


def test_life_loss_terminates_in_training_only_and_the_game_goes_on():
    raws = [_raw(reward=7.0), _raw(lives=2), _raw(reward=-3.0, lives=2)]
    train = _run(config.AtariConfig(), raws)
    assert train[0].reward == 1.0 and train[0].score == 7.0  # clipped for learning, raw for metrics
    assert train[1].terminated and not train[1].truncated and not train[1].episode_end
    assert not train[2].reset_step and train[2].reward == -1.0  # no reset after a lost life
    evaluation = _run(config.AtariConfig().for_evaluation(), raws)
    assert evaluation[0].reward == 7.0 and not evaluation[1].terminated


def test_cap_truncates_game_over_terminates_and_the_next_step_is_envpools_reset():
    capped = _run(config.AtariConfig(), [_raw(trunc=True), _raw(lives=3)])
    assert capped[0].truncated and not capped[0].terminated and capped[0].episode_end
    assert capped[1].reset_step and not capped[1].terminated and not capped[1].episode_end
    # game over on the capped step: termination wins, no bootstrap
    over = _run(config.AtariConfig(), [_raw(game_over=True, trunc=True, lives=0), _raw(lives=5)])
    assert over[0].terminated and not over[0].truncated
    assert over[1].reset_step and not over[1].terminated  # lives going back up is not a lost life


def test_atari_ids_are_known_and_cannot_mix_with_gymnax():
    assert {"Pong-v5", "Breakout-v5", "MsPacman-v5"} <= set(known_env_ids())
    with pytest.raises(ConfigError, match="cannot be trained together"):
        TaskSet([TaskSpec("Pong-v5"), TaskSpec("CartPole-v1")], num_envs=2)
    with pytest.raises(ConfigError, match=r"tasks\[0\].env_params"):
        TaskSet([TaskSpec("Pong-v5", {"frame_skip": 2})], num_envs=2)


def test_pixel_replay_returns_exactly_the_stacks_envpool_produced():
    # Breakout with random actions loses lives (the stack goes on) and hits the
    # 50-step cap (envpool resets, the stack restarts from the first frame).
    options = config.AtariConfig(stepping="host", max_episode_steps=50, num_threads=1)
    group = AtariGroup("Breakout-v5", [11], 2, options)
    buffer = PixelReplay(num_envs=2, stack=4)
    obs, lives = group.host_reset()
    example = Transition(obs[0, 0], 0, 0.0, obs[0, 0], False, False)
    state = buffer.init(example, 2 * 200)
    env_state = group.fresh_state(lives)
    add = jax.jit(buffer.add_batch)
    rng = np.random.default_rng(0)
    seen, flags = [obs[0]], []
    for _ in range(150):
        actions = rng.integers(0, group.num_actions, (1, 2)).astype(np.int32)
        group.host_send(actions)
        env_state, step = group.from_raw(env_state, group.host_recv())
        state = add(
            state,
            buffer.batch_from_step(jnp.asarray(seen[-1]), jnp.asarray(actions[0]), jax.tree_util.tree_map(lambda x: x[0], step)),
        )
        seen.append(np.asarray(step.obs[0]))
        flags.append(jax.tree_util.tree_map(lambda x: np.asarray(x[0]), step))
    group.close()
    kinds = {"life": 0, "cap": 0, "reset": 0}
    for t in range(149):  # row t holds the observation seen[t]; the newest row has no successor yet
        for env in range(2):
            f = jax.tree_util.tree_map(lambda x: x[env], flags[t])
            assert bool(state.valid[t, env]) == (not f.reset_step)
            if f.reset_step:
                kinds["reset"] += 1
                continue
            kinds["life"] += bool(f.terminated and not f.episode_end)
            kinds["cap"] += bool(f.truncated)
            tr = buffer.gather(state, jnp.array([t]), jnp.array([env]))
            np.testing.assert_array_equal(np.asarray(tr.obs[0]), seen[t][env])
            np.testing.assert_array_equal(np.asarray(tr.next_obs[0]), seen[t + 1][env])
            assert bool(tr.terminated[0]) == bool(f.terminated) and bool(tr.truncated[0]) == bool(f.truncated)
    assert kinds["life"] > 0 and kinds["cap"] > 0 and kinds["reset"] > 0


# --------------------------------------------------------------------------
# human-normalised scores
# --------------------------------------------------------------------------


def test_reference_table_has_the_57_games_and_envpool_knows_them_all():
    table = atari.reference_scores()
    assert len(table) == 57
    ids = set(known_env_ids())
    assert all(f"{game}-v5" in ids for game in table)
    assert all(ref.human != ref.random for ref in table.values())


def test_human_normalised_scores_match_hand_computed_values():
    # Pong: random -20.7, human 14.6; Breakout: 1.7, 30.5; Seaquest: 68.4, 42054.7
    assert atari.human_normalized_score("Pong-v5", 21.0) == pytest.approx(41.7 / 35.3)
    assert atari.human_normalized_score("Pong-v5", -20.7) == pytest.approx(0.0)
    assert atari.human_normalized_score("Breakout-v5", 30.5) == pytest.approx(1.0)
    assert atari.human_normalized_score("Breakout", 100.0) == pytest.approx(98.3 / 28.8)
    scores = atari.score(["Pong-v5", "Breakout-v5", "Seaquest-v5"], np.array([[20.0, 22.0], [30.5, 30.5], [68.4, 68.4]]))
    expected = [41.7 / 35.3, 1.0, 0.0]
    np.testing.assert_allclose(scores.normalized, expected)
    assert scores.mean == pytest.approx(sum(expected) / 3)
    assert scores.median == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="no human and random reference"):
        atari.human_normalized_score("Tetris-v5", 1.0)


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["atari_pong_dqn", "atari_breakout_double_dueling", "atari10_multitask_hard"])
def test_shipped_atari_configs_load_and_name_a_cpu_smoke_run(name):
    path = REPO_ROOT / "configs" / f"{name}.yaml"
    cfg = config.load(path)
    assert all(atari.has_reference(t.env_id) for t in cfg.tasks)
    assert "CPU smoke run" in path.read_text()


def test_policy_distillation_games_share_a_head_only_with_the_full_action_space():
    cfg = config.load(REPO_ROOT / "configs" / "atari10_multitask_hard.yaml")
    assert [t.env_id.split("-")[0] for t in cfg.tasks] == [
        "BeamRider",
        "Breakout",
        "Enduro",
        "Freeway",
        "MsPacman",
        "Pong",
        "Qbert",
        "Riverraid",
        "Seaquest",
        "SpaceInvaders",
    ]
    assert cfg.atari.full_action_space
    with pytest.raises(ConfigError, match="atari.full_action_space"):
        config.load(
            REPO_ROOT / "configs" / "atari10_multitask_hard.yaml",
            ["atari.full_action_space=false", "multitask.hard_heads=shared"],
        )


# --------------------------------------------------------------------------
# training through the entry point the CLI uses
# --------------------------------------------------------------------------


def _metrics(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("stepping", ["xla", "host"])
def test_a_few_hundred_pong_steps_train_in_each_stepping_mode(stepping, tmp_path):
    from jaxdqn.running.train import train

    cfg = config.load(PONG_CONFIG, SMOKE + [f"atari.stepping={stepping}"])
    run_dir = train(cfg, run_dir=tmp_path / "run")
    rows = [r for r in _metrics(run_dir) if r["task"] == "Pong-v5"]
    assert [int(r["env_steps"]) for r in rows] == [160, 320]
    assert int(rows[-1]["updates"]) == 2 * ((320 - 240) // 8 + 1)  # two per 8-env iteration from step 240
    assert math.isfinite(float(rows[-1]["loss"]))
    # 30-step episodes: every finished one is 30 steps long (envpool's reset step is not counted)
    assert float(rows[-1]["episodes"]) > 0 and float(rows[-1]["episode_length"]) == pytest.approx(30.0)
    assert -21.0 <= float(rows[-1]["eval_return"]) <= 21.0
    assert (run_dir / "checkpoints").is_dir()


def test_an_atari_run_resumes_in_the_other_stepping_mode(tmp_path):
    # envpool cannot save its emulators: resuming restarts the episodes, keeps
    # replay, parameters and counters, and works whichever mode saved the run.
    from jaxdqn.running.train import train

    run_dir = train(config.load(PONG_CONFIG, SMOKE + ["atari.stepping=host"]), run_dir=tmp_path / "run")
    more = [o for o in SMOKE if not o.startswith("train.total_env_steps")] + ["train.total_env_steps=480", "atari.stepping=xla"]
    train(config.load(PONG_CONFIG, more), run_dir=run_dir, resume=True)
    rows = [r for r in _metrics(run_dir) if r["task"] == "Pong-v5"]
    assert [int(r["env_steps"]) for r in rows] == [160, 320, 480]
    assert int(rows[-1]["updates"]) == 2 * ((480 - 240) // 8 + 1)
    assert math.isfinite(float(rows[-1]["loss"])) and math.isfinite(float(rows[-1]["eval_return"]))


def test_pqn_learns_the_same_rollouts_in_both_stepping_modes():
    # The host loop learns DQN while the emulators run the step that made learning due; PQN's
    # targets need that step, so its host loop must record it first. Same pools, same seeds:
    # both modes see the same frames and must end with the same parameters (to float rounding:
    # the two modes compile the update into different programs; the wrong order is off by 1e-3).
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.running.runners import HostRunner, Runner, make_runner

    small = ["train.num_envs=2", "pqn.rollout_length=4", "pqn.minibatches=2", "pqn.epochs=1"]
    small += ["atari.max_episode_steps=30", "atari.num_threads=1", "train.progress=false"]
    ends = {}
    for stepping, runner_type in (("xla", Runner), ("host", HostRunner)):
        cfg = config.load(REPO_ROOT / "configs" / "atari_pong_pqn.yaml", small + [f"atari.stepping={stepping}"])
        agent = build_agent(cfg)
        runner = make_runner(agent)
        assert type(runner) is runner_type
        state, _ = runner.run(agent.init(task_keys(cfg)), 8)  # two rollouts, two learning rounds
        assert int(state.updates) == 4
        ends[stepping] = state
    np.testing.assert_array_equal(np.asarray(ends["xla"].obs), np.asarray(ends["host"].obs))
    for xla_leaf, host_leaf in zip(jax.tree_util.tree_leaves(ends["xla"].params), jax.tree_util.tree_leaves(ends["host"].params)):
        np.testing.assert_allclose(np.asarray(xla_leaf), np.asarray(host_leaf), rtol=1e-4, atol=1e-6)


PONG_PQN = REPO_ROOT / "configs" / "atari_pong_pqn.yaml"
# Two envs, 8-step rollouts, 5-step episodes: envpool's reset steps land inside every rollout.
PQN_SMALL = ["train.num_envs=2", "pqn.rollout_length=8", "pqn.minibatches=2", "pqn.epochs=1", "atari.max_episode_steps=5"]
PQN_SMALL += ["atari.num_threads=1", "train.progress=false", "train.tensorboard=false", "train.eval_episodes=1"]


def test_pqn_keeps_envpools_reset_steps_out_of_the_loss_and_cuts_its_rollout_on_resume():
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.running.runners import make_runner

    cfg = config.load(PONG_PQN, PQN_SMALL + ["atari.stepping=xla"])
    agent = build_agent(cfg)
    runner = make_runner(agent)
    state, _ = runner.run(agent.init(task_keys(cfg)), 8 + 5)  # a rollout learned on, then 5 steps of the next
    store = state.replay.storage
    by_step = lambda x: np.asarray(x)[0].reshape((8, 2) + np.shape(x)[2:])  # noqa: E731 - [L, N] of task 0
    ended = by_step(store.transition.terminated | store.transition.truncated)  # Pong has no lives: an end is envpool's
    is_transition = by_step(store.is_transition)
    # slots 0-4 of the store hold the second rollout's steps, 5-7 the end of the first's
    order = np.r_[5:8, 0:5]  # the 8 newest steps, oldest first
    assert not is_transition.all(), "some steps are envpool's resets"
    np.testing.assert_array_equal(is_transition[order][1:], ~ended[order][:-1])
    np.testing.assert_array_equal(by_step(store.transition.reward)[~is_transition], 0.0)

    restarted = runner.after_restore(state)
    truncated = by_step(restarted.replay.storage.transition.truncated)
    assert truncated[4].all(), "the newest step of every env is cut from what follows the restart"
    np.testing.assert_array_equal(np.delete(truncated, 4, axis=0), np.delete(by_step(store.transition.truncated), 4, axis=0))


def test_a_pqn_atari_run_resumes_mid_rollout(tmp_path):
    from jaxdqn.running.train import train

    every = ["train.log_every=20", "train.eval_every=0", "train.checkpoint_every=0"]
    run_dir = train(config.load(PONG_PQN, PQN_SMALL + every + ["train.total_env_steps=40"]), run_dir=tmp_path / "run")
    train(config.load(PONG_PQN, PQN_SMALL + every + ["train.total_env_steps=80"]), run_dir=run_dir, resume=True)
    rows = [r for r in _metrics(run_dir) if r["task"] == "Pong-v5"]
    assert [int(r["env_steps"]) for r in rows] == [20, 40, 60, 80]
    assert int(rows[-1]["updates"]) == (80 // 16) * 2
    assert math.isfinite(float(rows[-1]["loss"]))
