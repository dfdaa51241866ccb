"""An exported model's weights, unchanged, at other input sides: folders for `agecheck evaluate`.

    python bench/input_sides.py --model models/age_resnet50_int8.tflite --sides 64 72 80 96 --out DIR

ResNet50 with global pooling takes any input side, so the shipped 64 px weights also run at
72 or 96 px, seeing each face at more pixels; whether they still read ages there says how
far a fine-tune at another `--image-size` starts from its start (docs/MODEL.md, "The shipped
model fine-tuned at 96 px"). For each side, DIR/sNN/ gets the float regressor rebuilt from
the model (`training.from_tflite`) at that side as ``model.keras``, and a ``train_config.json``
with the card's crop (its test-time views included), validation split and detector, so that

    agecheck evaluate --model DIR/sNN/model.keras --data ... --split val --margin M

scores it as the app would score the shipped model, only at another side.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.model_card import ModelCard  # noqa: E402


def run_config(card: ModelCard, side: int) -> dict:
    """The ``train_config.json`` `training.export.RunSettings.for_model` reads: the card's crop, split and detector."""
    from training.export import canvas_from_card, detector_from_card

    val_fraction, seed = card.validation_split
    detector = asdict(detector_from_card(card.data))
    return {"image_size": side, "crop": card.data["crop"], "seed": seed, "val_fraction": val_fraction,
            "detector": detector | {"model_path": Path(detector["model_path"]).name},  # found in models/ by name
            "canvas": canvas_from_card(card.data)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported .tflite with its card")
    parser.add_argument("--sides", type=int, nargs="+", required=True, help="input sides in px (32 or more)")
    parser.add_argument("--out", type=Path, required=True, help="a folder: one sNN/ per side")
    args = parser.parse_args(argv)
    try:
        if min(args.sides) < 32:
            raise ValueError(f"--sides {min(args.sides)}: expected input sides of 32 px or more (ResNet50)")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file; expected a folder for one sNN/ per side")
        card = ModelCard.load(args.model)
        from training.from_tflite import regressor_from_tflite
        from training.model import build_model

        start = regressor_from_tflite(args.model)
    except (ValueError, AgecheckError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for side in args.sides:
        folder = args.out / f"s{side}"
        folder.mkdir(parents=True, exist_ok=True)
        model = build_model(side, weights="none")
        model.set_weights(start.get_weights())
        model.save(folder / "model.keras")
        config = run_config(card, side) | {"note": f"the weights of {args.model.name} at {side} px, untrained"}
        (folder / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
        print(f"{folder}: {args.model.name} at {side} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
