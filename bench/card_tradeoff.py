"""Adds the trade-off table (whom each limit asks for ID) to a model card made before cards carried one.

    python bench/card_tradeoff.py PREDICTIONS.csv [--model models/age_resnet50_int8.tflite]

PREDICTIONS is the card's model under the camera mix on its validation photos, as
`bench/model_docs.sh` writes it (``RUN/predictions_val_int8_camera.csv``):
``agecheck evaluate --model M --data ... --split val --degrade camera --seed SEED --predictions P``
with the card's sources and seed. The table goes into the card's ``calibration`` with where it
came from; nothing else in the card changes. `agecheck export` writes the table itself.
Prints the table's row at the card's own limit beside the card's ``camera.policy`` shares:
the two agree where the predictions were made as the card's figures were.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare_models import read_predictions  # noqa: E402
from bench.report import run_bench  # noqa: E402
from edge_app.config import DEFAULT_AGE_MODEL  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.model_card import TRADEOFF_GROUPS, ModelCard, write_card  # noqa: E402
from training.metrics import TRADEOFF_SHARES, gate_tradeoff  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="the card's model under the camera mix: an agecheck evaluate CSV")
    parser.add_argument("--model", default=str(DEFAULT_AGE_MODEL), help="the .tflite whose card gets the table")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    path = Path(args.predictions)
    try:
        rows = list(read_predictions(path).items())
    except ValueError as error:
        raise AgecheckError(str(error)) from None
    card = ModelCard.load(args.model)
    expected = {source["name"] for source in card.data.get("training_data", {}).get("sources", [])}
    found = {source for (source, _), _ in rows}
    if not rows or (expected and found != expected):
        raise AgecheckError(f"{path}: scores sources {sorted(found)}; expected the card's {sorted(expected)}, "
                            "on their validation photos under --degrade camera")
    true_years = np.array([scored.real_age for _, scored in rows])
    predicted = np.array([scored.predicted_age for _, scored in rows])
    data = dict(card.data)
    calibration = dict(data.get("calibration", {}))
    calibration["tradeoff"] = gate_tradeoff(true_years, predicted)
    calibration["tradeoff_from"] = {
        "predictions": path.name, "photos": len(rows), "added": datetime.date.today().isoformat(),
        "how": "bench/card_tradeoff.py on agecheck evaluate --split val --degrade camera --seed "
               f"{card.validation_split[1]} with the app's face detector of that date"}
    data["calibration"] = calibration
    for key in ("card_version", "tflite_sha256"):  # write_card sets them again
        data.pop(key, None)
    model = Path(args.model)
    write_card(model, data)
    written = ModelCard.load(model)
    threshold = float(calibration.get("threshold_age", 18.0))
    at_card = written.tradeoff_at(threshold + written.mae_years)
    policy = data.get("camera", {}).get("policy", {})
    print(f"{written.path}: trade-off table of {len(calibration['tradeoff'])} limits from {len(rows)} photos")
    print(f"at the card's limit {threshold + written.mae_years:.2f}, table / card's camera.policy:")
    for key, label in TRADEOFF_GROUPS.items():
        print(f"  {label} asked: {at_card[key]:.1%} / {policy.get(TRADEOFF_SHARES[key], float('nan')):.1%}")


if __name__ == "__main__":
    main()
