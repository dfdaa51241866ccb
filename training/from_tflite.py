"""A float regressor rebuilt from an exported int8 ``.tflite``, so that a shipped model can be fine-tuned.

The exported graph keeps every convolution's weights, per output channel, as int8 with a
scale, and each batch normalisation folded into the convolution before it (weights scaled,
shift moved into the bias). Dequantised, those are the float weights to within one
quantisation step, which costs the shipped model 0.02 years of MAE (`docs/MODEL.md`). The
rebuilt regressor puts them into the convolutions of `training.model.build_model`'s
ResNet50, each output channel's scale moved into the batch normalisation after it (mean 0,
variance 1 - epsilon: an exact product), frozen: a frozen batch normalisation runs in
inference mode while training, as in Keras' fine-tuning guide, so the first step of a
fine-tune starts from the exported model's estimates and not from batch statistics it never
saw.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge_app.errors import AgecheckError

# ".../resnet50_1/conv3_block2_1_relu_1/Relu;..." -> conv3_block2_1: the Keras layers are
# `{prefix}_conv` and `{prefix}_bn`.
_CONV_PREFIX = re.compile(r"/(conv1|conv\d_block\d+_\d)_(?:relu|bn)(?:_\d+)?/")
_DENSE_NAME = "age_years"


def _dequantised(interpreter, tensor: dict) -> np.ndarray:
    """A constant tensor in float32: (q - zero point) x scale, per channel where it is."""
    values = interpreter.get_tensor(tensor["index"]).astype(np.float32)
    quantisation = tensor["quantization_parameters"]
    scales, zero_points = quantisation["scales"], quantisation["zero_points"]
    if len(scales) == 0:  # already float
        return values
    shape = [1] * values.ndim
    if len(scales) > 1:
        shape[quantisation["quantized_dimension"]] = len(scales)
    return (values - zero_points.reshape(shape)) * scales.reshape(shape).astype(np.float32)


def read_weights(path: str | Path) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(input side in px, {Keras layer name: (kernel, bias)}) of an exported regressor.

    Kernels come in Keras' layout: (h, w, in, out) for convolutions, (in, out) for the
    output unit. Each weight appears once, however many times the graph uses it (the
    mirror-averaged export runs the regressor twice).

    Raises:
        AgecheckError: if the file is not a ``.tflite`` exported by `agecheck export`.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise AgecheckError(f"--init-model {path} could not be read as a TFLite model: {error}") from None
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    side = int(interpreter.get_input_details()[0]["shape"][1])
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for op in interpreter._get_ops_details():  # the public API lists tensors, not which op uses them
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        output = tensors[op["outputs"][0]]["name"]
        match = _CONV_PREFIX.search(output) if op["op_name"] == "CONV_2D" else None
        if not match and not (op["op_name"] == "FULLY_CONNECTED" and f"/{_DENSE_NAME}" in output):
            continue  # not a layer of the regressor
        try:
            kernel, bias = (_dequantised(interpreter, tensors[i]) for i in op["inputs"][1:3])
        except ValueError as error:  # computed, not stored: not a model agecheck export wrote
            raise AgecheckError(f"--init-model {path}: the weights of {output} are not stored constants ({error}); "
                                "expected a .tflite written by agecheck export") from None
        if match:  # TFLite's (out, h, w, in) -> Keras' (h, w, in, out)
            weights[match.group(1)] = (kernel.transpose(1, 2, 3, 0), bias)
        else:
            weights[_DENSE_NAME] = (kernel.T, bias)
    return side, weights


def regressor_from_tflite(path: str | Path):
    """The float regressor of an exported int8 model, batch normalisations folded and frozen.

    Raises:
        AgecheckError: if the file is not a ResNet50 regressor exported by `agecheck export`.
    """
    import keras

    from training.model import build_model

    side, weights = read_weights(path)
    regressor = build_model(side, weights="none")
    backbone = regressor.get_layer("resnet50")
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    expected = {layer.name.removesuffix("_conv") for layer in convs} | {_DENSE_NAME}
    if set(weights) != expected:
        missing = sorted(expected - set(weights))
        raise AgecheckError(
            f"--init-model {path}: expected the {len(expected) - 1} convolutions and output unit of a ResNet50 "
            f"regressor exported by agecheck export, found {len(weights)} ({len(missing)} missing, e.g. "
            f"{', '.join(missing[:3]) or 'none'})"
        )
    for conv in convs:
        kernel, bias = weights[conv.name.removesuffix("_conv")]
        if kernel.shape != tuple(conv.kernel.shape):
            raise AgecheckError(f"--init-model {path}: {conv.name} has a {kernel.shape} kernel, "
                                f"expected {tuple(conv.kernel.shape)}")
        norm = backbone.get_layer(conv.name.removesuffix("_conv") + "_bn")
        # Folding left each output channel's kernel at its own scale (the normalisation's
        # gain); Adam moves every weight by about the rate whatever its size, so the small
        # ones were thrown about (rate 1e-4, batch 64, 60 steps: MAE 6.12 -> 7.87). The gain
        # goes back into the normalisation's scale and the kernels to He initialisation's
        # spread (the same steps: 6.39; batch 256 at 3e-5, 16 steps: 6.13; docs/MODEL.md).
        spread = kernel.reshape(-1, kernel.shape[-1]).std(axis=0)
        gain = np.where(spread > 0, spread / np.sqrt(2.0 / np.prod(kernel.shape[:3])), 1.0).astype(np.float32)
        conv.set_weights([kernel / gain, bias / gain])
        # (x - 0) / sqrt(1 - eps + eps) * gain + 0: the exported convolution exactly.
        norm.set_weights([gain, np.zeros_like(gain), np.zeros_like(gain), np.full_like(gain, 1.0 - norm.epsilon)])
        norm.trainable = False
    regressor.get_layer(_DENSE_NAME).set_weights(list(weights[_DENSE_NAME]))
    return regressor


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def frozen_batch_norms(model) -> set[str]:
    """Names of the batch normalisations that ``model`` (nested models included) keeps frozen."""
    import keras

    return {layer.name for layer in _layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and not layer.trainable}


def freeze_batch_norms(model, names: set[str]) -> None:
    """Freeze the batch normalisations of ``model`` named in ``names`` (as `frozen_batch_norms` found them)."""
    for layer in _layers(model):
        if layer.name in names:
            layer.trainable = False
