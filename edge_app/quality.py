"""Face-quality gate: estimate a face only when it is large, sharp and frontal enough.

Poor crops are where the model is most wrong, and every estimate feeds the customer's
median. Faces below quality get no estimate (the cashier sees what would help: "come
closer", "face the camera", "hold still"); a customer who never gets enough good estimates
is flagged ``face_unclear`` by the policy. A run counts the refusals by reason and, when the
gate refuses most faces, tells the operator what to change at the till (`refusal_warning`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from edge_app.config import QualityConfig
from edge_app.crop import CropSettings, crop_face_views
from edge_app.faces import NOT_REFUSED, REFUSALS, Faces

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


class RecentWindow:
    """The last ``window`` values of a run, read only once ``least`` of them were seen.

    What `LightMeter` and `RefusalMeter` speak from: the recent past, not the whole run.
    """

    def __init__(self, window: int, least: int, least_name: str = "least") -> None:
        if not 1 <= least <= window:
            raise ValueError(f"{least_name} must be in [1, window={window}], got {least}")
        self._values: deque[int] = deque(maxlen=window)
        self.least = least

    def extend(self, values: np.ndarray) -> None:
        """Add one frame's values (the oldest leave the window)."""
        self._values.extend(values.tolist())

    def values(self) -> np.ndarray | None:
        """(m,) the window's values, oldest first; None while fewer than ``least`` were seen."""
        if len(self._values) < self.least:
            return None
        return np.fromiter(self._values, np.intp, len(self._values))


class LightMeter:
    """How many age estimates are of faces in poor light: per frame, and the share of the last ``window``.

    The run's totals say how a day went; the recent share says how the light is now, for the
    cashier's window and the kiosk's STATUS line.
    """

    def __init__(self, window: int = 60, min_estimates: int = 20) -> None:
        self._poor = RecentWindow(window, min_estimates, "min_estimates")

    def add(self, crops: np.ndarray) -> tuple[int, int]:
        """Count this frame's estimated ``crops``: (too dark, too bright)."""
        level = brightness(crops)
        dark, bright = level < DARK_FACE_BRIGHTNESS, level > BRIGHT_FACE_BRIGHTNESS
        self._poor.extend(dark | bright)
        return int(dark.sum()), int(bright.sum())

    def notice(self) -> str | None:
        """``"poor light on N% of recent faces"``, or None while the light is fine or too few were seen.

        It speaks when `POOR_LIGHT_SHARE` or more of the recent estimates (``min_estimates`` at
        least) were of faces in poor light.
        """
        poor = self._poor.values()
        if poor is None:
            return None
        share = poor.mean()
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


REFUSED_SHARE = 0.5
"""`refusal_warning` speaks when the gate refused this share of the face sightings or more."""

_TILL_ADVICE = {
    "too_small": "put the camera nearer where customers stand, or zoom in (the gate needs {min_eye_distance_px:g} px "
                 "between the eyes: [quality] min_eye_distance_px)",
    "turned": "point the camera along the customers' line of sight, at face height",
    "blurred": "focus the camera, clean its lens and light the till better: less light means a longer exposure "
               "and more motion blur",
}


def _per_reason(codes: np.ndarray) -> np.ndarray:
    """(len(REFUSALS),) how many of ``codes`` (`Faces.refusal` codes) name each reason."""
    return np.bincount(codes.astype(np.intp), minlength=len(REFUSALS) + 1)[NOT_REFUSED + 1:]


def refusal_counts(faces: Faces) -> dict[str, int]:
    """How many of ``faces`` the gate refused, per reason in `REFUSALS` (zeros included)."""
    return dict(zip(REFUSALS, _per_reason(faces.refusal).tolist(), strict=True))


