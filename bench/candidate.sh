#!/usr/bin/env bash
# Judges a candidate model against the shipped one, every check a candidate gets, in one go.
#   bash bench/candidate.sh NAME RUN BASE_RUN DATA [DATA ...]
#   PER_PHOTO_ONLY=1 bash bench/candidate.sh ...   # export and the per-photo comparison only (10 min, 2026-11-28)
#   e.g. bash bench/candidate.sh border_fill ~/.cache/agecheck-runs/v11 ~/.cache/agecheck-runs/v5-gpu \
#            ../shared/datasets/{utkface,appa-real,aaf}
# RUN: the candidate's run folder (model.keras, history.csv); BASE_RUN: a folder for the shipped
# model's prediction files (those bench/model_docs.sh leaves in its run folder; each one missing,
# as on a new machine, is made there once). Writes docs/model/candidates/NAME.* (card, evaluations, paired
# comparisons per photo, per till frame and per till customer, with the margin at which the candidate's
# till asks as many minors, crop border, glasses, face masks, texture, the quality gate's sweep); files
# that name dataset photos (predictions, customers) stay in RUN and BASE_RUN. BASE_RUN's files must be
# of the shipped model as the app estimates today (its card's test-time views included: since
# 2026-11-28 ~/.cache/agecheck-runs/v5-gpu/views, not v5-gpu, whose files are of one view). On 2 cores it
# took 29 min with a till of 900 customers (export and crops already made); the till of
# 1,097 customers it now replays (every 13-17 among them) takes 23 min per model and run; the
# 96 px candidate of 2026-11-27 took 55 min, and a second till replay at the matched margin
# 23 min more until the customers' lowest medians gave it from the first (2026-11-27); the
# quality sweep, added later, takes 7-10 min, the views' sweep (bench/view_margins.py) about 8.
#
# Every gate is compared at the shipped card's margin: a candidate that asks fewer minors at
# the same margin is not shipped, whatever its per-photo figures ("96 px input" in docs/MODEL.md).
set -euo pipefail
trap 'echo "error: bench/candidate.sh stopped at line $LINENO: the command above failed" >&2' ERR
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
    echo "usage: bash bench/candidate.sh NAME RUN BASE_RUN DATA [DATA ...]" >&2
    exit 2
fi
NAME=$1 RUN=$2 BASE=$3
shift 3
DATA=()
for d in "$@"; do DATA+=(--data "$d"); done
BIN=${BIN:-.venv/bin}
SHIPPED=${SHIPPED:-models/age_resnet50_int8.tflite}
OUT=docs/model/candidates/$NAME
if [ ! -f "$RUN/model.keras" ]; then
    echo "error: $RUN/model.keras: no such file; expected the candidate's run folder as RUN" >&2
    exit 1
fi
for d in "$@"; do
    if [ ! -d "$d" ]; then
        echo "error: $d: no such folder; expected the labelled photos (DATA) the candidate was trained on" >&2
        exit 1
    fi
done
mkdir -p "$(dirname "$OUT")" "$RUN/candidate" "$BASE"
card() {  # card() CARD.json KEY [KEY ...]: one value of a model card
    "$BIN/python" -c 'import functools, json, sys; print(functools.reduce(lambda d, k: d[k], sys.argv[2:], json.load(open(sys.argv[1]))))' "$@"
}
step() { echo; echo "== $NAME: $* ($(date +%H:%M))"; }

# The candidate takes the shipped model's file name, so that bench/till_frame.py names both
# models' prediction files by their folders: models_NAME_..., candidate_NAME_...
STEM=$(basename "$SHIPPED" .tflite)
MODEL=$RUN/candidate/$STEM.tflite
# The candidate is estimated as the shipped model is: from the same test-time views (if its card names any).
VIEWS=()
for m in $("$BIN/python" -c 'import json, sys; print(*json.load(open(sys.argv[1]))["crop"].get("view_margins", []))' \
           "${SHIPPED%.tflite}.json"); do VIEWS+=(--view-margins "$m"); done
if [ ! -f "$MODEL" ]; then
    step "export (int8, card; its margin measured under the camera mix; views: ${VIEWS[*]:-none})"
    "$BIN/agecheck" export --model "$RUN/model.keras" "${DATA[@]}" --out "$MODEL" "${VIEWS[@]}"
fi
cp "${MODEL%.tflite}.json" "$OUT.card.json"
[ -f "$RUN/history.csv" ] && cp "$RUN/history.csv" "$OUT.history.csv"
BASE_MARGIN=$(card "${SHIPPED%.tflite}.json" mae)
MARGIN=$(card "$OUT.card.json" mae)
SEED=$(card "$OUT.card.json" validation seed)

BASE_SEED=$(card "${SHIPPED%.tflite}.json" validation seed)
for evaluation in val_int8 val_int8_camera; do
    if [ ! -f "$BASE/predictions_$evaluation.csv" ]; then
        step "the shipped model's $evaluation predictions, once (as bench/model_docs.sh makes them)"
        degrade=(); [ "$evaluation" = val_int8_camera ] && degrade=(--degrade camera)
        "$BIN/agecheck" evaluate --model "$SHIPPED" "${DATA[@]}" --split val "${degrade[@]}" --seed "$BASE_SEED" \
            --predictions "$BASE/predictions_$evaluation.csv" --report "$BASE/eval_$evaluation.json"
    fi
