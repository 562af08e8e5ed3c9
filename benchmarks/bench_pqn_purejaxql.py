"""PQN side by side: jaxdqn's PQN system and purejaxql's own scripts, same machine, same jax,
one after the other.

purejaxql (``mttga/purejaxql``, Gallici et al. 2024) is read from a checkout given with
``--purejaxql`` (nothing of it is stored here). Its ``make_train(config)`` is called with its
own alg config (``purejaxql/config/alg/pqn_cartpole.yaml``, ``pqn_minatar.yaml``), changed
only in the budget (``TOTAL_TIMESTEPS`` and ``TOTAL_TIMESTEPS_DECAY`` together, so its
decays keep their shape), the seed, ``NUM_SEEDS: 1``, ``WANDB_MODE: disabled`` and
``TEST_INTERVAL: 1.0``: its greedy test (128 envs for one episode length) then runs at the
start and after the last update only, instead of every 5% of the updates; both tests are
inside its timed call, which therefore holds about ``2 x 128 x episode length`` greedy env
steps more than jaxdqn's (whose final evaluation is timed apart). Its
scripts import hydra, omegaconf and wandb at module level for their command-line entry
points; where those are not installed, empty stand-in modules are registered (the training
function never calls them with W&B disabled). Source patches for API breakage are listed in
``PATCHES`` and applied to a copy in memory; the run's JSON records which were applied.

jaxdqn runs ``configs/cartpole_pqn.yaml`` / ``configs/minatar_breakout_pqn.yaml`` (the same
settings, written as jaxdqn config) at the same budget, its loop compiled in chunks of 5% of
the budget (purejaxql's test interval), and evaluates the final parameters greedily on 128
episodes (purejaxql: 128 test envs, greedy, for one episode length).

Measured per run: compile time, env steps/s of the compiled training (compile excluded) and
the final greedy return.

Usage::

    python benchmarks/bench_pqn_purejaxql.py --purejaxql /path/to/purejaxql --seeds 0 1 2 3

Writes ``benchmarks/results/pqn_purejaxql_<backend>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

# env id -> (purejaxql script, its alg config, jaxdqn config, purejaxql's EPS_DECAY: the share of
# the budget over which epsilon decays)
SETUPS = {
    "CartPole-v1": ("pqn_gymnax.py", "pqn_cartpole.yaml", "configs/cartpole_pqn.yaml", 0.2),
    "Breakout-MinAtar": ("pqn_minatar.py", "pqn_minatar.yaml", "configs/minatar_breakout_pqn.yaml", 0.1),
}

# (script, old text, new text, why): API breakage only, never the training math.
_GYMNAX_1_STEP = """    env = LogWrapper(env)

    def _step_as_before(rng, state, action, params):
        obs, state, reward, terminated, truncated, info = env.step(rng, state, action, params)
        info = {k: v for k, v in info.items() if k != "final_observation"}
        return obs, state, reward, jnp.logical_or(terminated, truncated), info
"""
_WHY_STEP = (
    "gymnax 1.0's step returns (obs, state, reward, terminated, truncated, info): the script's step is "
    "wrapped to return done = terminated or truncated, and its info without the new final_observation "
    "(the scripts average every info entry over envs), as gymnax 0.0.x did"
)
PATCHES: list[tuple[str, str, str, str]] = [
    (script, old, new, _WHY_STEP)
    for script in ("pqn_gymnax.py", "pqn_minatar.py")
    for old, new in (
        ("    env = LogWrapper(env)\n", _GYMNAX_1_STEP),
        ("        env.step, in_axes=(0, 0, 0, None)", "        _step_as_before, in_axes=(0, 0, 0, None)"),
    )
]


def _stub_missing(names=("hydra", "omegaconf", "wandb", "safetensors", "safetensors.flax")) -> list[str]:
    """Registers empty stand-ins for imports of the scripts' entry points (command line, W&B,
    saving parameters) that are not installed."""
    stubbed = []
    for name in names:
        parent = name.split(".")[0]
        if parent not in sys.modules and importlib.util.find_spec(parent) is not None:
            continue
        module = types.ModuleType(name)
        if name == "safetensors.flax":
            module.load_file = module.save_file = None
            setattr(sys.modules["safetensors"], "flax", module)
        if name == "hydra":
            module.main = lambda **_: lambda fn: fn
        if name == "omegaconf":
            module.OmegaConf = type("OmegaConf", (), {})
        sys.modules[name] = module
        stubbed.append(name)
    return stubbed


def load_purejaxql(checkout: Path, script: str):
    """purejaxql's script as a module, with ``PATCHES`` applied in memory."""
    source = (checkout / "purejaxql" / script).read_text()
    applied = []
    for name, old, new, why in PATCHES:
        if name == script and old in source:
            source = source.replace(old, new)
            if why not in applied:
                applied.append(why)
    module = types.ModuleType(f"purejaxql_{script[:-3]}")
    module.__file__ = str(checkout / "purejaxql" / script)
    sys.modules[module.__name__] = module  # dataclasses look their module up
    sys.path.insert(0, str(checkout))
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module, applied


