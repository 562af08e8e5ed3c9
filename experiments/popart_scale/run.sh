#!/usr/bin/env bash
# Two CartPole tasks in hard sharing, task "x100" with rewards x100, with and without PopArt,
# and a control without the scaling (both tasks raw, no PopArt).
# Usage: bash experiments/popart_scale/run.sh   (then: python experiments/popart_scale/summarize.py)
# SEEDS="0 1 2" by default; JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=experiments/popart_scale/runs
declare -A SETTINGS=(
  [popart-false]="dqn.popart=false"
  [popart-true]="dqn.popart=true"
  [unscaled]="dqn.popart=false tasks.1.reward_scale=1.0"
)
for seed in ${SEEDS:-0 1 2}; do
  for setting in popart-false popart-true unscaled; do
    dir="$RUNS/${setting}_s${seed}"
    if [ -f "$dir/metrics.csv" ] && grep -q "^200000," "$dir/metrics.csv"; then continue; fi
    rm -rf "$dir"
    echo "== $setting seed $seed"
    # shellcheck disable=SC2086
    ${JAXDQN:-jaxdqn} train experiments/popart_scale/two_cartpoles.yaml ${SETTINGS[$setting]} seed=$seed --run-dir "$dir"
    rm -rf "$dir/checkpoints"  # metrics.csv holds the results
  done
done
