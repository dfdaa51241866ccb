#!/usr/bin/env bash
# Regenerates the figures and tables of docs/MODEL.md from the project's own commands.
#   bench/model_docs.sh RUN DATA [DATA ...]
#   e.g. bench/model_docs.sh ~/.cache/agecheck-runs/v2-gpu ../shared/datasets/{utkface,appa-real,aaf}
# RUN: the shipped model's training run folder; DATA: the labelled photos it was trained on.
# Writes docs/model/*.json|md|png. Predictions CSVs (file names) go to RUN, not into the project.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
shift
DATA=()
for d in "$@"; do DATA+=(--data "$d"); done
BIN=${BIN:-.venv/bin}
OUT=docs/model
MODEL=models/age_resnet50_int8.tflite
SEED=$("$BIN/python" -c 'import json; print(json.load(open("models/age_resnet50_int8.json"))["validation"]["seed"])')
mkdir -p "$OUT"
"$BIN/agecheck" evaluate --model "$MODEL" "${DATA[@]}" --split val \
    --predictions "$RUN/predictions_val_int8.csv" --report "$OUT/eval_val_int8.json" --markdown "$OUT/eval_val_int8.md"
# The card's margin is measured here: every validation photo under the camera mix.
"$BIN/agecheck" evaluate --model "$MODEL" "${DATA[@]}" --split val --degrade camera --seed "$SEED" \
    --predictions "$RUN/predictions_val_int8_camera.csv" --report "$OUT/eval_val_int8_camera.json" \
    --markdown "$OUT/eval_val_int8_camera.md"
# The float model at the int8 card's margin, so the policy figures compare like with like.
MARGIN=$("$BIN/python" -c 'import json; print(json.load(open("models/age_resnet50_int8.json"))["mae"])')
"$BIN/agecheck" evaluate --model "$RUN/model.keras" "${DATA[@]}" --split val --margin "$MARGIN" \
    --predictions "$RUN/predictions_val_float.csv" --report "$OUT/eval_val_float.json" --markdown "$OUT/eval_val_float.md"
"$BIN/python" bench/robustness.py --model "$MODEL" "${DATA[@]}" --out "$OUT/robustness" --max-images 500 \
    --label "age_resnet50_int8.tflite (shipped)"
# A run fitted on a lent GPU comes back without its curve (the call returns 8 files): draw it here.
if [ ! -f "$RUN/training_curve.png" ] && [ -f "$RUN/history.csv" ] && [ -f "$RUN/report.json" ]; then
    "$BIN/python" -c 'import json, sys; from pathlib import Path; from training.fit import plot_history
run = Path(sys.argv[1]); plot_history(run / "history.csv", run / "training_curve.png", json.loads((run / "report.json").read_text())["dummy_val_mae"])' "$RUN"
fi
cp "$RUN/training_curve.png" "$RUN/history.csv" "$RUN/report.json" "$OUT/" 2>/dev/null || true
