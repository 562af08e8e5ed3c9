"""The soft-sharing penalty's value and gradient: jaxdqn's form against the plain jnp one.

``lambda * sum_{i!=j} ||theta_i - theta_j||^2 = lambda * 2T sum_i ||theta_i - mean||^2``. The plain
form takes the mean with ``jnp.mean(axis=0)`` and lets jax differentiate it; XLA:CPU reduces over
a leading axis slowly, forwards and backwards. ``jaxdqn.losses.soft_sharing_penalty`` sums the T
slices and gives the derivative ``4 lambda T (theta_i - mean)`` itself. Measured on the MinAtar CNN
parameters of five tasks (the soft mode of configs/minatar5_reference_soft.yaml), and on one DQN
gradient step of that config in soft and independent mode.

Usage: ``python benchmarks/bench_soft_penalty.py``; writes ``benchmarks/results/soft_penalty_<backend>.json`` / ``.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn import config, losses
from jaxdqn.agents.build import build_agent, task_keys
from jaxdqn.replay.uniform import Transition


def plain_penalty(params, lam: float):
    total = 0.0
    for leaf in jax.tree_util.tree_leaves(params):
        centred = leaf - jnp.mean(leaf, axis=0, keepdims=True)
        total = total + 2.0 * leaf.shape[0] * jnp.sum(jnp.square(centred))
    return lam * total


def milliseconds(fn, *args, repeats: int = 50) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1e3


def update_ms(mode: str) -> float:
    cfg = config.load(f"configs/minatar5_reference_{mode}.yaml", ["train.progress=false", "train.tensorboard=false"])
    agent = build_agent(cfg)
    state = agent.init(task_keys(cfg))
    rng = np.random.default_rng(0)
    shape = state.obs.shape[:1] + (32,)
    obs = jnp.asarray(rng.random(shape + state.obs.shape[2:]) < 0.1, state.obs.dtype)
    batch = Transition(
        obs,
        jnp.asarray(rng.integers(0, 3, shape), jnp.int32),
        jnp.zeros(shape),
        obs,
        jnp.zeros(shape, bool),
        jnp.zeros(shape, bool),
    )
    update = jax.jit(agent.learner.update)
    return milliseconds(lambda p, o: update(p, state.target_params, o, batch)[0], state.params, state.opt_state)


def main() -> None:
    cfg = config.load("configs/minatar5_reference_soft.yaml", ["train.progress=false"])
    params = build_agent(cfg).init(task_keys(cfg)).params
    lam = cfg.multitask.soft_lambda
    rows = {
        "penalty value+grad, plain jnp (ms)": milliseconds(jax.jit(jax.value_and_grad(lambda p: plain_penalty(p, lam))), params),
        "penalty value+grad, jaxdqn (ms)": milliseconds(
            jax.jit(jax.value_and_grad(lambda p: losses.soft_sharing_penalty(p, lam))), params
        ),
        "DQN update, soft (ms)": update_ms("soft"),
        "DQN update, independent (ms)": update_ms("independent"),
    }
    backend = jax.default_backend()
    out = Path(__file__).parent / "results" / f"soft_penalty_{backend}"
    out.with_suffix(".json").write_text(json.dumps({"backend": backend, "jax": jax.__version__, **rows}, indent=1))
    table = ["| what | ms |", "| --- | ---: |"] + [f"| {k.removesuffix(' (ms)')} | {v:.2f} |" for k, v in rows.items()]
    out.with_suffix(".md").write_text(
        f"Soft-sharing penalty, MinAtar CNN x 5 tasks, {backend}, jax {jax.__version__}\n\n" + "\n".join(table) + "\n"
    )
    print("\n".join(table))


if __name__ == "__main__":
    main()