class RefusalMeter:
    """The share of recent face sightings the gate refused, and its commonest reason.

    A customer turning away or walking in from afar is refused for a moment; a camera too
    far, out of focus or off the customers' line of sight refuses most faces for as long as
    it stays so. The window (about 30 s of one face at 30 fps) is long enough to tell the two
    apart; `notice` speaks for the second.
    """

    def __init__(self, window: int = 900, min_sightings: int = 300) -> None:
        self._codes = RecentWindow(window, min_sightings, "min_sightings")

    def add(self, faces: Faces) -> dict[str, int]:
        """Count this frame's ``faces`` (with ``refusal`` set by `gate`): refusals per reason."""
        self._codes.extend(faces.refusal)
        return refusal_counts(faces)

    def notice(self) -> str | None:
        """``"N% of recent faces refused, mostly blurred"``; None under `REFUSED_SHARE` or with too few seen."""
        codes = self._codes.values()
        if codes is None:
            return None
        refused = _per_reason(codes)
        if refused.sum() < REFUSED_SHARE * len(codes):
            return None
        worst = REFUSALS[int(refused.argmax())].replace("_", " ")
        return f"{refused.sum() / len(codes):.0%} of recent faces refused, mostly {worst}"


def refusal_warning(faces: int, refused: dict[str, int], config: QualityConfig,
                    share: float = REFUSED_SHARE) -> str | None:
    """A line for the operator when the gate refused at least ``share`` of ``faces`` (face sightings), else None.

    Args:
        faces: faces seen, summed over frames.
        refused: refusals per reason (`refusal_counts` summed over the run).
        config: the gate's limits, named in the advice.
        share: the share of refused sightings from which the line speaks.
    """
    total = sum(refused.values())
    if faces == 0 or total == 0 or total < share * faces:
        return None
    parts = ", ".join(f"{n / faces:.0%} {reason.replace('_', ' ')}" for reason, n in refused.items() if n)
    worst = max(refused, key=refused.__getitem__)
    return (f"the quality gate refused {total / faces:.0%} of the faces seen ({parts}), and customers it cannot "
            f"judge are flagged face_unclear; mostly {worst.replace('_', ' ')}: "
            + _TILL_ADVICE[worst].format(min_eye_distance_px=config.min_eye_distance_px))


def measure(faces: Faces, crops: np.ndarray | None = None) -> FaceMeasures:
    """The gate's measures; ``crops`` (one per face, or None) gives the sharpness."""
    distance, turn = geometry(faces)
    sharp = sharpness(crops) if crops is not None else np.full(len(faces), np.nan, np.float32)
    return FaceMeasures(distance, turn, sharp)


def refusals(measures: FaceMeasures, config: QualityConfig) -> np.ndarray:
    """(n,) int8: why each face fails the gate, as `Faces.refusal` codes (`NOT_REFUSED` where it passes).

    The checks go in `REFUSALS`' order (too small, turned, blurred) and the first that
    fails names the face. A measure that is NaN (no keypoints, or no crop) does not fail its
    check: a detector without keypoints must not switch estimation off. A limit of 0 turns
    its check off.
    """
    out = np.full(len(measures.turn), NOT_REFUSED, np.int8)
    checks = {"too_small": (measures.eye_distance_px, config.min_eye_distance_px, np.less),
              "turned": (measures.turn, config.max_turn, np.greater),
              "blurred": (measures.sharpness, config.min_smoothed_sharpness, np.less)}
    with np.errstate(invalid="ignore"):
        for code, reason in reversed(list(enumerate(REFUSALS, start=1))):  # so that the first failed check is kept
            values, limit, fails = checks[reason]
            if limit:
                out[fails(values, limit)] = code
    return out


def passes(measures: FaceMeasures, config: QualityConfig) -> np.ndarray:
    """(n,) bool: the faces good enough to estimate (`refusals` finds nothing against them)."""
    return refusals(measures, config) == NOT_REFUSED


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
        ``faces`` with ``refusal`` set (why each refused face was), ``due`` narrowed to good
        faces, and their crops, every test-time view of each ((due.sum(), views, size, size, 3)
        uint8, `crop_face_views`; sharpness is judged on view 0, the card's own framing).
    """
    geometric = measure(faces)
    refusal = refusals(geometric, config)
    due = due & (refusal == NOT_REFUSED)
    views = crop_face_views(rgb, faces.xyxy[due], size, crop, faces.keypoints[due])
    judged = refusals(FaceMeasures(geometric.eye_distance_px[due], geometric.turn[due], sharpness(views[:, 0])),
                      config)
    refusal[due] = judged
    sharp = judged == NOT_REFUSED
    due[due] = sharp
    return faces.with_quality(refusal), due, views[sharp]

