"""Episode GIFs: one frame per observation of a greedy episode, drawn at the right size."""

from __future__ import annotations

import jax
import numpy as np
from PIL import Image

from jaxdqn import config
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.cli import main
from jaxdqn.reports.episode_gif import draw_minatar, greedy_episodes, write_episode_gifs
from jaxdqn.envs import TaskSet
from jaxdqn.agents.build import task_specs

from helpers import tiny_config

CLASSIC = "tasks=[{env_id: CartPole-v1}, {env_id: Acrobot-v1}, {env_id: MountainCar-v0}]"


def gif_frames(path) -> list[np.ndarray]:
    image = Image.open(path)
    frames = []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
    return frames


def test_gifs_hold_every_observation_of_the_episode(tmp_path):
    cfg = config.from_dict(tiny_config(CLASSIC))
    agent = build_agent(cfg)
    params = agent.init(task_keys(cfg)).params
    written = write_episode_gifs(cfg, agent, params, tmp_path, seed=3)
    steps = {path.stem: n for path, n in written}
    # The same episodes, observed directly: CartPole ends when the pole or cart leave their bounds.
    episodes = greedy_episodes(agent.learner, params, TaskSet(task_specs(cfg), 1), jax.random.PRNGKey(3), 10_000)
    cart = np.stack(episodes[0])
    out = (np.abs(cart[:, 0]) > 2.4) | (np.abs(cart[:, 2]) > 12 * 2 * np.pi / 360)
    assert out[-1] or len(cart) == 501
    assert not out[:-1].any()
    assert steps["MountainCar-v0"] == 200 or episodes[2][-1][0] >= 0.5  # time limit, or the flag
    for (path, n), episode, (height, width) in zip(written, episodes, [(124, 200), (164, 160), (124, 200)]):
        frames = gif_frames(path)
        assert len(frames) == n + 1 == len(episode)
        assert frames[0].shape == (height, width, 3)


def test_minatar_channels_are_drawn_in_their_colours():
    obs = np.zeros((10, 10, 4), bool)
    obs[2, 3, 1] = True
    obs[5, 5, 0] = obs[5, 5, 3] = True  # two channels in one cell: the higher one shows
    image = draw_minatar(obs)
    assert image.shape == (160, 160, 3)
    assert tuple(image[2 * 16 + 1, 3 * 16 + 1]) == (60, 180, 75)
    assert tuple(image[5 * 16 + 1, 5 * 16 + 1]) == (0, 130, 200)
    assert tuple(image[0, 0]) == (0, 0, 0)


def test_evaluate_gif_flag_writes_one_gif_per_task(tmp_path, capsys):
    from jaxdqn.running.train import train

    cfg = config.from_dict(
        tiny_config(
            "tasks=[{env_id: CartPole-v1}, {env_id: CartPole-v1, name: long-pole, env_params: {length: 1.0}}]",
            "train.total_env_steps=1000",
        )
    )
    run_dir = train(cfg, run_dir=tmp_path / "run")
    assert main(["evaluate", str(run_dir), "--episodes", "1", "--gif", str(tmp_path / "gifs")]) == 0
    assert sorted(p.name for p in (tmp_path / "gifs").iterdir()) == ["CartPole-v1.gif", "long-pole.gif"]
    assert capsys.readouterr().out.count("a greedy episode of") == 2
