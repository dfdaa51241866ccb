"""The alcohol-sale decision per customer: flag when age < threshold + margin, with hysteresis."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_app.config import PolicyConfig
from edge_app.faces import Faces

TRACK_START = "track_start"
ALERT = "alert"
ALERT_CLEARED = "alert_cleared"
TRACK_END = "track_end"


@dataclass(frozen=True)
class Event:
    """Something the cashier or an audit should know about one customer.

    Attributes:
        type: ``track_start``, ``alert`` (once per track), ``alert_cleared`` or ``track_end``.
        track_id: the customer's track.
        timestamp_ms: frame time of the event.
        estimated_age: the track's aggregate age in years, ``None`` before it has one.
        flagged: whether the track is flagged after this event.
    """

    type: str
    track_id: int
    timestamp_ms: int
    estimated_age: float | None
    flagged: bool

    def to_dict(self, threshold_age: float, margin_years: float) -> dict:
        """JSON-ready form with the policy that produced it."""
        return {
            "type": self.type,
            "track_id": self.track_id,
            "estimated_age": None if self.estimated_age is None else round(self.estimated_age, 1),
            "flagged": self.flagged,
            "threshold_age": threshold_age,
            "margin_years": round(margin_years, 2),
        }


@dataclass
class _TrackState:
    last_seen_ms: int
    age_years: float | None = None
    flagged: bool = False
    alerted: bool = False


@dataclass
class AgePolicy:
    """Decides "check ID" per track and emits lifecycle events.

    A track is flagged when its aggregate age < ``threshold_age + margin_years``. It is
    cleared only when the age reaches ``limit + hysteresis_years``, so an estimate hovering
    around the limit does not make the banner flicker. The ``alert`` event fires once per
    track; ``track_end`` fires when a track has been out of view for ``leave_after_ms``,
    and its state is then evicted.

    Args:
        config: threshold, margin and hysteresis.
        margin_years: the margin in force (the config's, else the model card's MAE).
        leave_after_ms: how long a track may be unseen before the customer counts as gone.
    """

    config: PolicyConfig
    margin_years: float
    leave_after_ms: int
    _tracks: dict[int, _TrackState] = field(default_factory=dict, init=False)

    @property
    def limit_years(self) -> float:
        """Estimated ages below this are flagged."""
        return self.config.threshold_age + self.margin_years

    @property
    def flagged_ids(self) -> set[int]:
        """Tracks currently flagged (in view or briefly lost)."""
        return {track_id for track_id, state in self._tracks.items() if state.flagged}

    def __len__(self) -> int:
        return len(self._tracks)

    def update(self, faces: Faces, timestamp_ms: int) -> list[Event]:
        """Apply the policy to this frame's tracked faces.

        Args:
            faces: faces with ``tracker_id`` and aggregate ``age_years`` (NaN while pending).
            timestamp_ms: this frame's time.

        Returns:
            Events in the order they happened this frame.
        """
        events = []
        for track_id, age in zip(faces.tracker_id.tolist(), faces.age_years.tolist(), strict=True):
            state = self._tracks.get(track_id)
            if state is None:
                state = self._tracks[track_id] = _TrackState(last_seen_ms=timestamp_ms)
                events.append(Event(TRACK_START, track_id, timestamp_ms, None, False))
            state.last_seen_ms = timestamp_ms
            if math.isnan(age):
                continue
            state.age_years = age
            if not state.flagged and age < self.limit_years:
                state.flagged = True
                if not state.alerted:
                    state.alerted = True
                    events.append(Event(ALERT, track_id, timestamp_ms, age, True))
            elif state.flagged and age >= self.limit_years + self.config.hysteresis_years:
                state.flagged = False
                events.append(Event(ALERT_CLEARED, track_id, timestamp_ms, age, False))
        gone = [i for i, s in self._tracks.items() if timestamp_ms - s.last_seen_ms > self.leave_after_ms]
        events += [self._end(track_id, timestamp_ms) for track_id in gone]
        return events

    def finish(self, timestamp_ms: int) -> list[Event]:
        """End every remaining track (the video ended or the app is stopping)."""
        return [self._end(track_id, timestamp_ms) for track_id in list(self._tracks)]

    def _end(self, track_id: int, timestamp_ms: int) -> Event:
        state = self._tracks.pop(track_id)
        return Event(TRACK_END, track_id, timestamp_ms, state.age_years, state.flagged)

    def decisions(self, faces: Faces) -> np.ndarray:
        """(n,) int8 per face: 1 flagged, 0 cleared, -1 pending (no age yet)."""
        out = np.full(len(faces), -1, np.int8)
        for i, (track_id, age) in enumerate(zip(faces.tracker_id.tolist(), faces.age_years.tolist(), strict=True)):
            state = self._tracks.get(track_id)
            if state is not None and state.flagged:
                out[i] = 1
            elif not math.isnan(age):
                out[i] = 0
        return out
