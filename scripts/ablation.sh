#!/usr/bin/env bash
# The loss ablation (SphereFace Table 5 at small scale): runs the recipes in train/configs/ablation/
# (each extends train/configs/ablation.yaml and changes only the head), two at a time with one
# thread each (2 cores), then LFW View 1 (choices) and View 2 (report) for each, and the table +
# curves (faceverify eval ablation). Resumable: finished runs are skipped, interrupted ones continue.
#
#   bash scripts/ablation.sh                                      # every row, seed 0
#   SEED=1 ROWS="lsoftmax_m2 cosface" bash scripts/ablation.sh    # the two closest, second seed
#   (OUT=runs/ablation, REPORT=docs/ablation by default)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/ablation}"
seed="${SEED:-0}"
fv=.venv/bin/faceverify
rows=(${ROWS:-$(ls train/configs/ablation/ | sed -n 's/\.yaml$//p')})

train_one() {  # $1 = row (train/configs/ablation/$1.yaml)
  local dir="$out/$1-seed$seed"
  if [ -f "$dir/model.pt" ]; then echo "done: $dir"; return; fi
  local resume=""; [ -f "$dir/checkpoints/last.pt" ] && resume="--resume"
  $fv train --config "train/configs/ablation/$1.yaml" --out "$dir" $resume --set seed="$seed" --set train.threads=1 \
      > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; return 1; }
  echo "trained: $dir"
}

mkdir -p "$out"
for ((i = 0; i < ${#rows[@]}; i += 2)); do
  train_one "${rows[i]}" &
  [ -n "${rows[i+1]:-}" ] && train_one "${rows[i+1]}" &
  wait
done

# evaluation: View 1 (the choice) and View 2 (the report), flip-sum features, cosine
for row in "${rows[@]}"; do
  dir="$out/$row-seed$seed"
  [ -f "$dir/view1/view1.json" ] || $fv eval lfw-view1 --model "$dir" --flip sum --out "$dir/view1"
  [ -f "$dir/view1_nocenter/view1.json" ] ||  # analysis only: the protocol centres
    $fv eval lfw-view1 --model "$dir" --flip sum --no-center --out "$dir/view1_nocenter"
  [ -f "$dir/lfw/lfw.json" ] || $fv eval lfw --model "$dir" --flip sum --out "$dir/lfw"
done
$fv eval ablation "$out"/*-seed*/ --out "${REPORT:-docs/ablation}"
