#!/usr/bin/env bash
# Reproduces the numbers in experiments/transfer/README.md on a CPU (2 shared cores: about 20 minutes,
# most of it the Breakout-MinAtar teacher). Run from the repository root:
#
#     bash experiments/transfer/run_all.sh            # everything
#     bash experiments/transfer/run_all.sh distill    # one part: teachers, distill, transfer, multi, report
#
# Run directories go to runs/xfer/ (ignored by git); a step whose run directory already
# holds a checkpoint is skipped, so the script can be re-run after an interruption.
set -euo pipefail

R=runs/xfer
E=experiments/transfer
QUIET=(train.progress=false train.tensorboard=false)
SEEDS=(0 1 2)
PART=${1:-all}

done_already() { [[ -d "$1/checkpoints" ]] && [[ -n "$(ls -A "$1/checkpoints")" ]]; }

train() {  # train RUN_DIR CONFIG [OVERRIDES...]
  local dir=$1; shift
  done_already "$dir" || jaxdqn train "$@" "${QUIET[@]}" --run-dir "$dir"
}
distill() {
  local dir=$1; shift
  done_already "$dir" || jaxdqn distill "$@" "${QUIET[@]}" --run-dir "$dir"
}
transfer() {
  local dir=$1; shift
  done_already "$dir" || jaxdqn transfer "$@" "${QUIET[@]}" --run-dir "$dir"
}

if [[ $PART == all || $PART == teachers ]]; then
  # CartPole teachers / transfer source: pole length 0.5 (the default) and 1.0; pole 2.0 trained
  # from scratch for reference (the transfer target).
  train $R/cartpole_len0.5 $E/configs/cartpole_teacher.yaml
  train $R/cartpole_len1.0 $E/configs/cartpole_teacher.yaml name=cartpole_len1.0 tasks.0.name=pole_1.0 \
    'tasks.0.env_params={length: 1.0, polemass_length: 0.1}'
  train $R/cartpole_len2.0 $E/configs/cartpole_teacher.yaml name=cartpole_len2.0 tasks.0.name=pole_2.0 \
    'tasks.0.env_params={length: 2.0, polemass_length: 0.2}'
  # Breakout-MinAtar teacher (600k env steps).
  train $R/breakout_teacher $E/configs/breakout_teacher.yaml
fi

if [[ $PART == all || $PART == distill ]]; then
  # One teacher -> a student with ~25% of its parameters, 3 seeds each.
  for s in "${SEEDS[@]}"; do
    distill $R/distill_cartpole_s$s configs/distill_cartpole.yaml seed=$s teachers.0.checkpoint=$R/cartpole_len0.5
    distill $R/distill_breakout_s$s configs/distill_breakout.yaml seed=$s teachers.0.checkpoint=$R/breakout_teacher
  done
fi

if [[ $PART == all || $PART == transfer ]]; then
  # Source: the pole-0.5 teacher. Target: pole length 2.0. Same budget (100k env steps) and seeds for every method.
  for s in "${SEEDS[@]}"; do
    for m in scratch finetune progressive distill; do
      transfer $R/transfer_${m}_s$s configs/transfer_cartpole_$m.yaml seed=$s "transfer.sources=[$R/cartpole_len0.5]"
    done
    # Ablation: the progressive adapters' learned scale starting at 1 instead of 0.01.
    transfer $R/transfer_progressive_scale1_s$s configs/transfer_cartpole_progressive.yaml seed=$s \
      "transfer.sources=[$R/cartpole_len0.5]" transfer.progressive.scale_init=1.0 name=transfer_cartpole_progressive_scale1
  done
  jaxdqn compare $R/transfer_*_s* --last 3 -o $E/transfer_cartpole.png --markdown $E/transfer_cartpole.md
fi

if [[ $PART == all || $PART == multi ]]; then
  # Three CartPole teachers (pole 0.5 / 1.0 / 2.0) -> one multi-task student, 3 seeds. The pole-2.0 teacher is
  # the fine-tuned transfer run of seed 0 (500 greedy); DQN from scratch reaches ~144 there (cartpole_len2.0).
  for s in "${SEEDS[@]}"; do
    distill $R/distill_multi_s$s configs/distill_cartpole_multi.yaml seed=$s \
      teachers.0.checkpoint=$R/cartpole_len0.5 teachers.1.checkpoint=$R/cartpole_len1.0 teachers.2.checkpoint=$R/transfer_finetune_s0
  done
fi

if [[ $PART == all || $PART == report ]]; then
  python $E/summarize.py $R $E
fi
