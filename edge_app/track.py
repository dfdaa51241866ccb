"""Per-customer tracks across frames: IoU matching, throttled age estimates, eviction."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_app.config import TrackerConfig
from edge_app.faces import Faces


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU between (n, 4) and (m, 4) ``xyxy`` boxes."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass
class _Track:
    track_id: int
    xyxy: np.ndarray
    last_seen_ms: int
    ages_years: deque = field(default_factory=deque)
    last_estimate_ms: int | None = None
    # Median and interquartile range of ``ages_years``, kept up to date by ``add_estimates``
    # (NaN below ``min_estimates``), so a frame without new estimates costs no statistics.
    age_years: float = math.nan
    spread_years: float = math.nan


class FaceTracker:
    """Gives each face a track id and keeps a robust age per track.

    A track's age is the median of its last ``window`` estimates, reported once it has
    ``min_estimates``, with their interquartile range as its spread; the median shrugs off
    the odd frame where the face is blurred or turned. Tracks unmatched for
    ``max_missing_ms`` are dropped with all their state, so a
    service running for weeks holds only the customers in view.
    """

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1

    def __len__(self) -> int:
        """Tracks held (in view or recently lost)."""
        return len(self._tracks)

    def update(self, faces: Faces, timestamp_ms: int) -> Faces:
        """Match faces to tracks by IoU, start tracks for new faces, drop lost ones.

        Args:
            faces: this frame's detections.
            timestamp_ms: this frame's time.

        Returns:
            ``faces`` with ``tracker_id`` set and ``age_years``/``estimates`` from their tracks.
        """
        ids = list(self._tracks)
        ids_out = np.empty(len(faces), np.int64)
        matched_faces: set[int] = set()
        matched_tracks: set[int] = set()
        if ids and len(faces):
            iou = box_iou(np.stack([self._tracks[i].xyxy for i in ids]), faces.xyxy)
            # Greedy by IoU: with a handful of customers it equals the optimal assignment
            # in practice, and needs no solver.
            for t, f in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape), strict=True):
                if iou[t, f] < self.config.iou_threshold:
                    break
                if f not in matched_faces and t not in matched_tracks:
                    track = self._tracks[ids[t]]
                    track.xyxy, track.last_seen_ms = faces.xyxy[f], timestamp_ms
                    ids_out[f] = track.track_id
                    matched_faces.add(int(f))
                    matched_tracks.add(int(t))
        for f in range(len(faces)):
            if f not in matched_faces:
                track = _Track(self._next_id, faces.xyxy[f], timestamp_ms,
                               deque(maxlen=self.config.window))
                self._tracks[track.track_id] = track
                ids_out[f] = track.track_id
                self._next_id += 1
        for track_id in [i for i, t in self._tracks.items()
                         if timestamp_ms - t.last_seen_ms > self.config.max_missing_ms]:
            del self._tracks[track_id]
        return self._with_track_ages(faces.with_tracker_ids(ids_out))

    def due_for_estimate(self, faces: Faces, timestamp_ms: int) -> np.ndarray:
        """(n,) bool: which faces should get a fresh age estimate this frame.

        Every frame until a track has ``min_estimates`` (so the first decision comes within
        a few frames), then at most once per ``estimate_interval_ms``.
        """
        due = np.zeros(len(faces), bool)
        for i, track_id in enumerate(faces.tracker_id):
            track = self._tracks.get(int(track_id))
            if track is None:
                continue
            due[i] = (
                track.last_estimate_ms is None
                or len(track.ages_years) < self.config.min_estimates
                or timestamp_ms - track.last_estimate_ms >= self.config.estimate_interval_ms
            )
        return due

    def add_estimates(self, faces: Faces, due: np.ndarray, age_years: np.ndarray, timestamp_ms: int) -> Faces:
        """Record ages for the ``due`` faces and return faces with their tracks' ages.

        Args:
            faces: tracked faces of this frame.
            due: (n,) bool mask from `due_for_estimate`.
            age_years: (due.sum(),) estimates, in the order of ``faces[due]``.
            timestamp_ms: this frame's time.
        """
        if int(np.count_nonzero(due)) != len(age_years):
            raise ValueError(f"got {len(age_years)} ages for {int(np.count_nonzero(due))} due faces")
        for track_id, age in zip(faces.tracker_id[due], age_years, strict=True):
            track = self._tracks[int(track_id)]
            track.ages_years.append(float(age))
            track.last_estimate_ms = timestamp_ms
            if len(track.ages_years) >= self.config.min_estimates:
                q1, track.age_years, q3 = np.percentile(track.ages_years, [25, 50, 75])
                track.spread_years = q3 - q1
        return self._with_track_ages(faces)

    def _with_track_ages(self, faces: Faces) -> Faces:
        ages = np.full(len(faces), np.nan, np.float32)
        spreads = np.full(len(faces), np.nan, np.float32)
        counts = np.zeros(len(faces), np.int64)
        for i, track_id in enumerate(faces.tracker_id):
            track = self._tracks.get(int(track_id))
            if track is None:
                continue
            counts[i] = len(track.ages_years)
            ages[i], spreads[i] = track.age_years, track.spread_years
        return faces.with_ages(ages, counts, spreads)
