"""Face-quality gate: estimate a face only when it is large, sharp and frontal enough.

Poor crops are where the model is most wrong, and every estimate feeds the customer's
median. Faces below quality get no estimate (the cashier sees "look at the camera"); a
customer who never gets enough good estimates is flagged ``face_unclear`` by the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_app.config import QualityConfig
from edge_app.faces import Faces


@dataclass(frozen=True)
class FaceMeasures:
    """What the gate looks at, one value per face (NaN where it cannot be measured).

    Attributes:
        eye_distance_px: (n,) pixels between the eye keypoints.
        turn: (n,) distance of the nose from the eyes' midpoint along the eye line, in eye
            distances: 0 for a frontal face, about 0.5 in profile.
        sharpness: (n,) variance of the Laplacian of the grey crop (only for the crops given).
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
    """(m,) variance of the Laplacian of each (S, S, 3) uint8 crop's grey image."""
    out = np.empty(len(crops), np.float32)
    for i, crop in enumerate(crops):
        out[i] = cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
    return out


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
        if config.min_sharpness:
            ok &= ~(measures.sharpness < config.min_sharpness)
    return ok
