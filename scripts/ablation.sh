#!/usr/bin/env bash
# The loss ablation (SphereFace Table 5 at small scale): one recipe (train/configs/ablation.yaml),
# six heads, two runs at a time with one thread each (2 cores), then LFW View 1 (choices) and
# View 2 (report) for each, and the table + curves (faceverify eval ablation).
# Resumable: finished runs are skipped, interrupted ones continue from their last checkpoint.
#
#   bash scripts/ablation.sh                                   # the six losses, seed 0
#   SEED=1 LOSSES="lsoftmax_m2 cosface" bash scripts/ablation.sh   # the two closest, second seed
#   (OUT=runs/ablation, REPORT=docs/ablation by default)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/ablation}"
seed="${SEED:-0}"
py=.venv/bin/python

head_args() {  # the only difference between the runs
  case "$1" in
    softmax)     echo "--set head.name=softmax --set 'head.kwargs={}'" ;;
    softmax_reg) echo "--set head.name=softmax --set 'head.kwargs={}' --set head.regularizer=0.3" ;;
    lsoftmax_m2) echo "--set head.name=lsoftmax --set 'head.kwargs={m: 2}'" ;;
    asoftmax_m4) echo "--set head.name=asoftmax --set 'head.kwargs={m: 4}'" ;;
    cosface)     echo "--set head.name=cosface --set 'head.kwargs={s: 30, m: 0.35}'" ;;
    arcface)     echo "--set head.name=arcface --set 'head.kwargs={s: 64, m: 0.5}'" ;;
    *) echo "unknown loss $1" >&2; return 1 ;;
  esac
}
losses=(${LOSSES:-softmax softmax_reg lsoftmax_m2 asoftmax_m4 cosface arcface})

train_one() {  # $1 = loss name
  local dir="$out/$1-seed$seed"
  if [ -f "$dir/model.pt" ]; then echo "done: $dir"; return; fi
  local resume=""; [ -f "$dir/checkpoints/last.pt" ] && resume="--resume"
  local head; head=$(head_args "$1")
  eval "$py -m train --config train/configs/ablation.yaml --out $dir $resume $head --set seed=$seed --set train.threads=1" \
      > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; return 1; }
  echo "trained: $dir"
}

mkdir -p "$out"
for ((i = 0; i < ${#losses[@]}; i += 2)); do
  train_one "${losses[i]}" &
  [ -n "${losses[i+1]:-}" ] && train_one "${losses[i+1]}" &
  wait
done

# evaluation: View 1 (the choice) and View 2 (the report), flip-sum features, cosine
for loss in "${losses[@]}"; do
  dir="$out/$loss-seed$seed"
  [ -f "$dir/view1/view1.json" ] || $py -m eval lfw-view1 --model "$dir" --flip sum --out "$dir/view1"
  [ -f "$dir/view1_nocenter/view1.json" ] ||  # analysis only: the protocol centres
    $py -m eval lfw-view1 --model "$dir" --flip sum --no-center --out "$dir/view1_nocenter"
  [ -f "$dir/lfw/lfw.json" ] || $py -m eval lfw --model "$dir" --flip sum --no-calibration --out "$dir/lfw"
done
$py -m eval ablation "$out"/*-seed*/ --out "${REPORT:-docs/ablation}"
