"""Tiny real TFLite age models, built through the project's own int8 converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_app.model_card import write_card


def brightness_model(out_path: Path, input_size: int = 32, mae: float = 5.0) -> Path:
    """An int8 ``.tflite`` + card whose "age" is 100 x the crop's mean brightness (0-255 -> 0-100).

    Predictable output lets tests check numbers (batching, dequantisation, policy) instead of
    shapes alone.
    """
    import keras

    from training.export import convert_int8

    keras.mixed_precision.set_global_policy("float32")
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(1, activation="relu")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.full((3, 1), 100 / 255 / 3, np.float32), np.zeros(1, np.float32)])
    rng = np.random.default_rng(0)
    representative = rng.integers(0, 256, (64, input_size, input_size, 3), dtype=np.uint8)
    representative[:8] = 0
    representative[8:16] = 255
    out_path.parent.mkdir(parents=True, exist_ok=True)
    convert_int8(model, representative, out_path)
    write_card(out_path, {
        "architecture": "brightness test model",
        "input_size": input_size,
        "crop": {"margin": 0.1, "pad": "edge"},
        "mae": mae,
    })
    return out_path
