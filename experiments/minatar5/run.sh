#!/usr/bin/env bash
# Five MinAtar games, independent vs hard vs soft sharing, 2 seeds, the same env steps per task.
# Budget: 100k env steps per game per run (6 runs), sized to about an hour on a 2-core CPU.
# Usage: bash experiments/minatar5/run.sh   (then: python experiments/minatar5/summarize.py)
# JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=experiments/minatar5/runs
COMMON=(
  train.total_env_steps=100000 train.num_envs=8 train.log_every=10000
  train.eval_every=50000 train.eval_episodes=5 train.checkpoint_every=0 train.keep_checkpoints=1
  train.tensorboard=false train.progress=false
  dqn.update_every=4 dqn.learning_starts=5000 dqn.epsilon_decay_steps=50000 dqn.replay_capacity=50000
)
for seed in 0 1; do
  for mode in independent hard soft; do
    dir="$RUNS/${mode}_s${seed}"
    if [ -f "$dir/metrics.csv" ] && grep -q "^100000," "$dir/metrics.csv"; then continue; fi
    rm -rf "$dir"
    echo "== $mode seed $seed"
    ${JAXDQN:-jaxdqn} train "configs/minatar5_${mode}.yaml" "${COMMON[@]}" seed=$seed --run-dir "$dir"
    rm -rf "$dir/checkpoints"  # the replay inside is large; metrics.csv holds the results
  done
done
