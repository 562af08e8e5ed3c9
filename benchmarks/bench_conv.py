"""Convolution forms inside a compiled loop: XLA's convolution vs patches + matmul.

The training step runs inside ``lax.scan``; this measures one gradient step of
the MinAtar and Nature CNN Q-networks inside a ``fori_loop`` with each form.
``NetworkSpec.conv_impl = "auto"`` picks patches on CPU and XLA's convolution
elsewhere from these figures.

Usage: ``python benchmarks/bench_conv.py``; writes ``benchmarks/results/conv_<backend>.json`` / ``.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxdqn.networks import NetworkSpec, QNetwork

CASES = {"minatar_cnn": ((32, 10, 10, 10), jnp.float32), "nature_cnn": ((32, 4, 84, 84), jnp.uint8)}


def time_gradient_steps(torso: str, conv_impl: str, steps: int = 20) -> float:
    shape, dtype = CASES[torso]
    obs = jnp.zeros(shape, dtype)
    net = QNetwork(NetworkSpec(torso=torso, conv_impl=conv_impl), 6)
    params = net.init(jax.random.PRNGKey(0), obs)

    def loss(p):
        return (net.apply(p, obs) ** 2).mean()

    @jax.jit
    def loop(p):
        def body(i, p):
            return jax.tree_util.tree_map(lambda w, g: w - 1e-4 * g, p, jax.grad(loss)(p))

        return jax.lax.fori_loop(0, steps, body, p)

    jax.block_until_ready(loop(params))
    started = time.perf_counter()
    jax.block_until_ready(loop(params))
    return (time.perf_counter() - started) / steps


def main() -> None:
    rows = []
    for torso in CASES:
        row = {"torso": torso, "batch": CASES[torso][0][0]}
        for impl in ("xla", "patches"):
            row[f"{impl}_ms"] = round(1e3 * time_gradient_steps(torso, impl), 3)
        row["xla_over_patches"] = round(row["xla_ms"] / row["patches_ms"], 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    backend = jax.default_backend()
    out = Path(__file__).parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"conv_{backend}.json").write_text(json.dumps({"backend": backend, "jax": jax.__version__, "rows": rows}, indent=2))
    lines = [
        f"One gradient step inside a compiled loop ({backend}, jax {jax.__version__}); milliseconds per step.",
        "",
        "| network | batch | XLA conv (ms) | patches + matmul (ms) | XLA / patches |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['torso']} | {r['batch']} | {r['xla_ms']} | {r['patches_ms']} | {r['xla_over_patches']}x |" for r in rows]
    (out / f"conv_{backend}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
