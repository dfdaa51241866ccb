"""Face-quality gate: estimate a face only when it is large, sharp and frontal enough.

Poor crops are where the model is most wrong, and every estimate feeds the customer's
median. Faces below quality get no estimate (the cashier sees "look at the camera"); a
customer who never gets enough good estimates is flagged ``face_unclear`` by the policy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from edge_app.config import QualityConfig
from edge_app.crop import CropSettings, crop_faces
from edge_app.faces import Faces

SHARPNESS_SIDE_PX = 64
"""Sharpness is measured on the crop at this side, whatever the model's input: the variance
of the Laplacian falls as the same face is cut at more pixels, and `QualityConfig`'s limit
was set on 64 px crops. (A model input under 64 px gives crops that, scaled up to be
measured, read softer than the face is.)"""

SHARPNESS_SMOOTHING_PX = 1.0
"""Sigma of the Gaussian the 64 px grey crop is smoothed with before its Laplacian. Sensor
noise is all edges to a bare Laplacian, so a blurred face with camera noise on it measured
sharp (`bench/gate_noise.py`); smoothed first, the measure keeps a face's edges and drops most
of the noise's (up to a moderate camera gain; strong noise still adds some)."""

DARK_FACE_BRIGHTNESS = 20.0
BRIGHT_FACE_BRIGHTNESS = 230.0
"""A face whose `brightness` is below the first or above the second is in light where the
shipped model errs more than a year beyond its clean-photo error (`bench/quality_sweep.py`'s
light sweep, ``docs/PERFORMANCE.md``; a new model is swept again, as for the gate's limits).
The gate does not refuse such faces: the light at a till lasts, so refusing them asks every
customer under it, and a wider margin buys more minors for as many adults asked. The run
counts them instead, so that the operator can fix the light (`LightMeter`)."""

POOR_LIGHT_SHARE = 0.2
"""`light_warning` (a whole run) and `LightMeter.notice` (recent estimates) speak from this share in poor light."""


@dataclass(frozen=True)
class FaceMeasures:
    """What the gate looks at, one value per face (NaN where it cannot be measured).

    Attributes:
        eye_distance_px: (n,) pixels between the eye keypoints.
        turn: (n,) distance of the nose from the eyes' midpoint along the eye line, in eye
            distances: 0 for a frontal face, about 0.5 in profile.
        sharpness: (n,) variance of the Laplacian of the grey crop at `SHARPNESS_SIDE_PX`,
            smoothed by `SHARPNESS_SMOOTHING_PX` (only for the crops given).
    """

    eye_distance_px: np.ndarray
    turn: np.ndarray
    sharpness: np.ndarray


def geometry(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
    """(eye distance in pixels, turn) of each face from its BlazeFace keypoints."""
    right_eye, left_eye, nose = faces.keypoints[:, 0], faces.keypoints[:, 1], faces.keypoints[:, 2]
    eye_line = left_eye - right_eye
    distance = np.linalg.norm(eye_line, axis=1)
    unit = eye_line / np.maximum(distance, 1e-6)[:, None]
    offset = np.sum((nose - (left_eye + right_eye) / 2) * unit, axis=1)
    return distance.astype(np.float32), (np.abs(offset) / np.maximum(distance, 1e-6)).astype(np.float32)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """(m,) variance of the Laplacian of each (S, S, 3) uint8 crop's smoothed grey image at 64 px.

    Smoothed first (`SHARPNESS_SMOOTHING_PX`) so that camera noise does not count as detail.
    """
    out = np.empty(len(crops), np.float32)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        if grey.shape != (SHARPNESS_SIDE_PX, SHARPNESS_SIDE_PX):
            grey = cv2.resize(grey, (SHARPNESS_SIDE_PX, SHARPNESS_SIDE_PX), interpolation=cv2.INTER_AREA)
        smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), SHARPNESS_SMOOTHING_PX)
        out[i] = cv2.Laplacian(smooth, cv2.CV_32F).var()
    return out


def brightness(crops: np.ndarray) -> np.ndarray:
    """(m,) mean grey level (0-255) of the middle 60% of each (S, S, 3) uint8 RGB crop: the face, not its framing."""
    if len(crops) == 0:
        return np.empty(0, np.float32)
    side = crops.shape[1]
    lo, hi = int(round(side * 0.2)), int(round(side * 0.8))
    middle = crops[:, lo:hi, lo:hi].astype(np.float32)
    return (middle @ np.array([0.299, 0.587, 0.114], np.float32)).mean(axis=(1, 2))


