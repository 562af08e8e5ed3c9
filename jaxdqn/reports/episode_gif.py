"""One greedy episode per task, drawn as a GIF (``jaxdqn evaluate RUN --gif DIR``).

Frames are drawn from observations: MinAtar's channels in colours, CartPole,
Acrobot and MountainCar as a picture of their state, Atari frames as envpool
gives them (the newest frame of the stack). Any other observation is drawn as a
bar chart of its numbers. A GIF holds the first observation and the one after
every step, so an episode of ``n`` steps has ``n + 1`` frames; a strip under each
frame gives its step number in binary.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn import losses

# One colour per MinAtar channel (RGB), cycled for games with more channels.
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    np.uint8,
)
CELL = 16  # pixels per MinAtar cell


def draw_minatar(obs: np.ndarray) -> np.ndarray:
    """``[10, 10, C]`` channels -> RGB, the highest-numbered channel on top, black where none is set."""
    obs = np.asarray(obs).astype(bool)
    image = np.zeros(obs.shape[:2] + (3,), np.uint8)
    for c in range(obs.shape[-1]):
        image[obs[..., c]] = PALETTE[c % len(PALETTE)]
    return np.kron(image, np.ones((CELL, CELL, 1), np.uint8))


def _canvas(height: int = 120, width: int = 200) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def _segment(image: np.ndarray, p: tuple[float, float], q: tuple[float, float], colour, width: int = 2) -> None:
    """A line from ``p`` to ``q`` (x, y in pixels, y down), drawn as dots."""
    steps = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 1
    for t in np.linspace(0.0, 1.0, steps + 1):
        x, y = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
        image[
            max(0, int(y) - width // 2) : int(y) + width - width // 2, max(0, int(x) - width // 2) : int(x) + width - width // 2
        ] = colour


def draw_cartpole(obs: np.ndarray) -> np.ndarray:
    """Cart position ``x`` (the track spans +-2.4) and pole angle ``theta``."""
    image = _canvas()
    x, theta = float(obs[0]), float(obs[2])
    cx, cy = 100 + x / 2.4 * 90, 90
    image[92:94, :] = 0  # track
    image[int(cy) - 6 : int(cy) + 6, max(0, int(cx) - 12) : int(cx) + 12] = (60, 60, 60)
    _segment(image, (cx, cy - 6), (cx + 60 * math.sin(theta), cy - 6 - 60 * math.cos(theta)), (200, 120, 40), 4)
    return image


def draw_acrobot(obs: np.ndarray) -> np.ndarray:
    """Two links from a pivot, angles from ``(cos t1, sin t1, cos t2, sin t2)``."""
    image = _canvas(160, 160)
    t1, t2 = math.atan2(obs[1], obs[0]), math.atan2(obs[3], obs[2])
    pivot = (80.0, 70.0)
    elbow = (pivot[0] + 35 * math.sin(t1), pivot[1] + 35 * math.cos(t1))
    tip = (elbow[0] + 35 * math.sin(t1 + t2), elbow[1] + 35 * math.cos(t1 + t2))
    image[34:36, :] = (180, 180, 180)  # the height the tip must reach
    _segment(image, pivot, elbow, (0, 90, 200), 4)
    _segment(image, elbow, tip, (0, 160, 90), 4)
    return image


def _hill_px(x: float, y: float) -> tuple[float, float]:
    return 10 + (x + 1.2) / 1.8 * 180, 100 - (y + 1) * 40


@functools.lru_cache(maxsize=1)
def _hill() -> np.ndarray:
    image = _canvas()
    xs = np.linspace(-1.2, 0.6, 60)
    for a, b in zip(xs[:-1], xs[1:]):
        _segment(image, _hill_px(a, math.sin(3 * a)), _hill_px(b, math.sin(3 * b)), (90, 90, 90), 2)
    flag = _hill_px(0.5, math.sin(1.5))
    _segment(image, flag, (flag[0], flag[1] - 15), (200, 0, 0), 2)
    return image


def draw_mountaincar(obs: np.ndarray) -> np.ndarray:
    """The car at ``position`` on the hill ``y = sin(3 x)``, ``x`` in [-1.2, 0.6]."""
    image = _hill().copy()
    car = _hill_px(float(obs[0]), math.sin(3 * float(obs[0])))
    image[int(car[1]) - 8 : int(car[1]), max(0, int(car[0]) - 6) : int(car[0]) + 6] = (0, 90, 200)
    return image


def draw_numbers(obs: np.ndarray) -> np.ndarray:
    """Any vector observation: one bar per number, scaled by the largest magnitude."""
    values = np.asarray(obs, float).ravel()
    image = _canvas()
    scale = max(1e-6, float(np.abs(values).max()))
    width = max(1, 190 // max(1, len(values)))
    for i, v in enumerate(values):
        top, bottom = sorted((60, int(60 - 50 * v / scale)))
        image[top : bottom + 1, 5 + i * width : 5 + (i + 1) * width - 1] = (0, 90, 200)
    return image


def draw_atari(obs: np.ndarray, frame_channels: int) -> np.ndarray:
    """The newest frame of a ``[stack * channels, H, W]`` stack, as it is."""
    frame = np.asarray(obs)[-frame_channels:]
    return np.repeat(frame[0][..., None], 3, axis=-1) if frame_channels == 1 else np.moveaxis(frame, 0, -1)


def drawer(env_id: str, frame_channels: int = 1):
    """The function that draws one observation of ``env_id``."""
    from jaxdqn.envs import envpool_env, pgx_env

    if pgx_env.is_pgx_id(env_id) or env_id.endswith("-MinAtar"):
        return draw_minatar
    if envpool_env.is_atari_id(env_id):
        return lambda obs: draw_atari(obs, frame_channels)
    return {"CartPole-v1": draw_cartpole, "Acrobot-v1": draw_acrobot, "MountainCar-v0": draw_mountaincar}.get(
        env_id, draw_numbers
    )


def _own(obs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A task's own observation out of the padded one."""
    return np.asarray(obs)[tuple(slice(0, d) for d in shape)]


