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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.errors import AgecheckError
from edge_app.model_card import ModelCard
from edge_app.policy import REASON_AGE, TRACK_END


@dataclass(frozen=True)
class TillCustomers:
    """The customers (tracks) of a till's events.

    Attributes:
        lowest_age_years: (n,) the lowest aggregate age of each track; NaN for one never estimated.
        reason: (n,) why each track was flagged as recorded (``age``, ``face_unclear``,
            ``uncertain``), ``""`` for one never flagged.
        limits_years: the limits (threshold + margin) the events were recorded under.
    """

    lowest_age_years: np.ndarray
    reason: np.ndarray
    limits_years: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.lowest_age_years)

    def asked_at(self, limit_years: float) -> np.ndarray:
        """(n,) bool: whom a gate asking below ``limit_years`` would have asked for ID."""
        otherwise = (self.reason != "") & (self.reason != REASON_AGE)
        with np.errstate(invalid="ignore"):
            return otherwise | (self.lowest_age_years < limit_years)


def read_till_events(paths: Iterable[str | Path]) -> TillCustomers:
    """The ``track_end`` events of one or more events files (`agecheck run` / `replay` ``--events``).

    Raises:
        AgecheckError: a file missing or not JSON lines, events written before they carried
            ``lowest_estimated_age``, or no customer at all.
    """
    lowest, reasons, limits = [], [], set()
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
                if record["type"] != TRACK_END:
                    continue
                if "lowest_estimated_age" not in record:
                    raise AgecheckError(f"{path}:{number}: a track_end without lowest_estimated_age; expected "
                                        "events written by agecheck since 2026-11-27")
                value = record["lowest_estimated_age"]
                lowest.append(np.nan if value is None else float(value))
                reasons.append(record.get("reason") or "")
                limits.add(round(float(record["threshold_age"]) + float(record["margin_years"]), 2))
    if not lowest:
        raise AgecheckError(f"no customer in {', '.join(names)} (no track_end event); expected the events of a "
                            "run in which customers came and went")
    return TillCustomers(np.array(lowest, np.float64), np.array(reasons), tuple(sorted(limits)))


def margin_lines(customers: TillCustomers, threshold_age: float, margin_years: float, card: ModelCard | None = None,
                 span_years: int = 20) -> list[str]:
    """Markdown: the share of the till's customers each margin would have asked.

    One row per whole margin from 0 to ``span_years`` and one for the margin in force (in
    bold); with a ``card`` that has a trade-off table, its shares of 13-17s and adults 25+
    asked at the same limit beside them.
    """
    margins = sorted({*range(span_years + 1), round(margin_years, 2)})
    with_card = card is not None and bool(card.tradeoff)
    header = "| margin | estimate below | your customers asked |"
    rule = "| ---: | ---: | ---: |"
    if with_card:
        header += " 13-17 asked (card) | 25+ asked (card) |"
        rule += " ---: | ---: |"
    lines = [header, rule]
    for margin in margins:
        limit = threshold_age + margin
        asked = customers.asked_at(limit)
        cells = [f"{margin:g}", f"{limit:g}", f"{asked.mean():.0%} ({int(asked.sum())})"]
        if with_card:
            row = card.tradeoff_at(limit)
            cells += ["-" if row is None or row[key] is None else f"{row[key]:.0%}"
                      for key in ("age_13_17", "age_25_plus")]
        mark = "**" if margin == round(margin_years, 2) else ""
        lines.append("| " + " | ".join(f"{mark}{cell}{mark}" for cell in cells) + " |")
    return lines
