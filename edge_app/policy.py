"""The alcohol-sale decision per customer: flag when age < threshold + margin, and fail safe.

A flag is sticky: once the cashier has been told "check ID" for a customer, a later, older
looking estimate never takes it back; it ends when the customer leaves or the cashier
acknowledges it. A customer the app cannot judge is flagged too: ``face_unclear`` when no
age comes within ``unclear_after_s``, ``uncertain`` when the estimates spread too widely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_app.config import PolicyConfig
from edge_app.faces import NOT_REFUSED, REFUSALS, Faces

TRACK_START = "track_start"
ALERT = "alert"
ACKNOWLEDGED = "acknowledged"
TRACK_END = "track_end"
# Why a customer was flagged.
REASON_AGE = "age"
REASON_UNCLEAR = "face_unclear"
REASON_UNCERTAIN = "uncertain"
# `AgePolicy.decisions` per face.
PENDING, CLEARED, FLAGGED, CHECKED = -1, 0, 1, 2


@dataclass(frozen=True)
class Event:
    """Something the cashier or an audit should know about one customer.

    Attributes:
        type: ``track_start``, ``alert`` (once per track), ``acknowledged`` (the cashier
            checked the ID) or ``track_end``.
        track_id: the customer's track.
        timestamp_ms: frame time of the event.
        estimated_age: the track's aggregate age in years, ``None`` before it has one.
        flagged: whether the track is flagged after this event.
        reason: why the track was flagged (``age``, ``face_unclear``, ``uncertain``);
            ``None`` for a track never flagged.
        age_spread_years: interquartile range of the track's recent estimates, ``None``
            before it has an age.
        refused_as: for reason ``face_unclear``, why the quality gate last refused the
            face (``too_small``, ``turned``, ``blurred``: what to change at the till);
            otherwise ``None``.
        lowest_age: the lowest aggregate age the track has had, ``None`` before it has one.
            A flag is sticky, so any limit above it would have flagged the track: how near
            the limit a cleared customer came, and what any other margin would have decided.
    """

    type: str
    track_id: int
    timestamp_ms: int
    estimated_age: float | None
    flagged: bool
    reason: str | None = None
    age_spread_years: float | None = None
    refused_as: str | None = None
    lowest_age: float | None = None

    def to_dict(self, threshold_age: float, margin_years: float) -> dict:
        """JSON-ready form with the policy that produced it."""
        return {
            "type": self.type,
            "track_id": self.track_id,
            "estimated_age": None if self.estimated_age is None else round(self.estimated_age, 1),
            "age_spread_years": None if self.age_spread_years is None else round(self.age_spread_years, 1),
            "flagged": self.flagged,
            "reason": self.reason,
            "refused_as": self.refused_as,
            # to 0.01: fine enough to tell which side of any margin's limit the customer fell
            "lowest_estimated_age": None if self.lowest_age is None else round(self.lowest_age, 2),
            "threshold_age": threshold_age,
            "margin_years": round(margin_years, 2),
        }


@dataclass
class _TrackState:
    first_seen_ms: int
    last_seen_ms: int
    age_years: float | None = None
    spread_years: float | None = None
    lowest_age_years: float | None = None
    flagged: bool = False
    reason: str | None = None
    acknowledged: bool = False
    last_refusal: int = NOT_REFUSED  # `Faces.refusal` code of the last frame the gate refused the face

    @property
    def refused_as(self) -> str | None:
        """Why the gate last refused a ``face_unclear`` track's face; None for other tracks."""
        if self.reason != REASON_UNCLEAR or self.last_refusal == NOT_REFUSED:
            return None
        return REFUSALS[self.last_refusal - 1]


