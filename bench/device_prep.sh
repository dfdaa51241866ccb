#!/usr/bin/env bash
# Gets a GPU fit ready here, before any device time is spent (a task that is lent a GPU has
# 15 minutes of it, start included; a new machine here has none of what an earlier one made).
#   bash bench/device_prep.sh RUN DEVICE_RUN DATA [DATA ...] [-- TRAIN_OPTION ...]
#   e.g. bash bench/device_prep.sh ~/.cache/agecheck-runs/v11 .devdata/run ../shared/datasets/{utkface,appa-real,aaf} \
#            -- --batch-size 256 --epochs 200 --learning-rate 1e-3 --warmup-epochs 2 --border-fill 0.5
# 1. .whl/: the Keras 3 wheels the GPU machine lacks (keras, namex, optree), this venv's
#    versions, for its Python 3.12 (already there: kept).
# 2. RUN: the crops and the run's settings, `agecheck train --crops-only --resume` (RUN/crops.npz
#    there: kept, and the settings given now recorded beside it unless they would cut other crops).
# 3. DEVICE_RUN: the pack that travels, re-encoded small (`bench/device_weights.py shrink-pack`).
# Then prints how much the call carries (64 MiB at most) and the commands of "How it was
# trained" in docs/MODEL.md.
set -euo pipefail
trap 'echo "error: bench/device_prep.sh stopped at line $LINENO: the command above failed" >&2' ERR
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
    echo "usage: bash bench/device_prep.sh RUN DEVICE_RUN DATA [DATA ...] [-- TRAIN_OPTION ...]" >&2
    exit 2
fi
RUN=$1 DEVICE_RUN=$2
shift 2
DATA=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do DATA+=(--data "$1"); shift; done
[ $# -gt 0 ] && shift  # the --
BIN=${BIN:-.venv/bin}

grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.devdata/' .git/info/exclude 2>/dev/null || echo /.devdata/ >> .git/info/exclude
for name in keras namex optree; do
    version=$("$BIN/python" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name")
    if ! ls .whl/"$name"-"$version"-*.whl >/dev/null 2>&1; then
        echo "== .whl: $name $version for Python 3.12"
        "$BIN/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any -d .whl "$name==$version"
    fi
done

# (--resume: a RUN cropped before keeps its pack and takes the options given now; one that
# would cut the crops otherwise is refused, naming the option)
echo "== $RUN: crops and settings ($(date +%H:%M))"
"$BIN/agecheck" train "${DATA[@]}" --out "$RUN" --crops-only --resume "$@"
echo "== $DEVICE_RUN: the pack that travels ($(date +%H:%M))"
rm -rf "$DEVICE_RUN"
"$BIN/python" bench/device_weights.py shrink-pack "$RUN" "$DEVICE_RUN"

# What a call carries: the tracked and untracked files git does not ignore, plus .whl and the pack.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carry_bytes=$(du -sb .whl "$DEVICE_RUN" | awk '{s += $1} END {print s}')
shipped_bytes=$(stat -c %s models/age_resnet50_int8.tflite)
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 2^20}'; }
echo
echo "carried: the tree $(mib "$tree_bytes") (of which the shipped .tflite $(mib "$shipped_bytes")), .whl and $DEVICE_RUN $(mib "$carry_bytes"); a call carries 64 MiB at most"
if [ $((tree_bytes - shipped_bytes + carry_bytes)) -gt $((64 * 2**20)) ]; then
    echo "error: over 64 MiB even without the shipped .tflite: split the pack (bench/device_weights.py split-pack)" >&2
    exit 1
fi
cat <<EOF
next (docs/MODEL.md, "How it was trained"):
  mv models/age_resnet50_int8.tflite /tmp/    # out of the tree for the call
  device run, carry [".whl", "$DEVICE_RUN"]: bash bench/device_train.sh $DEVICE_RUN 470 \$OUT 590
  mv /tmp/age_resnet50_int8.tflite models/
  $BIN/python bench/device_weights.py unpack FILES_AT $RUN/model.keras; cp FILES_AT/{report.json,history.csv,fit.log} $RUN/
EOF
