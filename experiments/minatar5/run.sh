#!/usr/bin/env bash
# Five MinAtar games, independent vs hard vs soft sharing, 2 seeds, the same env steps per task.
# Budget: 64k env steps per game per run (6 runs), 64 envs per game; about 40 minutes on a 2-core CPU.
# Usage: bash experiments/minatar5/run.sh   (then: python experiments/minatar5/summarize.py)
# JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=experiments/minatar5/runs
COMMON=(
  train.total_env_steps=64000 train.num_envs=64 train.log_every=6400
  train.eval_every=32000 train.eval_episodes=5 train.checkpoint_every=0 train.keep_checkpoints=1
  train.tensorboard=false train.progress=false
  dqn.update_every=4 dqn.learning_starts=5000 dqn.epsilon_decay_steps=32000 dqn.replay_capacity=50000
)
for seed in 0 1; do
  for mode in independent hard soft; do
    dir="$RUNS/${mode}_s${seed}"
    if [ -f "$dir/metrics.csv" ] && grep -q "^64000," "$dir/metrics.csv"; then continue; fi
    rm -rf "$dir"
    echo "== $mode seed $seed"
    ${JAXDQN:-jaxdqn} train "configs/minatar5_${mode}.yaml" "${COMMON[@]}" seed=$seed --run-dir "$dir"
    rm -rf "$dir/checkpoints"  # the replay inside is large; metrics.csv holds the results
  done
done
