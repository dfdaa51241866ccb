"""Whom another margin would have asked: a till's own customers, read back from its events.

The model card's trade-off table says what each margin protects (its validation photos, one
per person, true ages known); a till's events say what each margin costs there, with the
shop's own customers, light and camera. Every ``track_end`` event carries the lowest aggregate
age the customer's track reached (``lowest_estimated_age``). A flag is sticky, so that
customer would have been asked by age at any limit above it; one flagged for another reason
(``face_unclear``, ``uncertain``) counts as asked at every limit. A customer lost by the
tracker and found again is two tracks, so counts are tracks, not people.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_app.conditions import CONDITION_ENDED
from edge_app.errors import AgecheckError
from edge_app.model_card import ModelCard, tradeoff_columns
from edge_app.policy import REASON_AGE, TRACK_END


def asked_below(reason: str | None, lowest_age_years: float | None) -> float:
    """The limit (threshold + margin) above which a customer is asked for ID, from their events.

    Their lowest aggregate age; -inf for one flagged for a reason other than age (asked at
    any limit: at the events' own and above exactly, and below it too unless their estimates
    would have spread without a flag there); +inf for one never estimated nor flagged.

    Args:
        reason: why the customer was flagged (``age``, ``face_unclear``, ``uncertain``), None
            or ``""`` if never.
        lowest_age_years: their ``lowest_estimated_age``, None if never estimated.
    """
    if reason and reason != REASON_AGE:
        return -math.inf
    return math.inf if lowest_age_years is None else float(lowest_age_years)


@dataclass(frozen=True)
class TillCustomers:
    """The customers (tracks) of a till's events.

    Attributes:
        asked_below_years: (n,) `asked_below` of each track.
        reason: (n,) why each track was flagged as recorded (``age``, ``face_unclear``,
            ``uncertain``), ``""`` for one never flagged.
        limits_years: the limits (threshold + margin) the events were recorded under.
        conditions: per condition of the till that ended in the events (`conditions`:
            ``poor_light``, ``faces_refused``), (how many times, seconds in all).
    """

    asked_below_years: np.ndarray
    reason: np.ndarray
    limits_years: tuple[float, ...]
    conditions: dict[str, tuple[int, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.asked_below_years)

    def asked_at(self, limit_years: float) -> np.ndarray:
        """(n,) bool: whom a gate asking below ``limit_years`` would have asked for ID."""
        return self.asked_below_years < limit_years

    def summary(self) -> str:
        """One line: how many customers, at which limits, how many asked and why, how many never estimated.

        With the till's conditions after it where any began: the customers' figures came
        partly in poor light or with a camera that refused most faces.
        """
        asked = self.reason != ""
        why = ", ".join(f"{int((self.reason == r).sum())} {r}" for r in dict.fromkeys(self.reason[asked].tolist()))
        never = int((self.asked_below_years == math.inf).sum())
        conditions = "".join(f"; {name.replace('_', ' ')} {times} time{'s' * (times != 1)}, {_duration(seconds)} in all"
                             for name, (times, seconds) in sorted(self.conditions.items()))
        return (f"{len(self)} customers (tracks), recorded at estimate below "
                f"{' / '.join(f'{limit:g}' for limit in self.limits_years)}: {int(asked.sum())} asked for ID"
                f"{f' ({why})' if why else ''}, {never} never estimated{conditions}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def read_till_events(paths: Iterable[str | Path]) -> TillCustomers:
    """The ``track_end`` events of one or more events files (`agecheck run` / `replay` ``--events``).

    Raises:
        AgecheckError: a file missing or not JSON lines, events written before they carried
            ``lowest_estimated_age``, or no customer at all.
    """
    below, reasons, limits, conditions = [], [], set(), {}
    names = []
    for path in map(Path, paths):
        names.append(path.name)
        if not path.is_file():
            raise AgecheckError(f"{path}: no such file; expected an events file (agecheck run or replay --events)")
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict) or "type" not in record:
                    raise AgecheckError(f"{path}:{number}: not an event; expected one JSON event per line")
                if record["type"] == CONDITION_ENDED:
                    try:
                        condition, seconds = str(record["condition"]), float(record["duration_s"])
                    except (KeyError, TypeError, ValueError):
                        raise AgecheckError(f"{path}:{number}: a condition_ended without condition and numeric "
                                            "duration_s; expected agecheck's events") from None
                    times, total = conditions.get(condition, (0, 0.0))
                    conditions[condition] = (times + 1, total + seconds)
                if record["type"] != TRACK_END:
                    continue
                if "lowest_estimated_age" not in record:
                    raise AgecheckError(f"{path}:{number}: a track_end without lowest_estimated_age; expected "
                                        "events written by agecheck since 2026-11-27")
                try:
                    value, reason = record["lowest_estimated_age"], record.get("reason") or ""
                    below.append(asked_below(reason, None if value is None else float(value)))
                    limits.add(round(float(record["threshold_age"]) + float(record["margin_years"]), 2))
                except (KeyError, TypeError, ValueError):
                    raise AgecheckError(f"{path}:{number}: a track_end without numeric lowest_estimated_age, "
                                        "threshold_age and margin_years; expected agecheck's events") from None
                reasons.append(reason)
    if not below:
        raise AgecheckError(f"no customer in {', '.join(names)} (no track_end event); expected the events of a "
                            "run in which customers came and went")
    return TillCustomers(np.array(below, np.float64), np.array(reasons), tuple(sorted(limits)), conditions)


def margin_lines(customers: TillCustomers, threshold_age: float, margin_years: float, card: ModelCard | None = None,
                 span_years: int = 20) -> list[str]:
    """Markdown: the share of the till's customers each margin would have asked.

    One row per whole margin from 0 to ``span_years`` and one for the margin in force (in
    bold); with a ``card`` that has a trade-off table, its shares asked at the same limit
    beside them, in the columns ``agecheck card`` shows at ``threshold_age``
    (`tradeoff_columns`: those under the legal age in force first), and the card's note
    last where it lacks that column.
    """
    margins = sorted({*range(span_years + 1), round(margin_years, 2)})
    columns, note = tradeoff_columns(card, threshold_age) if card is not None and card.tradeoff else ({}, None)
    header = "| margin | estimate below | your customers asked |"
    header += "".join(f" {label} asked (card) |" for label in columns.values())
    lines = [header, "| ---: | ---: | ---: |" + " ---: |" * len(columns)]
    for margin in margins:
        limit = threshold_age + margin
        asked = customers.asked_at(limit)
        cells = [f"{margin:g}", f"{limit:g}", f"{asked.mean():.0%} ({int(asked.sum())})"]
        if columns:
            row = card.tradeoff_at(limit)
            cells += ["-" if row is None or row[key] is None else f"{row[key]:.0%}" for key in columns]
        mark = "**" if margin == round(margin_years, 2) else ""
        lines.append("| " + " | ".join(f"{mark}{cell}{mark}" for cell in cells) + " |")
    return lines + (["", note] if note else [])
