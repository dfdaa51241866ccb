"""Training and inference throughput of the ResNet50 regressor on this machine.

    python bench/train_speed.py 64 float32 96 float32 64 mixed_bfloat16
    python bench/train_speed.py --augment 64

Pairs of (input size, Keras dtype policy). Random data: this measures speed, not learning.
``--augment SIZE`` instead times `training.augment.CameraAugment` alone, as training runs it
(stored crops 1.25 times SIZE, batches of 256), in crops per second.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from training.model import build_model  # noqa: E402


def measure(size: int, policy: str, batch: int = 64, batches: int = 6) -> tuple[float, float]:
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(size, "none", 1e-4, 30.0)
    x = np.random.default_rng(0).integers(0, 256, (batch * batches, size, size, 3)).astype("float32")
    y = np.full(len(x), 30.0, "float32")
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # build and warm up
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    train = len(x) / (time.perf_counter() - started)
    started = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    return train, len(x) / (time.perf_counter() - started)


def measure_augment(size: int, batch: int = 256, batches: int = 5) -> float:
    """Crops per second through `CameraAugment` (training=True) on this machine's Keras backend."""
    from training.augment import CameraAugment

    layer = CameraAugment(size, 1.25, seed=0)
    stored = int(round(size * layer.context))
    x = np.random.default_rng(0).integers(0, 256, (batch, stored, stored, 3)).astype("float32")
    np.asarray(layer(x, training=True))  # build and warm up
    started = time.perf_counter()
    for _ in range(batches):
        np.asarray(layer(x, training=True))
    return batch * batches / (time.perf_counter() - started)


def main() -> None:
    args = sys.argv[1:] or ["64", "float32"]
    if args[0] == "--augment":
        for size in args[1:] or ["64"]:
            print(f"CameraAugment at {size} px: {measure_augment(int(size)):.0f} crops/s on {os.cpu_count()} cores")
        return
    print(f"{os.cpu_count()} cores\n")
    print("| input px | policy | train img/s | predict img/s |\n| ---: | --- | ---: | ---: |")
    for size, policy in zip(args[::2], args[1::2], strict=True):
        train, predict = measure(int(size), policy)
        print(f"| {size} | {policy} | {train:.1f} | {predict:.1f} |")


if __name__ == "__main__":
    main()