class LightMeter:
    """How many age estimates are of faces in poor light: per frame, and the share of the last ``window``.

    The run's totals say how a day went; the recent share says how the light is now, for the
    cashier's window and the kiosk's STATUS line.
    """

    def __init__(self, window: int = 60, min_estimates: int = 20) -> None:
        if not 1 <= min_estimates <= window:
            raise ValueError(f"min_estimates must be in [1, window={window}], got {min_estimates}")
        self._poor: deque[bool] = deque(maxlen=window)
        self.min_estimates = min_estimates

    def add(self, crops: np.ndarray) -> tuple[int, int]:
        """Count this frame's estimated ``crops``: (too dark, too bright)."""
        level = brightness(crops)
        dark, bright = level < DARK_FACE_BRIGHTNESS, level > BRIGHT_FACE_BRIGHTNESS
        self._poor.extend((dark | bright).tolist())
        return int(dark.sum()), int(bright.sum())

    def notice(self) -> str | None:
        """``"poor light on N% of recent faces"``, or None while the light is fine or too few were seen.

        It speaks when `POOR_LIGHT_SHARE` or more of the recent estimates (``min_estimates`` at
        least) were of faces in poor light.
        """
        if len(self._poor) < self.min_estimates:
            return None
        share = sum(self._poor) / len(self._poor)
        return f"poor light on {share:.0%} of recent faces" if share >= POOR_LIGHT_SHARE else None


def light_warning(estimates: int, too_dark: int, too_bright: int, share: float = POOR_LIGHT_SHARE) -> str | None:
    """A line for the operator when at least ``share`` of ``estimates`` were of faces in poor light, else None."""
    if estimates == 0 or (too_dark + too_bright) < share * estimates:
        return None
    parts = [f"{n / estimates:.0%} of age estimates were of faces too {what} ({words} {limit:g} of 255)"
             for n, what, words, limit in ((too_dark, "dark", "mean grey under", DARK_FACE_BRIGHTNESS),
                                           (too_bright, "bright", "mean grey over", BRIGHT_FACE_BRIGHTNESS)) if n]
    return (f"poor light at the till: {' and '.join(parts)}; there the model errs more than a year more "
            "than usual (docs/PERFORMANCE.md): light the customer's face evenly, without a window behind")


def measure(faces: Faces, crops: np.ndarray | None = None) -> FaceMeasures:
    """The gate's measures; ``crops`` (one per face, or None) gives the sharpness."""
    distance, turn = geometry(faces)
    sharp = sharpness(crops) if crops is not None else np.full(len(faces), np.nan, np.float32)
    return FaceMeasures(distance, turn, sharp)


def passes(measures: FaceMeasures, config: QualityConfig) -> np.ndarray:
    """(n,) bool: the faces good enough to estimate.

    A measure that is NaN (no keypoints, or no crop) does not fail its check: a detector
    without keypoints must not switch estimation off. A limit of 0 turns its check off.
    """
    ok = np.ones(len(measures.turn), bool)
    with np.errstate(invalid="ignore"):
        if config.min_eye_distance_px:
            ok &= ~(measures.eye_distance_px < config.min_eye_distance_px)
        if config.max_turn:
            ok &= ~(measures.turn > config.max_turn)
        if config.min_smoothed_sharpness:
            ok &= ~(measures.sharpness < config.min_smoothed_sharpness)
    return ok


def gate(
    rgb: np.ndarray, faces: Faces, due: np.ndarray, size: int, crop: CropSettings, config: QualityConfig
) -> tuple[Faces, np.ndarray, np.ndarray]:
    """The frame loop's quality stage: the crops to estimate, of good faces only.

    Size and turn are checked for every face (from its keypoints); sharpness for the faces
    due for an estimate (from their crop, which is cut anyway).

    Args:
        rgb: the frame, (H, W, 3) uint8 RGB.
        faces: tracked faces of this frame.
        due: (n,) bool, the faces the tracker wants estimated.
        size: the age model's input side.
        crop: the model card's crop settings.
        config: the gate's limits.

    Returns:
        ``faces`` with ``quality_ok`` set, ``due`` narrowed to good faces, and their crops
        ((due.sum(), size, size, 3) uint8).
    """
    geometric = measure(faces)
    ok = passes(geometric, config)
    due = due & ok
    crops = crop_faces(rgb, faces.xyxy[due], size, crop, faces.keypoints[due])
    sharp = passes(FaceMeasures(geometric.eye_distance_px[due], geometric.turn[due], sharpness(crops)), config)
    ok[due] = sharp
    due[due] = sharp
    return faces.with_quality(ok), due, crops[sharp]

