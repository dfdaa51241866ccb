"""The model card: the JSON beside each age ``.tflite`` that carries its measured error to the app.

Training writes it (``agecheck export``); the app reads it at start-up and refuses a model
whose card is missing, malformed, or describes another file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.crop import CropSettings
from edge_app.errors import AgecheckError

CARD_VERSION = 1
REQUIRED_KEYS = {
    "architecture": str,
    "input_size": int,
    "crop": dict,
    "mae": float,
    "tflite_sha256": str,
}


TRADEOFF_GROUPS = {"under_18": "under 18", "age_13_17": "13-17", "age_18_24": "18-24", "age_25_plus": "25+"}
"""The age groups of a card's trade-off table (``calibration.tradeoff``), with their labels."""

LEGAL_AGES = tuple(range(16, 22))
"""The legal ages whose under-age customers a card's trade-off table counts apart (``under_16`` to
``under_21``, ``under_18`` being one of `TRADEOFF_GROUPS`); tables before 2026-11-28 hold only 18's."""


def under_age_key(threshold_age: float) -> str:
    """The trade-off table's column of customers under ``threshold_age``: 21 -> ``under_21``."""
    return f"under_{threshold_age:g}"


def tradeoff_columns(card: ModelCard, threshold_age: float) -> tuple[dict[str, str], str | None]:
    """The trade-off columns to show at ``threshold_age`` (key -> label), and a note where the card lacks its own.

    The first column is the customers under the legal age in force; a card that has no column
    for that age (tables before 2026-11-28, or a legal age outside `LEGAL_AGES`) shows its
    under-18s and says so.
    """
    rest = {key: label for key, label in TRADEOFF_GROUPS.items() if key != "under_18"}
    key = under_age_key(threshold_age)
    if card.tradeoff and key in card.tradeoff[0]:
        return {key: f"under {threshold_age:g}"} | rest, None
    note = (f"(this card's table has no column for customers under {threshold_age:g}, the legal age in force: "
            f"its under-18s are shown; tables since 2026-11-28 hold every legal age {LEGAL_AGES[0]}-{LEGAL_AGES[-1]}, "
            "bench/card_tradeoff.py makes one)")
    return dict(TRADEOFF_GROUPS), note


