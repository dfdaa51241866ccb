"""Draw boxes, ages and the "CHECK ID" banner for the cashier."""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_app.faces import REFUSALS, Faces
from edge_app.policy import CHECKED, CLEARED, FLAGGED, PENDING

RED, GREEN, GREY, BLUE, WHITE = (0, 0, 230), (0, 170, 0), (160, 160, 160), (200, 110, 0), (255, 255, 255)
AMBER = (0, 160, 255)  # a face the quality gate refused, not yet judged
COLOURS = {FLAGGED: RED, CLEARED: GREEN, PENDING: GREY, CHECKED: BLUE}
# What the cashier can ask of a customer whose face the gate refused, by `Faces.refusal`.
HINTS = dict(zip(range(1, len(REFUSALS) + 1), ("come closer", "face the camera", "hold still"), strict=True))


def draw(
    image: np.ndarray,
    faces: Faces,
    decisions: np.ndarray,
    threshold_age: float,
    margin_years: float,
    fps: float | None = None,
    notice: str | None = None,
) -> np.ndarray:
    """Annotate a BGR frame in place, as supervision's annotators do, and return it.

    The loop owns each frame and needs it only annotated; a copy of a 720p frame would cost
    about a millisecond a frame. Pass ``image.copy()`` to keep the original.

    Args:
        image: (H, W, 3) uint8 BGR frame, drawn on.
        faces: tracked faces with aggregate ``age_years``.
        decisions: (n,) from `AgePolicy.decisions`: 1 flagged (red), 0 cleared (green),
            -1 pending (grey), 2 ID checked by the cashier (blue). A pending face that the
            quality gate refused is amber, with what would help (`HINTS`, by ``faces.refusal``):
            "come closer", "face the camera" or "hold still".
        threshold_age: legal age, for the banner.
        margin_years: shown as the ± on each age, so nobody reads it as exact.
        fps: processing rate to show in the corner; ``None`` hides it.
        notice: a line for the cashier in the other bottom corner, on amber (poor light,
            most faces refused); ``None`` shows none.

    Returns:
        ``image``, annotated.
    """
    out = image
    height, width = out.shape[:2]
    scale = max(height / 720, 0.5)
    thickness = max(1, round(2 * scale))
    for box, track_id, age, decision, refusal in zip(faces.xyxy, faces.tracker_id, faces.age_years, decisions,
                                                     faces.refusal.tolist(), strict=True):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        unclear = refusal in HINTS and decision == PENDING
        colour = AMBER if unclear else COLOURS[int(decision)]
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        age_text = HINTS[refusal] if unclear else "age ..." if math.isnan(age) else \
            f"{age:.0f} +/-{margin_years:.0f}"
        label = f"#{track_id} {age_text}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thickness)
        top = max(y0 - th - base - 4, 0)
        cv2.rectangle(out, (x0, top), (x0 + tw + 6, top + th + base + 4), colour, cv2.FILLED)
        cv2.putText(out, label, (x0 + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, WHITE,
                    thickness, cv2.LINE_AA)
    if (decisions == FLAGGED).any():
        banner_h = int(60 * scale) + 10
        cv2.rectangle(out, (0, 0), (width, banner_h), RED, cv2.FILLED)
        text = f"CHECK ID - customer may be under {threshold_age:g}  (space: checked)"
        size = 1.1 * scale
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, size, thickness + 1)
        if tw > width - 8:  # a small frame: shrink the text to fit rather than cut it off
            size *= (width - 8) / tw
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, size, thickness + 1)
        cv2.putText(out, text, (max((width - tw) // 2, 4), (banner_h + th) // 2), cv2.FONT_HERSHEY_DUPLEX,
                    size, WHITE, thickness + 1, cv2.LINE_AA)
    if fps is not None:
        cv2.putText(out, f"{fps:.1f} fps", (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, WHITE,
                    thickness, cv2.LINE_AA)
    if notice:
        (tw, th), base = cv2.getTextSize(notice, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thickness)
        x = max(width - tw - 10, 0)
        cv2.rectangle(out, (x - 5, height - th - base - 12), (width, height), AMBER, cv2.FILLED)
        cv2.putText(out, notice, (x, height - base - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, WHITE, thickness,
                    cv2.LINE_AA)
    return out
