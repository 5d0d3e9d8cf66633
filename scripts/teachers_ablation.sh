#!/usr/bin/env bash
# The teachers ablation (issue: "Match the best peers"): the recipes train/configs/distill/ablation_teachers*.yaml,
# one at a time (each uses both cores, so the training minutes compare), at one budget: 300 steps of 128,
# the shipped recipe cut short. Rows: the chosen mix (ArcFace-MBF + SFace, 80x80), each teacher alone
# (ArcFace-MBF, SFace, dlib) and the mix at 84x72. Then LFW View 1 (choices) and View 2 (report) as the
# default model is evaluated (no flip, no centring), the ms per face on onnxruntime, and the table +
# curves (faceverify eval ablation). Resumable: finished steps are skipped, interrupted runs continue.
#
#   bash scripts/teachers_ablation.sh                 # every row
#   ROWS="mix mbf" bash scripts/teachers_ablation.sh  # some rows
#   (OUT=runs/teachers_ablation, REPORT=docs/distill/teachers_ablation by default)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/teachers_ablation}"
fv=.venv/bin/faceverify
rows=(${ROWS:-mix mbf sface dlib 84x72})

# every other row reads the set the mix row prepares (run it first), so every row's teachers see the same
# views (the 84x72 recipe alone would prepare a 112x96-family set of its own from the same canvases)
packed=$(.venv/bin/python -c "from faceverify.training.config import load_config; from faceverify.training.training_set import packed_dir
print(packed_dir(load_config('train/configs/distill/ablation_teachers.yaml')['data'], wide=True))")

recipe() { [ "$1" = mix ] && echo train/configs/distill/ablation_teachers.yaml || echo "train/configs/distill/ablation_teachers_$1.yaml"; }

mkdir -p "$out"
for row in "${rows[@]}"; do
  dir="$out/$row"
  if [ ! -f "$dir/model.pt" ]; then
    resume=""; [ -f "$dir/checkpoints/last.pt" ] && resume="--resume"
    same_set=""; [ "$row" = mix ] || same_set="--set data.packed=$packed"
    $fv train --config "$(recipe "$row")" --out "$dir" $same_set $resume > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; exit 1; }
    echo "trained: $dir"
  fi
  [ -f "$dir/view1/view1.json" ] || $fv eval lfw-view1 --model "$dir" --flip none --no-center --out "$dir/view1"
  [ -f "$dir/lfw/lfw.json" ] || $fv eval lfw --model "$dir" --flip none --no-center --out "$dir/lfw"
  [ -f "$dir/speed.json" ] || .venv/bin/python -m bench.onnx_face_speed "$dir" --write
done
runs=(); for row in "${rows[@]}"; do runs+=("$out/$row"); done
$fv eval ablation "${runs[@]}" --out "${REPORT:-docs/distill/teachers_ablation}"
