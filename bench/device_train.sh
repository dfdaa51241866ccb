#!/usr/bin/env bash
# Fit a cropped run on a lent GPU machine, which has JAX and PyTorch but no TensorFlow or
# MediaPipe: Keras 3 travels as wheels in .whl/ (keras, namex, optree), the run folder
# (train_config.json + crops.npz, made here by `agecheck train --crops-only`) as RUN. A pack
# over one call's 64 MiB comes in parts (`bench/device_weights.py split-pack`), copied into
# /tmp/agecheck-stash by earlier calls to the same warm machine: `bench/join_pack.sh` joins them.
#
#   bash bench/device_train.sh RUN BUDGET_S OUT [LIMIT_S]
#
# Runs the fit on JAX (PyTorch if JAX cannot train), within BUDGET_S seconds of fitting,
# then writes the best regressor's weights as shards of < 16 MiB, the report, the history
# and the log into OUT. Back here: python bench/device_weights.py unpack OUT RUN/model.keras
set -uo pipefail
run=$1; budget=$2; out=$3; limit=${4:-590}  # the whole script ends within LIMIT_S
bash "$(dirname "$0")/join_pack.sh" "$run" || exit 1  # a pack that came in parts (split-pack)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export KERAS_BACKEND=jax
if ! timeout 150 python3 - <<'PY'
import numpy as np, keras
from training.fit import accelerator
from training.augment import CameraAugment
assert accelerator() == "gpu", "JAX sees no GPU"
inputs = keras.Input((80, 80, 3))
x = CameraAugment(64, 1.25, seed=0)(inputs)
m = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))))
m.compile("adam", "mse")
m.fit(np.zeros((64, 80, 80, 3), np.uint8), np.zeros(64), batch_size=32, epochs=1, verbose=0)
print("jax backend trains on", accelerator())
PY
then
  echo "JAX failed: falling back to PyTorch"
  export KERAS_BACKEND=torch
fi
timeout $((limit - SECONDS - 30)) python3 -m training.fit "$run" --time-budget-s "$budget" --no-backup 2>&1 | tee "$out/fit.log" | grep -v "^Epoch\|━"
if [ -f "$run/model.keras" ]; then
  python3 bench/device_weights.py pack "$run/model.keras" "$out"
fi
cp "$run"/report.json "$run"/history.csv "$out"/ 2>/dev/null  # 8 files at most come back
ls -la "$out"
