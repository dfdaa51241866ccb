"""Face crops, shared by the edge app and training so that both see the same pixels.

The age model learns from crops made by :func:`crop_faces` and the app feeds it crops made
by the same function, with the settings the model card records (``CropSettings``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class CropSettings:
    """How a detector box becomes a model input.

    Attributes:
        margin: fraction of the squared box's side added on *each* side. A BlazeFace box
            spans about forehead to chin, which is how UTKFace's aligned chips are framed
            (the short-range box is ~96% of a 200 px chip), so a small margin makes live
            crops look like the training photos. Larger margins add hair line and ears but
            also background, neighbours and, on cropped photos, padding.
        pad: ``"edge"`` (replicate) or ``"constant"`` (black) where the expanded box leaves
            the frame; replicated edges look less unlike a real background than black bars.
        align: rotate each crop about the box centre so that the eyes (BlazeFace keypoints)
            are level; faces without keypoints are cut unrotated.
        view_margins: test-time views: further margins at which the app cuts each face too,
            its estimate being the mean over all views (``margin``'s first). Empty: one view,
            as the model was trained. Averaging a slightly tighter and a slightly wider
            framing makes an estimate depend less on where the detector's box fell.
    """

    margin: float = 0.1
    pad: str = "edge"
    align: bool = False
    view_margins: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"crop margin must be in [0, 2], got {self.margin}")
        if self.pad not in ("constant", "edge"):
            raise ValueError(f"crop pad must be 'constant' or 'edge', got {self.pad!r}")
        try:
            view_margins = tuple(float(m) for m in self.view_margins)
        except (TypeError, ValueError):
            raise ValueError(f"crop view_margins must be a list of numbers, got {self.view_margins!r}") from None
        if not all(0.0 <= m <= 2.0 for m in view_margins):
            raise ValueError(f"crop view_margins must each be in [0, 2], got {list(view_margins)}")
        object.__setattr__(self, "view_margins", view_margins)  # a card's JSON list, made hashable

    @property
    def views(self) -> tuple[CropSettings, ...]:
        """One setting per test-time view, each of a single framing: ``margin``'s, then each of ``view_margins``."""
        return (replace(self, view_margins=()), *(replace(self, margin=m, view_margins=()) for m in self.view_margins))

    def to_dict(self) -> dict:
        """JSON-ready form for the model card (``view_margins`` only where there are any, as cards before them)."""
        out = asdict(self)
        if not self.view_margins:
            del out["view_margins"]
        else:
            out["view_margins"] = list(self.view_margins)
        return out


def square_boxes(xyxy: np.ndarray, margin: float) -> np.ndarray:
    """Square each box around its centre and grow it by ``margin`` of its side on each side.

    Args:
        xyxy: (n, 4) boxes in pixels.
        margin: fraction of the square's side added on each side.

    Returns:
        (n, 4) float32 square boxes, not clipped to any image.
    """
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    side = np.maximum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]) * (1 + 2 * margin)
    half = np.maximum(side, 1.0)[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def eye_angles_deg(keypoints: np.ndarray) -> np.ndarray:
    """Roll of each face in degrees from its eye keypoints; 0 where they are unknown.

    Args:
        keypoints: (n, 6, 2) BlazeFace keypoints in pixels (``Faces.keypoints``).

    Returns:
        (n,) float32 angle of the line from the right eye to the left eye (image x to the
        right, y down): rotating a crop by this angle about its centre levels the eyes.
    """
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, 6, 2)
    delta = keypoints[:, 1] - keypoints[:, 0]
    angle = np.degrees(np.arctan2(delta[:, 1], delta[:, 0]))
    # The eyes' order is the detector's guess; a face is never upside down at a till.
    angle = np.where(angle > 90, angle - 180, np.where(angle < -90, angle + 180, angle))
    return np.where(np.isfinite(angle), angle, 0.0).astype(np.float32)


