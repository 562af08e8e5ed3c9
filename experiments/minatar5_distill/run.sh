#!/usr/bin/env bash
# Section 5 of issue 8: the five MinAtar teachers of each independent run of experiments/minatar5
# (section 4: runs/independent_s1, _s2, _s3, pgx, 2,048,000 env steps per game) distilled into
#   - one multi-task student (shared MinAtar CNN torso 16/128 + a head per game), multi.yaml;
#   - one Breakout student with ~25% of its teacher's parameters (MinAtar CNN 8/64), quarter.yaml.
# Student seed s learns from teacher run independent_s$s. KL, teacher temperature 0.01.
# Each seed waits until its teacher run has its final checkpoint (check_teachers.py --wait), so the
# script can be started before section 4 ends. A finished student run is skipped.
#
# Usage, from anywhere (it cd's to the repository root):
#   bash experiments/minatar5_distill/run.sh                 # all three seeds, then summarize.py
#   SEEDS="1" bash experiments/minatar5_distill/run.sh       # one seed
#   TEACHERS=/path/to/runs OUT=/tmp/short bash experiments/minatar5_distill/run.sh train.total_env_steps=20000
#     (TEACHERS: where the independent_s* runs are; OUT: where the student runs go; extra KEY=VALUE
#      arguments are overrides for every distill run, e.g. for a short timing run)
# JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
E=experiments/minatar5_distill
TEACHERS=${TEACHERS:-experiments/minatar5/runs}
OUT=${OUT:-$E/runs}
SEEDS=(${SEEDS:-1 2 3})
NICE=(nice -n "${NICENESS:-10}")
PY=${PYTHON:-python3}

done_already() { [[ -f "$1/summary.json" ]]; }
distill() {  # distill RUN_DIR CONFIG [OVERRIDES...]
  local dir=$1; shift
  if done_already "$dir"; then echo "== $dir: done already"; return; fi
  rm -rf "$dir"  # an interrupted run starts again
  echo "== $dir  ($(date -u +%FT%TZ))"
  mkdir -p "$dir"
  echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- jaxdqn experiments/minatar5_distill || echo ' (with uncommitted changes)')" > "$dir/commit.txt"
  local start=$SECONDS
  "${NICE[@]}" ${JAXDQN:-jaxdqn} distill "$@" --run-dir "$dir"
  echo $((SECONDS - start)) > "$dir/wall_seconds.txt"
}

for s in "${SEEDS[@]}"; do
  T=$TEACHERS/independent_s$s
  "$PY" $E/check_teachers.py --wait "$T"
  distill "$OUT/multi_s$s" $E/multi.yaml seed=$s \
    teachers.0.checkpoint=$T teachers.1.checkpoint=$T teachers.2.checkpoint=$T \
    teachers.3.checkpoint=$T teachers.4.checkpoint=$T "$@"
  distill "$OUT/quarter_s$s" $E/quarter.yaml seed=$s teachers.0.checkpoint=$T "$@"
done
"$PY" $E/summarize.py "$OUT" "${OUT_TABLES:-$E}"
