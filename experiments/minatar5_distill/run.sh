#!/usr/bin/env bash
# Section 5 of issue 8: the five MinAtar teachers of each independent run of experiments/minatar5
# (section 4, seeds 0-2) distilled into
#   - one multi-task student (shared MinAtar CNN torso 16/128 + a head per game), multi.yaml;
#   - one Breakout student with ~25% of its teacher's parameters (MinAtar CNN 8/64), quarter.yaml.
# Student seed s learns from teacher run independent_s$s. KL, teacher temperature 0.01.
#
# Usage, from anywhere (it cd's to the repository root):
#   bash experiments/minatar5_distill/run.sh                 # waits for the teachers, then runs everything
#   TEACHERS=/path/to/runs bash experiments/minatar5_distill/run.sh
#   OUT=/tmp/short bash experiments/minatar5_distill/run.sh train.total_env_steps=20000   # extra overrides for every run
# Then the table and curves: python experiments/minatar5_distill/summarize.py (run.sh calls it at the end).
# JAXDQN="python3 -m jaxdqn.cli" runs it without the console script installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
E=experiments/minatar5_distill
TEACHERS=${TEACHERS:-experiments/minatar5/runs}
OUT=${OUT:-$E/runs}
SEEDS=(${SEEDS:-0 1 2})
NICE=(nice -n "${NICENESS:-10}")
PY=${PYTHON:-python3}

done_already() { [[ -f "$1/summary.json" ]]; }
distill() {  # distill RUN_DIR CONFIG [OVERRIDES...]
  local dir=$1; shift
  if done_already "$dir"; then echo "== $dir: done already"; return; fi
  rm -rf "$dir"  # an interrupted run starts again
  echo "== $dir  ($(date -u +%H:%M:%S) UTC)"
  "${NICE[@]}" ${JAXDQN:-jaxdqn} distill "$@" --run-dir "$dir"
}

teacher_runs=()
for s in "${SEEDS[@]}"; do teacher_runs+=("$TEACHERS/independent_s$s"); done
"$PY" $E/check_teachers.py --wait "${teacher_runs[@]}"

for s in "${SEEDS[@]}"; do
  T=$TEACHERS/independent_s$s
  distill "$OUT/multi_s$s" $E/multi.yaml seed=$s \
    teachers.0.checkpoint=$T teachers.1.checkpoint=$T teachers.2.checkpoint=$T \
    teachers.3.checkpoint=$T teachers.4.checkpoint=$T "$@"
  distill "$OUT/quarter_s$s" $E/quarter.yaml seed=$s teachers.0.checkpoint=$T "$@"
done
"$PY" $E/summarize.py "$OUT" "${OUT_TABLES:-$E}"
