"""The till's conditions as events: when poor light, or a camera that refuses most faces, began and ended.

`quality.LightMeter` and `quality.RefusalMeter` speak each frame from the recent past, and
the cashier's window and the kiosk's STATUS line show what they say now. A day's events
should also say when: a customer flagged ``face_unclear`` while most faces were refused, or
read in glare, is judged differently from one flagged in good conditions. `ConditionLog`
turns the meters' notices into a ``condition_began`` event when one starts speaking and a
``condition_ended`` event once it has been silent for ``quiet_ms``, so that a share hovering
at its limit writes two events, not one per frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

POOR_LIGHT, FACES_REFUSED = "poor_light", "faces_refused"
CONDITIONS = (POOR_LIGHT, FACES_REFUSED)
"""The conditions: `quality.LightMeter`'s notice and `quality.RefusalMeter`'s."""

CONDITION_BEGAN, CONDITION_ENDED = "condition_began", "condition_ended"


@dataclass(frozen=True)
class ConditionEvent:
    """A condition of the till began or ended.

    Attributes:
        type: ``condition_began`` or ``condition_ended``.
        condition: ``poor_light`` or ``faces_refused``.
        timestamp_ms: frame time of the event; an end is recorded ``quiet_ms`` after the
            meter fell silent (or when the run ends).
        notice: what the meter said: its first notice for a beginning, its last for an end
            (``"poor light on 35% of recent faces"``).
        duration_s: for an end, how long the meter spoke, from its first notice to its last;
            ``None`` for a beginning.
    """

    type: str
    condition: str
    timestamp_ms: int
    notice: str
    duration_s: float | None = None

    def to_dict(self, threshold_age: float, margin_years: float) -> dict:
        """JSON-ready form with the policy in force, as every event has."""
        return {
            "type": self.type,
            "condition": self.condition,
            "notice": self.notice,
            "duration_s": self.duration_s,
            "threshold_age": threshold_age,
            "margin_years": round(margin_years, 2),
        }


class ConditionLog:
    """Each condition's notices, frame by frame, as beginnings and ends.

    Args:
        quiet_ms: how long a condition's meter must stay silent before it has ended; a notice
            within that time continues the same condition.
    """

    def __init__(self, quiet_ms: int = 30_000) -> None:
        if quiet_ms < 0:
            raise ValueError(f"quiet_ms must be >= 0, got {quiet_ms}")
        self.quiet_ms = quiet_ms
        self._began_ms: dict[str, int] = {}
        self._last: dict[str, tuple[int, str]] = {}  # condition -> (time, notice) it last spoke
        self.seconds: dict[str, float] = dict.fromkeys(CONDITIONS, 0.0)
        """Per condition, how long its meter spoke over the conditions that ended."""

    def update(self, notices: Mapping[str, str | None], timestamp_ms: int) -> list[ConditionEvent]:
        """One frame's notice per condition (None: silent): the events it brings."""
        events = []
        for condition, notice in notices.items():
            if notice:
                if condition not in self._began_ms:
                    self._began_ms[condition] = timestamp_ms
                    events.append(ConditionEvent(CONDITION_BEGAN, condition, timestamp_ms, notice))
                self._last[condition] = (timestamp_ms, notice)
            elif condition in self._began_ms and timestamp_ms - self._last[condition][0] >= self.quiet_ms:
                events.append(self._end(condition, timestamp_ms))
        return events

    @property
    def active(self) -> frozenset[str]:
        """The conditions on now: begun and not yet ended."""
        return frozenset(self._began_ms)

    def finish(self, timestamp_ms: int) -> list[ConditionEvent]:
        """The end of every condition still on: the run is over."""
        return [self._end(condition, timestamp_ms) for condition in list(self._began_ms)]

    def _end(self, condition: str, timestamp_ms: int) -> ConditionEvent:
        began_ms = self._began_ms.pop(condition)
        last_ms, notice = self._last.pop(condition)
        duration_s = round((last_ms - began_ms) / 1000, 3)
        self.seconds[condition] = round(self.seconds.get(condition, 0.0) + duration_s, 3)
        return ConditionEvent(CONDITION_ENDED, condition, timestamp_ms, notice, duration_s)
