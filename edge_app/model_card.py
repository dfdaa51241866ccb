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


def write_card(model_path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as the card beside ``model_path``, adding version and sha256."""
    card = {"card_version": CARD_VERSION, **data, "tflite_sha256": sha256_of(model_path)}
    path = card_path_for(model_path)
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path
