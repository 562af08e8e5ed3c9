#!/usr/bin/env bash
# MinAtar-5 at 5,120,000 env steps per game on one GPU: the settings of run.sh, one run after
# another, the one still going at the deadline stopped with Ctrl-C (it saves a checkpoint).
#
# Usage: DEADLINE=SECONDS DEST=DIR bash experiments/minatar5/run_gpu.sh VARIANT:SEED [VARIANT:SEED ...]
#   DEST receives each run's metrics.csv as VARIANT_sSEED.csv. Runs go to RUNS (default
#   /tmp/minatar5_gpu); STEPS (default 5120000) is per game.
#
# One after another, not side by side: on an H200 three runs as three processes sharing the GPU
# made about 30,000 env steps/s each, while one process alone makes about 184,000
# (benchmarks/results/envs_gpu_train_scaling.md), about 2.5 minutes of training per run.
set -uo pipefail
cd "$(dirname "$0")/../.."
export RUNS=${RUNS:-/tmp/minatar5_gpu} STEPS=${STEPS:-5120000} PYTHONUNBUFFERED=1
# Few checkpoints: the replay inside each one is large and writing it only costs time here.
export OVERRIDES="train.checkpoint_every=$STEPS ${OVERRIDES:-}"
DEADLINE=${DEADLINE:-36000}
DEST=${DEST:-$RUNS}
mkdir -p "$RUNS" "$DEST"

for job in "$@"; do
  left=$((DEADLINE - SECONDS))
  if [ "$left" -le 60 ]; then echo "deadline: $job not started"; continue; fi
  timeout -s INT -k 60 "$left" bash experiments/minatar5/run.sh "$job"
  name="${job%%:*}_s${job##*:}"
  cp "$RUNS/$name/metrics.csv" "$DEST/$name.csv" 2>/dev/null
  echo "$name: $(cat "$RUNS/$name/wall_time.txt" 2>/dev/null || echo unfinished) s; last row at env step $(tail -n 1 "$RUNS/$name/metrics.csv" 2>/dev/null | cut -d, -f1)"
done
