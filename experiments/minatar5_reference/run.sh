#!/usr/bin/env bash
# MinAtar-5 (pgx) at the references' update rate (configs/minatar5_reference_*.yaml: one gradient
# step per game every 4 env steps, batch 32, Adam 2.5e-4 / eps 3.125e-4, target every 1,000 env
# steps), every variant with the same settings and budget.
#
# Usage: bash experiments/minatar5_reference/run.sh JOB [JOB ...]     JOB = VARIANT:SEED
#        bash experiments/minatar5_reference/run.sh tuning_VARIANT    VARIANT on seeds 0 and 100 at 1,000,000
#                                                                     env steps per game, in runs/tuning
#        bash experiments/minatar5_reference/run.sh grid              seeds 1-3 at STEPS (2,000,000 by default)
# VARIANT: independent hard hard_input hard_cond hard_embed hard_ln hard_hlg hard_steps hard_wide
#          hard_input_ln hard_input_cond hard_input_ln_cond soft_LAMBDA, or several switches joined by '+'
#          after 'hard' (e.g. hard+input+ln+hlg).
# A finished run is skipped; an interrupted one resumes from its latest checkpoint.
# Each run directory records the commit it ran at (commit.txt) and its wall time (wall_time.txt).
# Environment: RUNS, STEPS, OVERRIDES (extra KEY=VALUE settings), COMMIT, GRID (variants of 'grid'),
#              FAMILY (the configs configs/FAMILY_{independent,hard,soft}.yaml: minatar5_reference by
#              default, minatar5_pqn for PQN; runs then go to experiments/FAMILY/runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
FAMILY=${FAMILY:-minatar5_reference}
RUNS=${RUNS:-experiments/$FAMILY/runs}
STEPS=${STEPS:-2000000}       # env steps per game
TUNING_STEPS=1000000
GRID=${GRID:-independent hard}
COMMON=(train.tensorboard=false train.progress=false)

# The switches of the sharing issue, each one config change on top of hard sharing.
switch() {
  case $1 in
    input) echo network.task_input_layers=true ;;          # per-task first layer (D'Eramo et al. 2020)
    cond) echo network.task_conditioning=film ;;           # per-task FiLM of the last hidden layer
    embed) echo network.task_conditioning=embedding ;;     # per-task vector added to it
    ln) echo network.layer_norm=true ;;                    # LayerNorm on hidden layers
    hlg) echo dqn.loss=hl_gauss dqn.hl_gauss_bins=101 dqn.hl_gauss_min=-10 dqn.hl_gauss_max=30 ;;  # HL-Gauss
    steps) echo multitask.hard_steps_per_round=tasks ;;    # T gradient steps per round
    wide) echo network.cnn_channels=46 network.cnn_hidden=224 ;;  # about the 5 independent nets' parameters
    *) echo "unknown switch $1" >&2; return 2 ;;
  esac
}

run_one() {
  local variant=$1 seed=$2 steps=$3 runs=$4 config extra=()
  case $variant in
    independent) config=configs/${FAMILY}_independent.yaml ;;
    hard|hard[_+]*)
      config=configs/${FAMILY}_hard.yaml
      local rest=${variant#hard}; rest=${rest//_/+}
      IFS='+' read -ra parts <<< "${rest#+}"
      for part in "${parts[@]}"; do [ -n "$part" ] && read -ra more <<< "$(switch "$part")" && extra+=("${more[@]}"); done ;;
    soft_[0-9]*) config=configs/${FAMILY}_soft.yaml; extra=(multitask.soft_lambda=${variant#soft_}) ;;
    *) echo "unknown variant $variant" >&2; return 2 ;;
  esac
  local dir="$runs/${variant}_s${seed}"
  if [ -f "$dir/wall_time.txt" ]; then echo "== $variant seed $seed: done"; return 0; fi
  local resume=()
  if [ -d "$dir/checkpoints" ] && ls "$dir/checkpoints" | grep -q '^[0-9]'; then resume=(--resume); fi
  mkdir -p "$dir"
  echo "${COMMIT:-$(git rev-parse HEAD)$(git diff --quiet HEAD -- jaxdqn configs || echo ' (with uncommitted changes)')}" >> "$dir/commit.txt"
  echo "== $variant seed $seed ${resume[*]} ($(date -u +%FT%TZ)) ${extra[*]}"
  local start=$SECONDS
  ${JAXDQN:-jaxdqn} train "$config" "${COMMON[@]}" "${extra[@]}" train.total_env_steps=$steps seed=$seed ${OVERRIDES:-} \
    --run-dir "$dir" "${resume[@]}"
  echo $((SECONDS - start)) >> "$dir/wall_seconds.txt"
  awk '{s += $1} END {print s}' "$dir/wall_seconds.txt" > "$dir/wall_time.txt"
  rm -rf "$dir/checkpoints"  # the replay inside checkpoints is large
}

for arg in "$@"; do
  case $arg in
    tuning_*) for seed in 0 100; do run_one "${arg#tuning_}" "$seed" $TUNING_STEPS "$RUNS/tuning"; done ;;
    grid) for seed in 1 2 3; do for v in $GRID; do run_one "$v" "$seed" "$STEPS" "$RUNS"; done; done ;;
    *) run_one "${arg%%:*}" "${arg##*:}" "$STEPS" "$RUNS" ;;
  esac
done
