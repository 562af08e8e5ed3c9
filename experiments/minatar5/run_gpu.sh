#!/usr/bin/env bash
# MinAtar-5 at 5,120,000 env steps per game on one GPU: the settings of run.sh, several variants at
# once (one process each, sharing the GPU), each stopped with Ctrl-C at a deadline if unfinished.
#
# Usage: DEADLINE=SECONDS DEST=DIR bash experiments/minatar5/run_gpu.sh VARIANT:SEED [VARIANT:SEED ...]
#   DEST receives each run's metrics.csv as VARIANT_sSEED.csv, and gpu.log (every run's output).
#   Runs go to RUNS (default /tmp/minatar5_gpu); STEPS (default 5120000) is per game.
set -uo pipefail
cd "$(dirname "$0")/../.."
export RUNS=${RUNS:-/tmp/minatar5_gpu} STEPS=${STEPS:-5120000}
# Few checkpoints: the replay inside each one is large and writing it only costs time here.
export OVERRIDES="train.checkpoint_every=$STEPS ${OVERRIDES:-}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(python3 -c "print(round(0.9 / $#, 3))")}
export PYTHONUNBUFFERED=1
DEADLINE=${DEADLINE:-3600}
DEST=${DEST:-$RUNS}
mkdir -p "$RUNS" "$DEST"

pids=()
for job in "$@"; do
  timeout -s INT -k 60 "$DEADLINE" bash experiments/minatar5/run.sh "$job" 2>&1 | sed -u "s/^/[$job] /" &
  pids+=($!)
done
# Progress: the latest mean row of each run, every minute.
( while sleep 60; do
    for job in "$@"; do
      f="$RUNS/${job%%:*}_s${job##*:}/metrics.csv"
      [ -f "$f" ] && echo "[$job] env_steps,episode_return,eval_return,steps_per_sec: $(grep ',mean,' "$f" | tail -n 1 | cut -d, -f1,4,11,13)"
    done
  done ) &
watcher=$!
for pid in "${pids[@]}"; do wait "$pid"; done
kill "$watcher" 2>/dev/null
for job in "$@"; do
  name="${job%%:*}_s${job##*:}"
  cp "$RUNS/$name/metrics.csv" "$DEST/$name.csv" 2>/dev/null
  echo "$name: $(cat "$RUNS/$name/wall_time.txt" 2>/dev/null || echo unfinished) s; last: $(tail -n 1 "$RUNS/$name/metrics.csv" 2>/dev/null | cut -d, -f1)"
done
