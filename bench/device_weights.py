"""Move a trained regressor's weights off a lent GPU machine, and back into a ``.keras`` here.

    python bench/device_weights.py pack RUN/model.keras OUT_DIR     (there)
    python bench/device_weights.py unpack SHARD_DIR RUN/model.keras  (here)
    python bench/device_weights.py shrink-pack RUN DEVICE_RUN         (here, before)
    python bench/device_weights.py split-pack DEVICE_RUN PARTS_DIR    (here, if still too big)

``shrink-pack`` copies a run's config and re-encodes its crop pack as WebP q85 (~1.4 KB a
crop instead of ~3 KB), so that 37k crops fit the 64 MiB that travels to the machine.

``split-pack`` is for a pack that is still over one call's budget (larger crops for a larger
input): it cuts ``crops.npz`` into byte parts of at most 55 MiB, ``PARTS_DIR/NN/crops.npz.partNN``,
and leaves the pack's SHA-256 beside the config. Each part folder travels in its own call to
one warm machine (files under /tmp there outlive a call while the machine stays warm; the
next call must come within its 30 s of idling), copied into ``/tmp/agecheck-stash``;
`bench/join_pack.sh`, run by `bench/device_train.sh`, joins and checks them.

The GPU machine returns files of at most 16 MiB, 64 MiB together; a float32 ResNet50 is
~94 MB. ``pack`` writes the weights as float16 shards (float32 for arrays under 100k
values: batch-norm statistics keep their precision); ``unpack`` rebuilds the regressor
with `training.model.build_model` and loads them. float16 rounding (relative 5e-4) is far
below the int8 quantisation the model goes through next.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD_BYTES = 15 * 2**20


def pack(model_path: Path, out_dir: Path) -> None:
    import keras

    import training.model  # noqa: F401  (registers ResNetPreprocess)

    model = keras.models.load_model(model_path, compile=False)
    arrays = [w if w.size < 100_000 else w.astype(np.float16) for w in model.get_weights()]
    shards, current, size = [], {}, 0
    for i, array in enumerate(arrays):
        if size + array.nbytes > SHARD_BYTES and current:
            shards.append(current)
            current, size = {}, 0
        current[f"w{i:04d}"] = array
        size += array.nbytes
    shards.append(current)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, shard in enumerate(shards):
        np.savez(out_dir / f"weights_{k}.npz", **shard)
    (out_dir / "weights.json").write_text(json.dumps({"arrays": len(arrays), "shards": len(shards),
                                                      "input_size": int(model.input_shape[1])}))
    print(f"{len(arrays)} arrays in {len(shards)} shards")


def unpack(shard_dir: Path, model_path: Path) -> None:
    import keras

    from training.model import build_model

    meta = json.loads((shard_dir / "weights.json").read_text())
    arrays = {}
    for k in range(meta["shards"]):
        with np.load(shard_dir / f"weights_{k}.npz") as shard:
            arrays.update({name: shard[name].astype(np.float32) for name in shard.files})
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(meta["input_size"], weights="none")
    model.set_weights([arrays[f"w{i:04d}"] for i in range(meta["arrays"])])
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(model_path)
    print(f"wrote {model_path}")


def shrink_pack(run: Path, device_run: Path) -> None:
    import shutil

    from training.pack import PACK_NAME, load_pack, save_pack

    device_run.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "train_config.json", device_run / "train_config.json")
    save_pack(device_run / PACK_NAME, load_pack(run / PACK_NAME), codec="webp", quality=85)
    print(f"{device_run / PACK_NAME}: {(device_run / PACK_NAME).stat().st_size / 2**20:.1f} MiB")


PART_BYTES = 55 * 2**20


def split_pack(device_run: Path, parts_dir: Path, part_bytes: int = PART_BYTES) -> None:
    import hashlib

    from training.pack import PACK_NAME

    pack_path = device_run / PACK_NAME
    data = pack_path.read_bytes()
    (device_run / f"{PACK_NAME}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {PACK_NAME}\n")
    for k, start in enumerate(range(0, len(data), part_bytes)):
        folder = parts_dir / f"{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{PACK_NAME}.part{k:02d}").write_bytes(data[start : start + part_bytes])
    pack_path.unlink()  # the parts travel instead
    print(f"{pack_path}: {len(data) / 2**20:.1f} MiB in {k + 1} parts under {parts_dir}")


VERBS = {"pack": pack, "unpack": unpack, "shrink-pack": shrink_pack, "split-pack": split_pack}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in VERBS:
        sys.exit(f"usage: device_weights.py {{{','.join(VERBS)}}} A B; got {' '.join(sys.argv[1:]) or 'nothing'}")
    try:
        VERBS[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
    except FileNotFoundError as error:
        sys.exit(f"error: {error.filename}: no such file; "
                 "expected the inputs named at the top of bench/device_weights.py")
