#!/usr/bin/env bash
# Two CartPole tasks in hard sharing, task "x100" with rewards x100, with and without PopArt.
# Usage: bash experiments/popart_scale/run.sh   (then: python experiments/popart_scale/summarize.py)
# SEEDS="0 1 2" by default; JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=experiments/popart_scale/runs
for seed in ${SEEDS:-0 1 2}; do
  for popart in false true; do
    dir="$RUNS/popart-${popart}_s${seed}"
    if [ -f "$dir/metrics.csv" ] && grep -q "^200000," "$dir/metrics.csv"; then continue; fi
    rm -rf "$dir"
    echo "== popart=$popart seed $seed"
    ${JAXDQN:-jaxdqn} train experiments/popart_scale/two_cartpoles.yaml dqn.popart=$popart seed=$seed --run-dir "$dir"
    rm -rf "$dir/checkpoints"  # metrics.csv holds the results
  done
done
