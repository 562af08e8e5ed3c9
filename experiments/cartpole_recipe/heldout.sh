#!/usr/bin/env bash
# The chosen recipe, single-task, on seeds nobody tuned on: one `jaxdqn train` per seed,
# then the final greedy return (20 episodes, epsilon 0) from each run's metrics.csv.
# Usage: bash experiments/cartpole_recipe/heldout.sh [FIRST_SEED] [LAST_SEED] [RUN_ROOT]
set -euo pipefail
first=${1:-10}; last=${2:-19}; root=${3:-runs/cartpole_heldout}
mkdir -p "$root"
for seed in $(seq "$first" "$last"); do
  start=$(date +%s)
  jaxdqn train configs/cartpole_dqn.yaml seed="$seed" train.progress=false train.tensorboard=false \
    --run-dir "$root/seed$seed" > "$root/seed$seed.log" 2>&1 || { cat "$root/seed$seed.log"; exit 1; }
  python - "$root/seed$seed/metrics.csv" "$seed" "$(( $(date +%s) - start ))" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["task"] != "mean" and r["eval_return"]]
last = rows[-1]
print(f"seed {sys.argv[2]}: env steps {last['env_steps']}, greedy return {float(last['eval_return']):.1f}, {sys.argv[3]} s", flush=True)
PY
done
