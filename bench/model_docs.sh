#!/usr/bin/env bash
# Regenerates the figures and tables of docs/MODEL.md from the project's own commands.
#   bench/model_docs.sh DATA RUN     e.g. bench/model_docs.sh ../shared/datasets/utkface runs/utkface64
# DATA: the labelled photos the model was trained on; RUN: its training run folder.
# Writes docs/model/*.json|md|png. Predictions CSVs (file names) go to RUN, not into the project.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1
RUN=$2
BIN=${BIN:-.venv/bin}
OUT=docs/model
mkdir -p "$OUT"
"$BIN/agecheck" evaluate --model models/age_resnet50_int8.tflite --data "$DATA" --split val \
    --predictions "$RUN/predictions_val_int8.csv" --report "$OUT/eval_val_int8.json" --markdown "$OUT/eval_val_int8.md"
# The float model at the int8 card's margin, so the policy figures compare like with like.
MARGIN=$("$BIN/python" -c 'import json; print(json.load(open("models/age_resnet50_int8.json"))["mae"])')
"$BIN/agecheck" evaluate --model "$RUN/model.keras" --data "$DATA" --split val --margin "$MARGIN" \
    --predictions "$RUN/predictions_val_float.csv" --report "$OUT/eval_val_float.json" --markdown "$OUT/eval_val_float.md"
cp "$RUN/training_curve.png" "$RUN/history.csv" "$RUN/report.json" "$OUT/" 2>/dev/null || true
