"""Age estimation with LiteRT: batched int8 inference on face crops."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_app.config import AgeModelConfig
from edge_app.errors import AgecheckError
from edge_app.logs import native_stderr_held
from edge_app.model_card import ModelCard

log = logging.getLogger(__name__)


def load_interpreter_class() -> type:
    """LiteRT's Interpreter; else tflite-runtime's; else TensorFlow's (only if installed)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter  # type: ignore[no-redef]
            except ImportError:
                raise AgecheckError(
                    "no TFLite interpreter found: install ai-edge-litert (pip install agecheck)"
                ) from None
    return Interpreter


class AgeRegressor:
    """Runs the age ``.tflite`` on uint8 RGB crops, many crops per ``invoke``.

    The interpreter is not thread-safe: one thread (the frame loop) owns an instance.
    """

    def __init__(self, config: AgeModelConfig, check_sha256: bool = True) -> None:
        path = Path(config.model_path)
        if not path.is_file():
            raise AgecheckError(f"age model {path} does not exist")
        self.card = ModelCard.load(path, check_sha256=check_sha256)
        interpreter_class = load_interpreter_class()
        try:
            with native_stderr_held():
                self._interpreter = interpreter_class(model_path=str(path), num_threads=config.num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise AgecheckError(f"age model {path} could not be loaded: {error}") from None
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise AgecheckError(
                f"age model {path} must have 1 input and 1 output, got {len(inputs)} and {len(outputs)}"
            )
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._input["shape"])
        expected = (self.card.input_size, self.card.input_size, 3)
        if len(shape) != 4 or shape[1:] != expected:
            raise AgecheckError(
                f"age model {path} takes input {shape}, but its card says (n, {expected[0]}, "
                f"{expected[1]}, 3)"
            )
        self.input_size = self.card.input_size
        self.max_batch = config.max_batch
        self._batch = int(shape[0])
        log.info(
            "age model %s: input %s %s, card MAE %.2f years",
            path.name, shape, np.dtype(self._input["dtype"]).name, self.card.mae_years,
        )

    def _to_input(self, crops: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._input["dtype"])
        if dtype == np.float32:
            return crops.astype(np.float32)
        scale, zero_point = self._input["quantization"]
        if scale == 1.0 and zero_point == 0 and dtype == np.uint8:
            return crops  # the usual export: uint8 pixels go in unchanged
        quantized = np.round(crops.astype(np.float32) / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(quantized, info.min, info.max).astype(dtype)

    def _from_output(self, raw: np.ndarray) -> np.ndarray:
        if np.dtype(self._output["dtype"]) == np.float32:
            return raw.astype(np.float32).reshape(-1)
        scale, zero_point = self._output["quantization"]
        return ((raw.astype(np.float32) - zero_point) * scale).reshape(-1)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            # Re-allocating is cheap next to a ResNet50 invoke and happens only when the
            # number of faces in view changes.
            self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(self._input["index"], self._to_input(batch))
        self._interpreter.invoke()
        return self._from_output(self._interpreter.get_tensor(self._output["index"]))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Estimate ages.

        Args:
            crops: (n, S, S, 3) uint8 RGB crops, S = ``input_size``, from ``crop_faces``.

        Returns:
            (n,) float32 ages in years; (0,) for no crops.

        Raises:
            ValueError: if ``crops`` has the wrong shape or dtype.
        """
        expected = (self.input_size, self.input_size, 3)
        if crops.ndim != 4 or crops.shape[1:] != expected or crops.dtype != np.uint8:
            raise ValueError(
                f"crops must be (n, {expected[0]}, {expected[1]}, 3) uint8, got {crops.shape} {crops.dtype}"
            )
        if len(crops) == 0:
            return np.empty(0, np.float32)
        parts = [
            self._invoke(crops[i : i + self.max_batch]) for i in range(0, len(crops), self.max_batch)
        ]
        return np.concatenate(parts).astype(np.float32)

    def predict_views(self, views: np.ndarray) -> np.ndarray:
        """Estimate ages from every test-time view of each face: the mean over its views.

        Args:
            views: (n, views, S, S, 3) uint8 RGB crops, from ``crop_face_views`` with the
                card's crop settings; all views go through the model in the same batches.

        Returns:
            (n,) float32 ages in years; (0,) for no faces.

        Raises:
            ValueError: if ``views`` has the wrong shape or dtype.
        """
        if views.ndim != 5:
            raise ValueError(f"views must be (n, views, S, S, 3), got {views.shape}")
        ages = self.predict(views.reshape(-1, *views.shape[2:]))
        return ages.reshape(views.shape[:2]).mean(axis=1, dtype=np.float64).astype(np.float32)
