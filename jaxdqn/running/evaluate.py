"""Evaluation: episodes with a greedy (or epsilon) policy, compiled or host-stepped.

The one place that plays evaluation episodes, for training, distillation,
transfer and ``jaxdqn evaluate``:

- :func:`play_episodes`: one compiled ``while_loop`` over T tasks' envs;
- :class:`HostEvaluation`: the same for Atari pools stepped by the host;
- :class:`Evaluator`: a run's evaluation (its own env pools, its epsilon, keys
  that depend only on the seed and the env step);
- :func:`evaluate_checkpoint`: loads a checkpoint and plays it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.envs import atari_scores as atari
from jaxdqn.io import checkpoint
from jaxdqn.parallel import distributed
from jaxdqn.running import stored
from jaxdqn import config as config_lib
from jaxdqn.agents.build import RecentlyBuilt, build_agent, build_eval_tasks, eval_epsilon, reuse_key
from jaxdqn.agents.learner import epsilon_greedy
from jaxdqn.config import Config
from jaxdqn.envs import TaskSet
from jaxdqn.running.runners import observe_envpool, reset_atari


def play_episodes(learner, tasks: TaskSet, params, keys: jax.Array, epsilon: float) -> jax.Array:
    """Returns ``[T, E]`` of one episode in each of ``tasks.num_envs`` (= E) envs per task.

    Episodes end at termination or at the env's time limit; envs that finish
    early stop counting reward while the others play on.
    """
    mask = jnp.asarray(tasks.action_mask)
    reset_keys, loop_keys = jax.vmap(lambda k: jax.random.split(k, 2), out_axes=1)(keys)
    env_state, obs = tasks.reset(reset_keys)
    shape = (tasks.num_tasks, tasks.num_envs)

    def cond(carry):
        *_, finished, t = carry
        return jnp.logical_and(t < tasks.max_steps, jnp.logical_not(finished.all()))

    def body(carry):
        env_state, obs, keys, returns, finished, t = carry
        split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
        keys, act_keys, env_keys = split[:, 0], split[:, 1], split[:, 2]
        q = learner.q_values(params, obs)
        actions = jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(act_keys, q, epsilon, mask)
        env_state, step = tasks.step(env_keys, env_state, actions)
        returns = returns + jnp.where(finished, 0.0, step.reward)
        finished = finished | step.terminated | step.truncated
        return env_state, step.obs, keys, returns, finished, t + 1

    carry = (env_state, obs, loop_keys, jnp.zeros(shape), jnp.zeros(shape, bool), 0)
    return jax.lax.while_loop(cond, body, carry)[3]


class HostEvaluation:
    """:func:`play_episodes` for Atari pools stepped by the host: ``(params, keys)`` ->
    ``[T, E]`` returns of one episode in each of the ``E`` envs per task (the first
    episode each env plays; envs that finish early play on without counting)."""

    def __init__(self, learner, tasks: TaskSet, epsilon: float):
        self.tasks = tasks
        mask = jnp.asarray(tasks.action_mask)

        def policy(params, obs, keys):
            split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
            keys, act_keys = split[:, 0], split[:, 1]
            q = learner.q_values(params, obs)
            return keys, jax.vmap(epsilon_greedy, in_axes=(0, 0, None, 0))(act_keys, q, epsilon, mask)

        def observe(env_states, raws):
            env_states, step = observe_envpool(tasks, env_states, raws)
            return env_states, step.obs, step.reward, jnp.logical_or(step.terminated, step.truncated)

        self._policy = jax.jit(policy)
        self._observe = jax.jit(observe)

    def __call__(self, params, keys: jax.Array) -> jax.Array:
        tasks = self.tasks
        env_states, obs = reset_atari(tasks)
        shape = (tasks.num_tasks, tasks.num_envs)
        returns, finished = np.zeros(shape, np.float64), np.zeros(shape, bool)
        for _ in range(tasks.max_steps):
            keys, actions = self._policy(params, obs, keys)
            host_actions = np.asarray(actions)
            for group, sl in tasks.groups:
                group.host_send(host_actions[sl])
            raws = tuple(group.host_recv() for group, _ in tasks.groups)
            env_states, obs, reward, ended = self._observe(env_states, raws)
            returns += np.where(finished, 0.0, np.asarray(reward))
            finished |= np.asarray(ended)
            if finished.all():
                break
        return jnp.asarray(returns, jnp.float32)


def make_evaluation(learner, tasks: TaskSet, epsilon: float):
    """``(params, keys) -> returns [T, E]``: compiled, or host-stepped for host-stepped Atari pools."""
    if tasks.is_atari and tasks.atari.stepping == "host":
        return HostEvaluation(learner, tasks, epsilon)
    return jax.jit(lambda params, keys: play_episodes(learner, tasks, params, keys, epsilon))


_evaluations = RecentlyBuilt()


def _evaluation(cfg: Config, learner):
    """``(eval tasks, epsilon, compiled evaluation)``, reused for the same learner and an
    equal config (see :func:`jaxdqn.agents.build.reuse_key`), as agents are."""

    def build():
        tasks = build_eval_tasks(cfg)
        epsilon = eval_epsilon(cfg, tasks)
        return tasks, epsilon, make_evaluation(learner, tasks, epsilon)

    key = reuse_key(cfg)
    if key is None or not _hashable(learner):
        return build()
    return _evaluations.get((learner, key), build)  # the key holds the learner: its id is never reused


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class Evaluator:
    """Compiled evaluation of every task, ``train.eval_episodes`` episodes each."""

    def __init__(self, cfg: Config, policy):
        """``policy``: a system (its learner plays) or anything with ``q_values(params, obs)``
        (a learner, or a teacher set, whose ``params`` argument is ignored)."""
        self.learner = getattr(policy, "learner", policy)
        self.seed = cfg.seed
        # compiled, or stepped by the host for Atari pools that step on the host
        self.tasks, self.epsilon, self._run = _evaluation(cfg, self.learner)

    def __call__(self, params, env_steps: int) -> np.ndarray:
        """Returns ``[T, episodes]``; the keys depend only on the seed and the step."""
        base = jax.random.fold_in(jax.random.PRNGKey(self.seed), 0x5EED)
        keys = jax.random.split(jax.random.fold_in(base, env_steps), self.tasks.num_tasks)
        return np.asarray(distributed.fetch(self._run(params, keys)))  # every process gets every task's returns


@dataclasses.dataclass
class EvalResult:
    labels: list[str]
    returns: np.ndarray  # [T, episodes]
    env_steps: int
    env_ids: list[str] | None = None  # set for Atari runs: adds human-normalised scores

    @property
    def atari_scores(self) -> atari.AtariScores | None:
        if not self.env_ids:
            return None
        return atari.score(self.env_ids, self.returns)

    def summary(self) -> str:
        scores = self.atari_scores
        if scores is not None:
            return self._atari_summary(scores)
        lines = [f"{'task':<24} {'mean':>10} {'std':>10} {'episodes':>9}"]
        for label, r in zip(self.labels, self.returns):
            lines.append(f"{label:<24} {r.mean():>10.2f} {r.std():>10.2f} {r.size:>9d}")
        if len(self.labels) > 1:
            means = self.returns.mean(axis=1)
            lines.append(f"{'mean over tasks':<24} {means.mean():>10.2f}")
        return "\n".join(lines)

    def _atari_summary(self, scores: atari.AtariScores) -> str:
        lines = [f"{'task':<24} {'mean':>10} {'std':>10} {'episodes':>9} {'human-norm':>11}"]
        for label, r, hns in zip(self.labels, self.returns, scores.normalized):
            lines.append(f"{label:<24} {r.mean():>10.2f} {r.std():>10.2f} {r.size:>9d} {hns:>11.3f}")
        lines.append(f"{'mean over tasks':<24} {scores.raw.mean():>10.2f} {'':>10} {'':>9} {scores.mean:>11.3f}")
        lines.append(f"{'median over tasks':<24} {np.median(scores.raw):>10.2f} {'':>10} {'':>9} {scores.median:>11.3f}")
        return "\n".join(lines)


def load_checkpoint(path, episodes: int = 10, epsilon: float | None = 0.0, seed: int | None = None):
    """A checkpoint (run dir, checkpoints dir or step dir) -> (config, agent, online params, meta).

    Any checkpoint ``jaxdqn`` writes: training, distillation (the student) and
    transfer runs, progressive networks included (their frozen columns are
    loaded from the source checkpoints their metadata names). ``episodes``,
    ``epsilon`` and ``seed`` set the evaluation protocol of the returned config.
    """
    meta = checkpoint.read_meta(path)
    data = meta["config"]
    data["train"] = {**data["train"], "eval_episodes": episodes}
    if epsilon is not None:
        data["train"]["eval_epsilon"] = epsilon
        data["atari"] = {**data.get("atari", {}), "eval_epsilon": epsilon}
    if seed is not None:
        data["seed"] = seed
    cfg = config_lib.from_dict(data, strict=False)  # as the run stored it
    agent = build_agent(cfg)
    if stored.is_progressive(meta):  # the new column over its frozen source columns
        agent = dataclasses.replace(agent, learner=stored.stored_learner(meta, cfg, agent.tasks, str(path)))
    params, meta = stored.online_params(path, cfg, agent.learner, agent.tasks)
    return cfg, agent, params, meta


def evaluate_checkpoint(path, episodes: int = 10, epsilon: float | None = 0.0, seed: int | None = None) -> EvalResult:
    """Loads a checkpoint (see :func:`load_checkpoint`) and plays ``episodes`` per task.

    ``epsilon`` applies to every task, Atari included; ``None`` keeps the run's own
    setting (``atari.eval_epsilon``, 0.05 by default, for Atari tasks).
    """
    cfg, agent, params, meta = load_checkpoint(path, episodes, epsilon, seed)
    returns = Evaluator(cfg, agent)(params, int(meta["env_steps"]) + 1)
    env_ids = [t.env_id for t in agent.tasks.tasks] if agent.tasks.is_atari else None
    return EvalResult(agent.tasks.labels, returns, int(meta["env_steps"]), env_ids)
