"""`Faces`: the one type that flows through detect -> crop -> age -> track -> policy -> overlay."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

UNTRACKED = -1
# BlazeFace's six keypoints, in its order: right eye, left eye (the person's own sides),
# nose tip, mouth centre, right and left ear tragion.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
# Why the quality gate refused a face (`Faces.refusal` holds 1 + the index here; 0: not refused).
REFUSALS = ("too_small", "turned", "blurred")
NOT_REFUSED = 0


def _check_shape(name: str, array: np.ndarray, shape: tuple[int | None, ...]) -> None:
    ok = array.ndim == len(shape) and all(
        want is None or want == got for want, got in zip(shape, array.shape, strict=False)
    )
    if not ok:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"Faces.{name} must have shape {want}, got {array.shape}")


@dataclass
class Faces:
    """Faces found in one frame, as parallel numpy arrays of length n.

    Attributes:
        xyxy: (n, 4) float32 boxes in pixels, ``x_min, y_min, x_max, y_max``.
        confidence: (n,) float32 detector scores in [0, 1].
        tracker_id: (n,) int64 track ids; ``UNTRACKED`` (-1) before tracking.
        age_years: (n,) float32 age estimate in years (the track's aggregate once tracked);
            NaN where no estimate exists yet.
        estimates: (n,) int64 number of age estimates behind ``age_years``.
        age_spread_years: (n,) float32 interquartile range of those estimates; NaN while
            ``age_years`` is NaN.
        refusal: (n,) int8, why the quality gate refused the face this frame: 1 + its index
            in `REFUSALS` (too small, turned, blurred), or `NOT_REFUSED` (0). `quality_ok`
            is ``refusal == NOT_REFUSED``.
        keypoints: (n, 6, 2) float32 landmark positions in pixels, in ``KEYPOINTS`` order;
            NaN where the detector gave none.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    tracker_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    age_years: np.ndarray = field(default=None)  # type: ignore[assignment]
    estimates: np.ndarray = field(default=None)  # type: ignore[assignment]
    keypoints: np.ndarray = field(default=None)  # type: ignore[assignment]
    age_spread_years: np.ndarray = field(default=None)  # type: ignore[assignment]
    refusal: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32)
        if self.tracker_id is None:
            self.tracker_id = np.full(n, UNTRACKED, dtype=np.int64)
        if self.age_years is None:
            self.age_years = np.full(n, np.nan, dtype=np.float32)
        if self.estimates is None:
            self.estimates = np.zeros(n, dtype=np.int64)
        if self.age_spread_years is None:
            self.age_spread_years = np.full(n, np.nan, dtype=np.float32)
        self.age_spread_years = np.asarray(self.age_spread_years, dtype=np.float32)
        if self.refusal is None:
            self.refusal = np.full(n, NOT_REFUSED, np.int8)
        elif np.asarray(self.refusal).dtype == bool:  # quality_ok's meaning is the opposite: no silent flip
            raise ValueError("Faces.refusal takes reason codes (0: not refused, 1 + index in REFUSALS), got bools")
        self.refusal = np.asarray(self.refusal, np.int8)
        if self.keypoints is None:
            self.keypoints = np.full((n, len(KEYPOINTS), 2), np.nan, dtype=np.float32)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64)
        self.age_years = np.asarray(self.age_years, dtype=np.float32)
        self.estimates = np.asarray(self.estimates, dtype=np.int64)
        for name in ("confidence", "tracker_id", "age_years", "estimates", "age_spread_years", "refusal"):
            _check_shape(name, getattr(self, name), (n,))
        if n and not np.all((self.refusal >= NOT_REFUSED) & (self.refusal <= len(REFUSALS))):
            raise ValueError(f"Faces.refusal codes must be in [0, {len(REFUSALS)}], got {self.refusal}")
        _check_shape("keypoints", self.keypoints, (n, len(KEYPOINTS), 2))
        if n and np.any(self.xyxy[:, 2:] < self.xyxy[:, :2]):
            raise ValueError(f"Faces.xyxy needs x_max >= x_min and y_max >= y_min, got {self.xyxy}")

    @classmethod
    def empty(cls) -> Faces:
        """No faces."""
        return cls(xyxy=np.empty((0, 4), np.float32), confidence=np.empty(0, np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | int | list[int]) -> Faces:
        """Select faces by boolean mask, index array, slice or int: ``faces[faces.confidence > t]``."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Faces(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            tracker_id=self.tracker_id[index],
            age_years=self.age_years[index],
            estimates=self.estimates[index],
            keypoints=self.keypoints[index],
            age_spread_years=self.age_spread_years[index],
            refusal=self.refusal[index],
        )

    def with_ages(
        self, age_years: np.ndarray, estimates: np.ndarray | None = None, age_spread_years: np.ndarray | None = None
    ) -> Faces:
        """A copy with ``age_years`` (and optionally ``estimates`` and ``age_spread_years``) replaced."""
        return replace(
            self,
            age_years=np.asarray(age_years, np.float32),
            estimates=self.estimates if estimates is None else np.asarray(estimates, np.int64),
            age_spread_years=self.age_spread_years if age_spread_years is None
            else np.asarray(age_spread_years, np.float32),
        )

    @property
    def quality_ok(self) -> np.ndarray:
        """(n,) bool: False where the quality gate refused the face this frame."""
        return self.refusal == NOT_REFUSED

    def with_quality(self, refusal: np.ndarray) -> Faces:
        """A copy with ``refusal`` (reason codes, see the class) replaced."""
        return replace(self, refusal=refusal)

    def with_tracker_ids(self, tracker_id: np.ndarray) -> Faces:
        """A copy with ``tracker_id`` replaced."""
        return replace(self, tracker_id=np.asarray(tracker_id, np.int64))