@dataclass
class AgePolicy:
    """Decides "check ID" per track and emits lifecycle events.

    A track is flagged, once and for good, when its aggregate age < ``threshold_age +
    margin_years`` (reason ``age``), when its estimates spread more than
    ``max_spread_years`` (``uncertain``), or when it has been in view ``unclear_after_s``
    without an age (``face_unclear``). It stays flagged until `acknowledge` (the cashier
    checked the ID; the customer is not flagged again) or until it has been out of view
    for ``leave_after_ms`` (``track_end``; its state is then evicted).

    Args:
        config: threshold, margin and the fail-safe settings.
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

    def _reason(self, state: _TrackState, age: float, spread: float, timestamp_ms: int) -> str | None:
        if not math.isnan(age):
            if age < self.limit_years:
                return REASON_AGE
            if self.config.max_spread_years and spread > self.config.max_spread_years:
                return REASON_UNCERTAIN
            return None
        unclear_ms = self.config.unclear_after_s * 1000
        if unclear_ms and state.age_years is None and timestamp_ms - state.first_seen_ms >= unclear_ms:
            return REASON_UNCLEAR
        return None

    def update(self, faces: Faces, timestamp_ms: int) -> list[Event]:
        """Apply the policy to this frame's tracked faces.

        Args:
            faces: faces with ``tracker_id``, aggregate ``age_years`` (NaN while pending)
                and ``age_spread_years``.
            timestamp_ms: this frame's time.

        Returns:
            Events in the order they happened this frame.
        """
        events = []
        for track_id, age, spread, refusal in zip(faces.tracker_id.tolist(), faces.age_years.tolist(),
                                                  faces.age_spread_years.tolist(), faces.refusal.tolist(),
                                                  strict=True):
            state = self._tracks.get(track_id)
            if state is None:
                state = self._tracks[track_id] = _TrackState(timestamp_ms, timestamp_ms)
                events.append(Event(TRACK_START, track_id, timestamp_ms, None, False))
            state.last_seen_ms = timestamp_ms
            if refusal != NOT_REFUSED:
                state.last_refusal = refusal
            reason = self._reason(state, age, spread, timestamp_ms)
            if not math.isnan(age):
                state.age_years, state.spread_years = age, spread
                state.lowest_age_years = age if state.lowest_age_years is None else min(state.lowest_age_years, age)
            if reason and not state.flagged and not state.acknowledged:
                state.flagged, state.reason = True, reason
                events.append(self._event(ALERT, track_id, timestamp_ms, state))
        gone = [i for i, s in self._tracks.items() if timestamp_ms - s.last_seen_ms > self.leave_after_ms]
        events += [self._end(track_id, timestamp_ms) for track_id in gone]
        return events

    def acknowledge(self, timestamp_ms: int, track_ids: list[int] | None = None) -> list[Event]:
        """The cashier has checked the ID: clear the flag of ``track_ids`` (default: every flagged track).

        An acknowledged customer is not flagged again while they stay in view.
        """
        events = []
        for track_id in sorted(self.flagged_ids if track_ids is None else set(track_ids) & self.flagged_ids):
            state = self._tracks[track_id]
            state.flagged, state.acknowledged = False, True
            events.append(self._event(ACKNOWLEDGED, track_id, timestamp_ms, state))
        return events

    def finish(self, timestamp_ms: int) -> list[Event]:
        """End every remaining track (the video ended or the app is stopping)."""
        return [self._end(track_id, timestamp_ms) for track_id in list(self._tracks)]

    def _end(self, track_id: int, timestamp_ms: int) -> Event:
        return self._event(TRACK_END, track_id, timestamp_ms, self._tracks.pop(track_id))

    @staticmethod
    def _event(kind: str, track_id: int, timestamp_ms: int, state: _TrackState) -> Event:
        return Event(kind, track_id, timestamp_ms, state.age_years, state.flagged, state.reason, state.spread_years,
                     state.refused_as, state.lowest_age_years)

    def decisions(self, faces: Faces) -> np.ndarray:
        """(n,) int8 per face: `FLAGGED`, `CHECKED` (acknowledged), `CLEARED` or `PENDING` (no age yet)."""
        out = np.full(len(faces), PENDING, np.int8)
        for i, (track_id, age) in enumerate(zip(faces.tracker_id.tolist(), faces.age_years.tolist(), strict=True)):
            state = self._tracks.get(track_id)
            if state is not None and state.flagged:
                out[i] = FLAGGED
            elif state is not None and state.acknowledged:
                out[i] = CHECKED
            elif not math.isnan(age):
                out[i] = CLEARED
        return out