def run_purejaxql(checkout: Path, env_id: str, seed: int, steps: int) -> dict:
    script, alg, _, _ = SETUPS[env_id]
    module, applied = load_purejaxql(checkout, script)
    config = yaml.safe_load((checkout / "purejaxql" / "config" / "alg" / alg).read_text())
    config.update(
        ENV_NAME=env_id,
        TOTAL_TIMESTEPS=steps,
        TOTAL_TIMESTEPS_DECAY=steps,
        NUM_SEEDS=1,
        SEED=seed,
        WANDB_MODE="disabled",
        TEST_INTERVAL=1.0,  # greedy tests at the start and after the last update only, not every 5%
    )
    train = jax.jit(module.make_train(config))
    rng = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = train.lower(rng).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(rng))
    run_s = time.perf_counter() - start
    tests = np.asarray(out["metrics"]["test/returned_episode_returns"])
    done = int(np.asarray(out["metrics"]["env_step"])[-1])
    return {
        "compile_s": compile_s,
        "run_s": run_s,
        "env_steps": done,
        "env_steps_per_s": done / run_s,
        "final_greedy_return": float(tests[-1]),
        "patches": applied,
    }


def run_jaxdqn(env_id: str, seed: int, steps: int) -> dict:
    from jaxdqn import config as config_lib
    from jaxdqn.agents.build import build_agent, task_keys
    from jaxdqn.running.evaluate import Evaluator

    decay = int(SETUPS[env_id][3] * steps)
    overrides = [f"seed={seed}", f"train.total_env_steps={steps}", "train.eval_episodes=128", f"dqn.epsilon_decay_steps={decay}"]
    cfg = config_lib.load(ROOT / SETUPS[env_id][2], overrides)
    agent = build_agent(cfg)
    iterations = steps // cfg.train.num_envs
    chunk = max(1, iterations // 20)
    state = agent.init(task_keys(cfg))
    run = type(agent).run
    start = time.perf_counter()
    compiled = run.lower(agent, state, chunk).compile()
    rest = iterations % chunk
    compiled_rest = run.lower(agent, state, rest).compile() if rest else None
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iterations // chunk):
        state, _ = compiled(state)
    if compiled_rest is not None:
        state, _ = compiled_rest(state)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - start
    returns = Evaluator(cfg, agent)(state.params, int(state.env_steps))
    done = int(state.env_steps)
    return {
        "compile_s": compile_s,
        "run_s": run_s,
        "env_steps": done,
        "env_steps_per_s": done / run_s,
        "final_greedy_return": float(np.asarray(returns).mean()),
    }


def summary_table(runs: list[dict]) -> str:
    lines = [
        "| env | system | seeds | env steps | env steps/s | compile s | final greedy return |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = sorted({(r["env"], r["system"]) for r in runs})
    for env_id, system in keys:
        rs = [r for r in runs if r["env"] == env_id and r["system"] == system]
        rate = np.array([r["env_steps_per_s"] for r in rs])
        comp = np.array([r["compile_s"] for r in rs])
        ret = np.array([r["final_greedy_return"] for r in rs])
        lines.append(
            f"| {env_id} | {system} | {len(rs)} | {rs[0]['env_steps']:,} | {rate.mean():,.0f} ± {rate.std():,.0f} "
            f"| {comp.mean():.1f} | {ret.mean():.1f} ± {ret.std():.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purejaxql", type=Path, required=True, help="a checkout of mttga/purejaxql")
    parser.add_argument("--envs", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--steps", nargs="+", type=int, default=[500_000, 2_000_000], help="budget per env, in --envs order")
    parser.add_argument("--systems", nargs="+", default=["purejaxql", "jaxdqn"], choices=["purejaxql", "jaxdqn"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    stubbed = _stub_missing()
    stubbed = sorted(set(stubbed))
    name = f"pqn_purejaxql_{jax.default_backend()}"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    for env_id, steps in zip(args.envs, args.steps):
        for seed in args.seeds:
            for system in args.systems:
                if any(
                    r["env"] == env_id and r["system"] == system and r["seed"] == seed and r["env_steps"] >= steps * 0.99
                    for r in runs
                ):
                    continue  # measured already: resume where an interrupted benchmark stopped
                print(f"== {env_id} seed {seed}: {system}", flush=True)
                if system == "purejaxql":
                    result = run_purejaxql(args.purejaxql, env_id, seed, steps)
                else:
                    result = run_jaxdqn(env_id, seed, steps)
                result.update(env=env_id, system=system, seed=seed, date=time.strftime("%Y-%m-%d"))
                print(json.dumps(result), flush=True)
                runs.append(result)
                meta = {
                    "jax": jax.__version__,
                    "backend": jax.default_backend(),
                    "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {len(jax.devices())} device(s)",
                    "stubbed_modules": stubbed,
                }
                path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    table = summary_table(runs)
    (args.out / f"{name}.md").write_text(f"# PQN: jaxdqn beside purejaxql ({jax.default_backend()})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