def card_path_for(model_path: str | Path) -> Path:
    """``models/x.tflite`` -> ``models/x.json``."""
    return Path(model_path).with_suffix(".json")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    """What the app needs from a card; ``data`` keeps the whole JSON for reports."""

    path: Path
    input_size: int
    crop: CropSettings
    mae_years: float
    data: dict[str, Any]

    @property
    def validation_split(self) -> tuple[float, int]:
        """``(val_fraction, seed)``: how the run behind the model split its photos.

        `training.data.load_sources` with these gives back the validation part the model
        never trained on. Cards without a ``validation`` entry get 0.2 and 42.
        """
        validation = self.data.get("validation", {})
        return float(validation.get("val_fraction", 0.2)), int(validation.get("seed", 42))

    @property
    def tradeoff(self) -> list[dict]:
        """The card's trade-off table: who the gate asked for ID at each limit, [] for cards without one.

        Each row has ``limit_years`` (the gate asks when the estimate is below it: threshold
        plus margin) and, per `TRADEOFF_GROUPS` key (and ``under_N`` for each of `LEGAL_AGES`
        in newer tables), the share of the card's validation photos of that age asked (under
        the camera mix, as the card's margin was measured).
        """
        return self.data.get("calibration", {}).get("tradeoff", [])

    def tradeoff_at(self, limit_years: float) -> dict | None:
        """The shares asked at ``limit_years``, linearly between the table's rows; None outside it or without one."""
        rows = self.tradeoff
        limits = [row["limit_years"] for row in rows]
        if not rows or not limits[0] <= limit_years <= limits[-1]:
            return None
        out = {"limit_years": float(limit_years)}
        for key in rows[0].keys() - {"limit_years"}:
            shares = [row[key] for row in rows]
            out[key] = None if None in shares else float(np.interp(limit_years, limits, shares))
        return out

    @classmethod
    def load(cls, model_path: str | Path, check_sha256: bool = True) -> ModelCard:
        """Read and check the card beside ``model_path``.

        Raises:
            AgecheckError: if the card is missing, is not JSON, lacks a key, or its
                ``tflite_sha256`` does not match the model file.
        """
        path = card_path_for(model_path)
        if not path.is_file():
            raise AgecheckError(
                f"model card {path} not found: every age model needs its card beside it "
                "(written by 'agecheck export')"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise AgecheckError(f"model card {path} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise AgecheckError(f"model card {path} must hold a JSON object, got {type(data).__name__}")
        for key, kind in REQUIRED_KEYS.items():
            value = data.get(key)
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if not ok or isinstance(value, bool):
                raise AgecheckError(
                    f"model card {path}: key {key!r} must be {kind.__name__}, got {value!r}"
                )
        _check_tradeoff(path, data.get("calibration", {}).get("tradeoff", []))
        try:
            crop = CropSettings(**data["crop"])
        except (TypeError, ValueError) as error:
            raise AgecheckError(f"model card {path}: bad 'crop' settings: {error}") from None
        if check_sha256:
            actual = sha256_of(model_path)
            if actual != data["tflite_sha256"]:
                raise AgecheckError(
                    f"model card {path} describes another model: tflite_sha256 "
                    f"{data['tflite_sha256'][:12]}… != {Path(model_path).name} {actual[:12]}…"
                )
        return cls(
            path=path,
            input_size=data["input_size"],
            crop=crop,
            mae_years=float(data["mae"]),
            data=data,
        )


def tradeoff_summary(card: ModelCard, threshold_age: float, margin_years: float) -> str | None:
    """One line for the log: whom the card's table says the gate in force asks; None without a table row."""
    here = card.tradeoff_at(threshold_age + margin_years)
    if here is None:
        return None
    columns, note = tradeoff_columns(card, threshold_age)
    shares = ", ".join(f"{here[key]:.0%} of {label}" for key, label in columns.items() if here[key] is not None)
    return (f"at this limit the card's validation photos under the camera mix were asked for ID: {shares} "
            f"('agecheck card' shows every margin){' ' + note if note else ''}")


def tradeoff_lines(card: ModelCard, threshold_age: float, margin_years: float, span_years: int = 20) -> list[str]:
    """The card's trade-off table as Markdown, ``threshold_age`` to ``span_years`` past it, the gate in force in bold.

    The first column is the customers under ``threshold_age`` (`tradeoff_columns`).

    Returns:
        The table's lines, or one line saying the card has no table (cards before 2026-11-27).
    """
    if not card.tradeoff:
        return ["(this card has no trade-off table: re-export the model, or bench/card_tradeoff.py adds one)"]
    limit = threshold_age + margin_years
    rows = [row for row in card.tradeoff if threshold_age <= row["limit_years"] <= threshold_age + span_years]
    here = card.tradeoff_at(limit)
    if here is not None:
        rows = sorted([*[r for r in rows if r["limit_years"] != limit], here | {"in_force": True}],
                      key=lambda r: r["limit_years"])
    columns, note = tradeoff_columns(card, threshold_age)
    lines = ["| estimate below | margin | " + " | ".join(f"{label} asked" for label in columns.values()) + " |",
             "| ---: | ---: |" + " ---: |" * len(columns)]
    for row in rows:
        mark = "**" if row.get("in_force") else ""
        cells = [row["limit_years"], row["limit_years"] - threshold_age]
        cells = [f"{mark}{round(value, 2):g}{mark}" for value in cells]
        cells += ["-" if row[key] is None else f"{mark}{row[key]:.0%}{mark}" for key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if here is None:
        lines.append(f"(the gate in force, estimate below {round(limit, 2):g}, is outside the table)")
    if note:
        lines.append(note)
    return lines


def _check_tradeoff(path: Path, rows: Any) -> None:
    """A card's trade-off table must be rows of numbers (or null shares) with rising limits.

    Every row has ``limit_years`` and the `TRADEOFF_GROUPS`, and may have ``under_N`` for the
    `LEGAL_AGES`, the same keys in every row.
    """
    keys = ["limit_years", *TRADEOFF_GROUPS]
    allowed = {*keys, *(under_age_key(age) for age in LEGAL_AGES)}
    number = (int, float)
    ok = isinstance(rows, list) and all(
        isinstance(row, dict) and isinstance(row.get("limit_years"), number)
        and set(keys) <= row.keys() <= allowed and row.keys() == rows[0].keys()
        and all(isinstance(value, number) or (key != "limit_years" and value is None) for key, value in row.items())
        for row in rows)
    if ok and any(a["limit_years"] >= b["limit_years"] for a, b in zip(rows, rows[1:], strict=False)):
        ok = False
    if not ok:
        raise AgecheckError(f"model card {path}: 'calibration.tradeoff' must be a list of rows with {keys} "
                            f"(and, each row alike, under_N for N in {LEGAL_AGES[0]}-{LEGAL_AGES[-1]}; numbers, "
                            "shares may be null) and rising limit_years")


def write_card(model_path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as the card beside ``model_path``, adding version and sha256."""
    card = {"card_version": CARD_VERSION, **data, "tflite_sha256": sha256_of(model_path)}
    path = card_path_for(model_path)
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path
