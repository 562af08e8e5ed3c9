#!/usr/bin/env bash
# MinAtar-5 at the references' rate on one GPU: a measured first minute, then independent and a
# hard variant one after another at the budget per game that the measured rate fits into BUDGET
# seconds of device time (default 480 s of training, leaving time for start-up and compiling).
#
# Usage: BUDGET=480 HARD=hard_input_ln SEED=1 DEST=DIR bash experiments/minatar5_reference/run_gpu.sh
#        FAMILY=minatar5_pqn ... for PQN (configs/minatar5_pqn_*.yaml; its 128 envs per game).
#   DEST receives each run's metrics.csv and a log of the sizing; output is unbuffered, so what
#   ran before a cut is on the screen.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-480}; HARD=${HARD:-hard}; SEED=${SEED:-1}; FAMILY=${FAMILY:-minatar5_reference}
RUNS=${RUNS:-/tmp/${FAMILY}_gpu}; DEST=${DEST:-$RUNS}
ENVS=${ENVS:-128}   # envs per game; update_every 4 keeps the references' 8 sampled transitions per env step
mkdir -p "$RUNS" "$DEST"
COMMON=(train.num_envs=$ENVS train.progress=false train.tensorboard=false train.checkpoint_every=0)

# 1. The first minute: 80,000 env steps per game of the independent mode; the rate of its later chunks.
jaxdqn train "configs/${FAMILY}_independent.yaml" "${COMMON[@]}" train.total_env_steps=81920 \
  train.log_every=20480 train.eval_every=0 seed=$SEED --run-dir "$RUNS/probe" || exit 1
rate=$(python - "$RUNS/probe/metrics.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["task"] == "mean"]
print(int(sum(float(r["steps_per_sec"]) for r in rows[1:]) / max(1, len(rows) - 1)))
PY
)
# Two runs share BUDGET; steps per game = rate (summed over 5 games) / 5 * BUDGET / 2, in whole 204,800s.
steps=$(( rate * BUDGET / 10 / 204800 * 204800 )); [ "$steps" -lt 204800 ] && steps=204800
echo "measured $rate env steps/s summed over the games; $steps env steps per game for each run" | tee "$DEST/sizing.txt"

# 2. independent, then the hard variant, at that budget.
for variant in independent "$HARD"; do
  FAMILY=$FAMILY RUNS=$RUNS STEPS=$steps OVERRIDES="${COMMON[*]} train.log_every=102400 train.eval_every=204800 ${OVERRIDES:-}" \
    bash experiments/minatar5_reference/run.sh "$variant:$SEED"
  cp "$RUNS/${variant}_s$SEED/metrics.csv" "$DEST/${variant}_s$SEED.csv"
  echo "$variant seed $SEED: $(cat "$RUNS/${variant}_s$SEED/wall_time.txt") s"
done
