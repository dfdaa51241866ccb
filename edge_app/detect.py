"""Face detection with MediaPipe Tasks BlazeFace -> `Faces`."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import DetectorConfig
from edge_app.errors import AgecheckError
from edge_app.faces import KEYPOINTS, Faces
from edge_app.logs import native_stderr_held

# MediaPipe's C++ side logs every graph start at INFO to stderr; keep journald readable.
os.environ.setdefault("GLOG_minloglevel", "2")
# Native output of a detector's first detections is held back unless --verbose (see detect).
WARM_UP_DETECTIONS = 3


def _import_mediapipe():
    """Import MediaPipe without letting it load TensorFlow.

    MediaPipe imports TensorFlow, when installed, only for its API-doc decorators and falls
    back when the import fails. Where the training extra is installed that import would
    cost the edge app seconds of start-up and hundreds of MB, so TensorFlow is hidden from
    it unless something already loaded it.
    """
    if "tensorflow" in sys.modules:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    else:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]  # import raises ModuleNotFoundError
        try:
            import mediapipe
            from mediapipe.tasks.python import BaseOptions, vision
        finally:
            del sys.modules["tensorflow"]
    return mediapipe, BaseOptions, vision


mp, BaseOptions, vision = _import_mediapipe()


class FaceDetector:
    """BlazeFace in VIDEO mode (one frame at a time, increasing timestamps) or IMAGE mode.

    In VIDEO mode it runs at most once per ``config.min_interval_ms`` of video time: a frame
    sooner than that after the last detection gets that detection's faces again, and
    ``detections`` counts the frames BlazeFace actually ran on.

    Use as a context manager so the MediaPipe graph is closed::

        with FaceDetector(DetectorConfig()) as detector:
            faces = detector.detect(rgb, timestamp_ms=0)
    """

    def __init__(self, config: DetectorConfig, video: bool = True) -> None:
        path = Path(config.model_path)
        if not path.is_file():
            raise AgecheckError(f"face detector model {path} does not exist")
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=mode,
            min_detection_confidence=config.min_detection_confidence,
            min_suppression_threshold=config.min_suppression_threshold,
        )
        try:
            with native_stderr_held():
                self._detector = vision.FaceDetector.create_from_options(options)
        except (RuntimeError, ValueError) as error:
            raise AgecheckError(f"face detector model {path} could not be loaded: {error}") from None
        self._video = video
        self._min_interval_ms = config.min_interval_ms
        self._max_side_px = config.max_input_side_px
        self._last_timestamp_ms: int | None = None
        self._last_detection: tuple[int, Faces] | None = None  # (timestamp_ms, faces)
        self.detections = 0

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> Faces:
        """Find faces in one RGB image.

        Args:
            rgb: (H, W, 3) uint8 RGB image.
            timestamp_ms: frame time; required in VIDEO mode and must increase strictly.

        Returns:
            Faces with ``xyxy`` in pixels of ``rgb`` and ``confidence`` (in VIDEO mode within
            ``min_interval_ms`` of the last detection: that detection's faces).

        Raises:
            ValueError: if ``timestamp_ms`` is missing in VIDEO mode or does not increase.
        """
        if self._video:
            if timestamp_ms is None:
                raise ValueError("timestamp_ms is required in VIDEO mode")
            if self._last_timestamp_ms is not None and timestamp_ms <= self._last_timestamp_ms:
                raise ValueError(
                    f"timestamp_ms must increase: got {timestamp_ms} after {self._last_timestamp_ms}"
                )
            self._last_timestamp_ms = int(timestamp_ms)
            if self._last_detection is not None and timestamp_ms - self._last_detection[0] < self._min_interval_ms:
                return self._last_detection[1]
        height, width = rgb.shape[:2]
        # average k x k blocks, which BlazeFace would otherwise sample (see DetectorConfig)
        k = -(-max(height, width) // self._max_side_px) if self._max_side_px else 1
        if k > 1:  # a whole factor: OpenCV's fast path, and boxes scale back by exactly k
            small = cv2.resize(rgb[: height // k * k, : width // k * k], (width // k, height // k),
                               interpolation=cv2.INTER_AREA)
        else:
            small = rgb
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(small))
        # The first detections print native lines too: start-up chatter on the first, and on
        # about one start in 30 a LiteRT note on the second that it copied a misaligned input
        # tensor (measured on the demo clip; MediaPipe's own tensor, not the frame we pass).
        with native_stderr_held() if self.detections < WARM_UP_DETECTIONS else contextlib.nullcontext():
            if self._video:
                result = self._detector.detect_for_video(image, int(timestamp_ms))
            else:
                result = self._detector.detect(image)
        self.detections += 1
        faces = faces_from_result(result, small.shape[1], small.shape[0], scale=k)
        if self._video:
            self._last_detection = (int(timestamp_ms), faces)
        return faces

    def close(self) -> None:
        """Release the MediaPipe graph."""
        with native_stderr_held():
            self._detector.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def faces_from_result(result: vision.FaceDetectorResult, width: int, height: int, scale: int = 1) -> Faces:
    """Adapt a MediaPipe detection result to `Faces` (keypoints from normalised to pixels).

    ``width`` x ``height`` is the image BlazeFace was given; boxes and keypoints come back in the
    pixels of an image ``scale`` times as large (the frame that image was averaged down from).
    """
    if not result.detections:
        return Faces.empty()
    boxes = [d.bounding_box for d in result.detections]
    xyxy = np.array(
        [[b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height] for b in boxes],
        np.float32,
    ) * np.float32(scale)
    confidence = np.array([d.categories[0].score for d in result.detections], np.float32)
    keypoints = np.full((len(boxes), len(KEYPOINTS), 2), np.nan, np.float32)
    for i, detection in enumerate(result.detections):
        points = [(k.x * width * scale, k.y * height * scale) for k in (detection.keypoints or [])][: len(KEYPOINTS)]
        if points:
            keypoints[i, : len(points)] = points
    return Faces(xyxy=xyxy, confidence=confidence, keypoints=keypoints)