def _rotated_crop(image: np.ndarray, box: np.ndarray, angle_deg: float, size: int, border: int) -> np.ndarray:
    """``size`` square of ``box`` (square, pixels) rotated by ``angle_deg`` about its centre.

    The box is first cut with room for any rotation and resized with INTER_AREA, so faces
    much larger than ``size`` are not aliased; the rotation then happens at output scale.
    """
    centre = (box[:2] + box[2:]) / 2
    side = float(box[2] - box[0])
    room = 1.5  # > sqrt(2): the rotated square's corners stay inside the cut
    big = np.round(np.concatenate([centre - side * room / 2, centre + side * room / 2])).astype(np.int64)
    cut = _cut(image, big, border)
    big_px = max(int(round(size * room)), size + 2)
    scaled = cv2.resize(cut, (big_px, big_px), interpolation=cv2.INTER_AREA if cut.shape[0] > big_px
                        else cv2.INTER_LINEAR)
    middle = (big_px - 1) / 2
    scale = size * cut.shape[0] / (side * big_px)  # scaled pixels -> output pixels
    matrix = cv2.getRotationMatrix2D((middle, middle), float(angle_deg), scale)
    matrix[:, 2] += (size - 1) / 2 - middle
    return cv2.warpAffine(scaled, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def _cut(image: np.ndarray, box: np.ndarray, border: int) -> np.ndarray:
    """Pixels of integer ``box`` (x0, y0, x1, y1), padded where it leaves the image."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    inside = image[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if inside.size == 0:  # the whole box lies outside the frame
        return np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    return cv2.copyMakeBorder(
        inside,
        top=max(-y0, 0),
        bottom=max(y1 - height, 0),
        left=max(-x0, 0),
        right=max(x1 - width, 0),
        borderType=border,
        value=(0, 0, 0),
    )


def crop_face_views(
    image: np.ndarray,
    xyxy: np.ndarray,
    size: int,
    settings: CropSettings = CropSettings(),
    keypoints: np.ndarray | None = None,
) -> np.ndarray:
    """Every test-time view of each face (``settings.views``), by `crop_faces`.

    Returns:
        (n, views, size, size, 3) uint8; view 0 is the card's own framing.
    """
    return np.stack([crop_faces(image, xyxy, size, view, keypoints) for view in settings.views], axis=1)


def crop_faces(
    image: np.ndarray,
    xyxy: np.ndarray,
    size: int,
    settings: CropSettings = CropSettings(),
    keypoints: np.ndarray | None = None,
) -> np.ndarray:
    """Cut square, margin-expanded, edge-padded crops and resize them to ``size``.

    Args:
        image: (H, W, 3) uint8 image; crops keep its channel order (the app passes RGB).
        xyxy: (n, 4) face boxes in pixels.
        size: side of the output crops in pixels.
        settings: margin, padding and alignment, as recorded in the model card.
        keypoints: (n, 6, 2) BlazeFace keypoints in pixels; with ``settings.align`` each
            crop is rotated so that the eyes are level.

    Returns:
        (n, size, size, 3) uint8 crops; (0, size, size, 3) when there are no boxes.

    Raises:
        ValueError: if ``image`` is not (H, W, 3) uint8 or ``size`` < 1.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    squares = square_boxes(xyxy, settings.margin)
    angles = np.zeros(len(squares), np.float32)
    if settings.align and keypoints is not None:
        angles = eye_angles_deg(keypoints)
    crops = np.empty((len(squares), size, size, 3), np.uint8)
    border = cv2.BORDER_CONSTANT if settings.pad == "constant" else cv2.BORDER_REPLICATE
    for i, (square, angle) in enumerate(zip(squares, angles, strict=True)):
        if abs(angle) >= 0.5:
            crops[i] = _rotated_crop(image, square, angle, size, border)
            continue
        padded = _cut(image, np.round(square).astype(np.int64), border)
        # INTER_AREA when shrinking avoids aliasing; most faces are larger than the input.
        shrink = padded.shape[0] > size
        crops[i] = cv2.resize(
            padded, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    return crops