def greedy_episodes(learner, params, tasks, key: jax.Array, max_steps: int) -> list[list[np.ndarray]]:
    """Each task's observations over its first greedy episode (one env per task, pure-JAX tasks)."""
    mask = jnp.asarray(tasks.action_mask)

    @jax.jit
    def step(env_state, obs, keys):
        q = learner.q_values(params, obs)  # [T, 1, A]
        actions = jax.vmap(jax.vmap(losses.masked_argmax, in_axes=(0, None)))(q, mask).astype(jnp.int32)
        return tasks.step(keys, env_state, actions)

    reset_key, key = jax.random.split(key)
    env_state, obs = tasks.reset(jax.random.split(reset_key, tasks.num_tasks))
    shapes = tasks.task_obs_shapes
    frames = [[_own(obs[i, 0], shapes[i])] for i in range(tasks.num_tasks)]
    done = np.zeros(tasks.num_tasks, bool)
    for _ in range(max_steps):
        key, sub = jax.random.split(key)
        env_state, out = step(env_state, obs, jax.random.split(sub, tasks.num_tasks))
        ended = np.asarray(out.terminated | out.truncated)[:, 0]
        next_obs = np.asarray(out.next_obs)
        for i in np.nonzero(~done)[0]:
            frames[i].append(_own(next_obs[i, 0], shapes[i]))
        done |= ended
        obs = out.obs
        if done.all():
            break
    return frames


def atari_episode(learner, params, task_index: int, env_id: str, options, seed: int, max_steps: int) -> list[np.ndarray]:
    """One greedy episode of an Atari task in a one-env envpool pool with the evaluation settings."""
    from jaxdqn.envs.envpool_env import make_pool

    pool = make_pool(env_id, 1, options.for_evaluation(), seed)
    obs, _ = pool.reset()
    frames = [obs[0]]
    q_values = jax.jit(lambda p, o: learner.q_values(p, o))
    num_tasks = learner.num_tasks
    for _ in range(max_steps):
        batch = np.broadcast_to(obs[None], (num_tasks,) + obs.shape)  # every task slot sees this game's frame
        q = np.asarray(q_values(params, jnp.asarray(batch)))[task_index, 0]
        action = int(np.argmax(np.where(np.asarray(learner.action_mask)[task_index], q, -np.inf)))
        obs, _, terminated, truncated, _ = pool.step(np.array([action], np.int32))
        frames.append(obs[0])
        if terminated[0] or truncated[0]:
            break
    return frames


def with_step_strip(image: np.ndarray, step: int, bits: int = 16) -> np.ndarray:
    """The image over a 4-pixel strip that shows the step number in binary (grey cells are ones).

    It also keeps consecutive frames distinct, which GIF writers would otherwise merge.
    """
    strip = np.zeros((4, image.shape[1], 3), np.uint8)
    cell = max(1, min(4, image.shape[1] // bits))
    for b in range(bits):
        if step >> b & 1:
            strip[:, b * cell : (b + 1) * cell] = 160
    return np.concatenate([np.asarray(image, np.uint8), strip], axis=0)


def write_gif(frames: list[np.ndarray], path: Path, fps: int = 15) -> Path:
    """One GIF frame per entry of ``frames`` (each with its step strip)."""
    from PIL import Image

    images = [Image.fromarray(with_step_strip(f, t)) for t, f in enumerate(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def write_episode_gifs(cfg, agent, params, out_dir: Path, seed: int = 0, max_steps: int = 10_000) -> list[tuple[Path, int]]:
    """One GIF per task of a greedy episode -> (path, number of steps) per task."""
    from jaxdqn.agents.build import task_specs
    from jaxdqn.envs import TaskSet

    out_dir.mkdir(parents=True, exist_ok=True)
    learner = agent.learner
    specs = task_specs(cfg)
    if agent.tasks.is_atari:
        options = cfg.atari
        episodes = [atari_episode(learner, params, i, s.env_id, options, seed + i, max_steps) for i, s in enumerate(specs)]
        channels = options.frame_channels
    else:
        tasks = TaskSet(specs, 1)
        episodes = greedy_episodes(learner, params, tasks, jax.random.PRNGKey(seed), max_steps)
        channels = 1
    written = []
    for spec, frames in zip(specs, episodes):
        draw = drawer(spec.env_id, channels)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.label)
        written.append((write_gif([draw(f) for f in frames], out_dir / f"{name}.gif"), len(frames) - 1))
    return written
