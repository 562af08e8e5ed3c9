#!/usr/bin/env bash
# MinAtar-5 through pgx at 2,048,000 env steps per game: independent, hard, hard + PopArt,
# soft, hard + PCGrad, hard + PopArt + PCGrad, with the same settings and budget in every mode.
#
# Usage: bash experiments/minatar5/run.sh JOB [JOB ...]      JOB = VARIANT:SEED
#        bash experiments/minatar5/run.sh grid               the reported grid (seeds 1-3)
#        bash experiments/minatar5/run.sh sweep              soft lambda sweep (seed 0)
#        bash experiments/minatar5/run.sh tuning             independent, hard, hard_wide at 512,000 steps,
#                                                            seed 0, in runs/tuning (run it on its own)
#        bash experiments/minatar5/run.sh budget_4m          independent, hard, soft_1.0e-5 at 4,096,000 steps,
#                                                            seeds 1-2, in runs/budget_4m (run it on its own)
# VARIANT: independent hard hard_wide hard_popart hard_pcgrad hard_popart_pcgrad soft soft_LAMBDA soft_sweep_LAMBDA
#   (soft: lambda SOFT_LAMBDA; soft_LAMBDA: that lambda at the full budget; soft_sweep_LAMBDA: at 512,000 steps)
# A finished run is skipped; an interrupted one resumes from its latest checkpoint.
# Each run directory records the commit it ran at (commit.txt) and its wall time (wall_time.txt).
# JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
# Environment: RUNS (where run directories go), STEPS (env steps per game), OVERRIDES (extra
# KEY=VALUE settings, space-separated), COMMIT (recorded instead of asking git, where there is none).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-experiments/minatar5/runs}
STEPS=${STEPS:-2048000}   # env steps per game
SWEEP_STEPS=512000
SOFT_LAMBDA=${SOFT_LAMBDA:-1.0e-3}   # chosen by the sweep on seed 0 (results.md)
COMMON=(
  train.num_envs=128 dqn.update_every=128 dqn.batch_size=64
  dqn.learning_rate=5.0e-4 dqn.target_update_period=250
  dqn.learning_starts=5120 dqn.replay_capacity=100000
  dqn.epsilon_decay_steps=204800 dqn.epsilon_end=0.05
  train.log_every=25600 train.eval_every=204800 train.eval_episodes=16
  train.checkpoint_every=409600 train.keep_checkpoints=1
  train.tensorboard=false train.progress=false
)

run_one() {
  local variant=$1 seed=$2 steps=$STEPS config extra=()
  case $variant in
    independent) config=configs/minatar5_independent.yaml ;;
    hard) config=configs/minatar5_hard.yaml ;;
    hard_wide) config=configs/minatar5_hard.yaml; extra=(network.cnn_channels=32 network.cnn_hidden=256) ;;
    hard_popart) config=configs/minatar5_hard.yaml; extra=(dqn.popart=true) ;;
    hard_pcgrad) config=configs/minatar5_hard.yaml; extra=(multitask.gradient_surgery=pcgrad) ;;
    hard_popart_pcgrad) config=configs/minatar5_hard.yaml; extra=(dqn.popart=true multitask.gradient_surgery=pcgrad) ;;
    soft) config=configs/minatar5_soft.yaml; extra=(multitask.soft_lambda=$SOFT_LAMBDA) ;;
    soft_[0-9]*) config=configs/minatar5_soft.yaml; extra=(multitask.soft_lambda=${variant#soft_}) ;;
    soft_sweep_*) config=configs/minatar5_soft.yaml; extra=(multitask.soft_lambda=${variant#soft_sweep_}); steps=$SWEEP_STEPS ;;
    *) echo "unknown variant $variant" >&2; return 2 ;;
  esac
  local dir="$RUNS/${variant}_s${seed}"
  if [ -f "$dir/wall_time.txt" ]; then echo "== $variant seed $seed: done"; return 0; fi
  local resume=()
  if [ -d "$dir/checkpoints" ] && ls "$dir/checkpoints" | grep -q '^[0-9]'; then resume=(--resume); fi
  mkdir -p "$dir"
  echo "${COMMIT:-$(git rev-parse HEAD)$(git diff --quiet HEAD -- jaxdqn configs || echo ' (with uncommitted changes)')}" >> "$dir/commit.txt"
  echo "== $variant seed $seed ${resume[*]} ($(date -u +%FT%TZ))"
  local start=$SECONDS
  ${JAXDQN:-jaxdqn} train "$config" "${COMMON[@]}" "${extra[@]}" train.total_env_steps=$steps seed=$seed ${OVERRIDES:-} \
    --run-dir "$dir" "${resume[@]}"
  echo $((SECONDS - start)) >> "$dir/wall_seconds.txt"
  awk '{s += $1} END {print s}' "$dir/wall_seconds.txt" > "$dir/wall_time.txt"
  # The replay inside checkpoints is large; independent runs keep their final params as teachers.
  if [ "$variant" != independent ]; then rm -rf "$dir/checkpoints"; fi
}

jobs=()
for arg in "$@"; do
  case $arg in
    grid) for seed in 1 2 3; do for v in independent hard hard_popart soft soft_1.0e-5; do jobs+=("$v:$seed"); done; done
          for seed in 1 2; do for v in hard_pcgrad hard_popart_pcgrad; do jobs+=("$v:$seed"); done; done ;;
    sweep) for lam in 1.0e-6 1.0e-5 1.0e-4 1.0e-3 1.0e-2; do jobs+=("soft_sweep_$lam:0"); done ;;
    tuning) STEPS=$SWEEP_STEPS RUNS=$RUNS/tuning; jobs+=(independent:0 hard:0 hard_wide:0) ;;
    budget_4m) STEPS=4096000 RUNS=$RUNS/budget_4m
               for seed in 1 2; do for v in independent hard soft_1.0e-5; do jobs+=("$v:$seed"); done; done ;;
    *) jobs+=("$arg") ;;
  esac
done
for job in "${jobs[@]}"; do run_one "${job%%:*}" "${job##*:}"; done
