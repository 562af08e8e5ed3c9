#!/usr/bin/env bash
# CartPole-v1, Acrobot-v1 and MountainCar-v0 trained together (configs/classic3.yaml):
# independent, hard sharing with per-task input layers, hard sharing through padding.
#
# Usage: bash experiments/classic3/run.sh tuning     seeds 0-4 (settings are chosen on these)
#        bash experiments/classic3/run.sh report     seeds 10-19 (reported; not looked at before the choice)
#        bash experiments/classic3/run.sh VARIANT:SEED ...
# VARIANT: independent hard_input hard
# A finished run is skipped; each run directory records its commit and wall time.
# Environment: RUNS, STEPS (env steps per task), OVERRIDES, COMMIT.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-experiments/classic3/runs}
STEPS=${STEPS:-100000}
VARIANTS="independent hard_input hard"

run_one() {
  local variant=$1 seed=$2 extra=()
  case $variant in
    independent) ;;
    hard_input) extra=(multitask.mode=hard network.task_input_layers=true) ;;
    hard) extra=(multitask.mode=hard) ;;
    *) echo "unknown variant $variant" >&2; return 2 ;;
  esac
  local dir="$RUNS/${variant}_s${seed}"
  if [ -f "$dir/wall_time.txt" ]; then echo "== $variant seed $seed: done"; return 0; fi
  rm -rf "$dir"; mkdir -p "$dir"
  echo "${COMMIT:-$(git rev-parse HEAD)$(git diff --quiet HEAD -- jaxdqn configs || echo ' (with uncommitted changes)')}" > "$dir/commit.txt"
  echo "== $variant seed $seed ($(date -u +%FT%TZ))"
  local start=$SECONDS
  ${JAXDQN:-jaxdqn} train configs/classic3.yaml "${extra[@]}" seed=$seed train.total_env_steps=$STEPS \
    train.checkpoint_every=0 train.progress=false train.tensorboard=false ${OVERRIDES:-} --run-dir "$dir" > "$dir/train.log" 2>&1
  echo $((SECONDS - start)) > "$dir/wall_time.txt"
  rm -rf "$dir/checkpoints"
}

for arg in "$@"; do
  case $arg in
    tuning) for seed in 0 1 2 3 4; do for v in $VARIANTS; do run_one "$v" "$seed"; done; done ;;
    report) for seed in $(seq 10 19); do for v in $VARIANTS; do run_one "$v" "$seed"; done; done ;;
    *) run_one "${arg%%:*}" "${arg##*:}" ;;
  esac
done