done

step "per photo, clean and under the camera mix (seed $SEED, as the card)"
# (the plots stay beside the run; the reports are copied)
for name in clean camera; do
    if [ "$name" = clean ]; then evaluation=val_int8 degrade=(); else evaluation=val_int8_camera degrade=(--degrade camera); fi
    "$BIN/agecheck" evaluate --model "$MODEL" "${DATA[@]}" --split val --margin "$BASE_MARGIN" "${degrade[@]}" \
        --seed "$SEED" --predictions "$RUN/predictions_$evaluation.csv" --report "$RUN/eval_$evaluation.json"
    # into docs/, naming the run's folder and the data folders, not this machine's paths
    "$BIN/python" -c 'import json, sys; from pathlib import Path
report = json.loads(Path(sys.argv[1]).read_text()); model = Path(report["model"])
report["model"] = "/".join(model.parts[-3:])
report["data"] = ", ".join(Path(d).name for d in report["data"].split(", "))
Path(sys.argv[2]).write_text(json.dumps(report, indent=2) + "\n")' "$RUN/eval_$evaluation.json" "$OUT.eval_$evaluation.json"
    "$BIN/python" bench/compare_models.py "$BASE/predictions_$evaluation.csv" "$RUN/predictions_$evaluation.csv" \
        --margins "$BASE_MARGIN" "$BASE_MARGIN" --out "$OUT.paired_$name"
done

if [ "${PER_PHOTO_ONLY:-0}" = 1 ]; then
    # A candidate that ranks teenagers against adults no better per photo will not at the till either:
    # the rest (about 50 min on 2 cores) is for one that does.
    step "stopped after the per-photo comparison (PER_PHOTO_ONLY=1): $OUT.*"
    exit 0
fi

step "its test-time views: the shipped card's set against every other, each half scoring the other's choice"
"$BIN/python" bench/view_margins.py "${DATA[@]}" --model "$MODEL" --out "$OUT.view_margins"

step "what the crop's border, glasses, face masks and texture do to it"
"$BIN/python" bench/crop_border.py "${DATA[@]}" --per-source 1000 --model "$MODEL" --out "$OUT.crop_border"
"$BIN/python" bench/glasses.py "${DATA[@]}" --per-source 300 --model "$MODEL" --out "$OUT.glasses"
"$BIN/python" bench/glasses.py "${DATA[@]}" --per-source 300 --model "$MODEL" --draw mask --out "$OUT.mask"
# the shipped model's own: docs/model/texture.md and texture_on_crop.md
"$BIN/python" bench/texture.py "${DATA[@]}" --per-source 0 --model "$MODEL" --out "$OUT.texture"
"$BIN/python" bench/texture.py "${DATA[@]}" --per-source 0 --model "$MODEL" --changes local_contrast --on-crop \
    --out "$OUT.texture_on_crop"

step "where its error grows: face size, sharpness, turn and light (the gate's limits are set from this)"
"$BIN/python" bench/quality_sweep.py "${DATA[@]}" --per-source 250 --model "$MODEL" --out "$OUT.quality_sweep"

step "one till frame per photo, both models at margin $BASE_MARGIN"
"$BIN/python" bench/till_frame.py "${DATA[@]}" --model "$SHIPPED" --model "$MODEL" --margin-years "$BASE_MARGIN" \
    --out "$OUT.till_frame" --predictions-dir "$RUN/till_frame"
"$BIN/python" bench/compare_models.py "$RUN/till_frame/$(basename "$(dirname "$SHIPPED")")_${STEM}_till_frame.csv" \
    "$RUN/till_frame/candidate_${STEM}_till_frame.csv" --margins "$BASE_MARGIN" "$BASE_MARGIN" \
    --out "$OUT.paired_till_frame"

step "the synthetic till: 300 customers per source and every 13-17, both at margin $BASE_MARGIN"
TILL=("${DATA[@]}" --per-source 300 --all-aged 13 18 --margin-years "$BASE_MARGIN")
# (a customers file from before 2026-11-27 lacks each customer's lowest median: made again)
if ! head -1 "$BASE/till/customers_all_teens.csv" 2>/dev/null | grep -q lowest_age; then
    mkdir -p "$BASE/till"
    "$BIN/python" bench/per_customer.py "${TILL[@]}" --model "$SHIPPED" --customers "$BASE/till/customers_all_teens.csv"
fi
mkdir -p "$RUN/till"
"$BIN/python" bench/per_customer.py "${TILL[@]}" --model "$MODEL" --customers "$RUN/till/customers_all_teens.csv" \
    --out "$OUT.per_customer"
# A candidate that reads everyone older asks fewer minors at the same margin; at the margin where
# its till asks as many minors as the shipped model's, does it ask fewer adults? compare_models
# reads that from each customer's lowest median ("At the same protection at the till"), and the
# candidate's till at every wider limit is the table that ends its per_customer report.
"$BIN/python" bench/compare_models.py "$BASE/till/customers_all_teens.csv" "$RUN/till/customers_all_teens.csv" \
    --margins "$BASE_MARGIN" "$BASE_MARGIN" --out "$OUT.paired_till"

step "done: $OUT.* (the candidate's own card margin is $MARGIN; the shipped one's $BASE_MARGIN)"
