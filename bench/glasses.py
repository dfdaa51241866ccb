"""Does the model read glasses (or a face mask) as age? Validation faces with and without them.

    python bench/glasses.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 300] [--model models/age_resnet50_int8.tflite] \\
        [--draw glasses|mask] [--out docs/model/glasses]
    python bench/glasses.py --data ../shared/datasets/utkface ... --measure-eyes

The worst 13-17 errors of the shipped model on APPA-REAL wear glasses, and so does the demo's
adult who reads 58. This cuts each sampled validation photo as training does (the app's
detector, eyes levelled, the card's framing with `--context` around it), predicts its age
with the model as it is, then again with `training.augment.SyntheticGlasses` drawn on (every
face, seeded), and reports the shift, MAE and the key figure for both. A model that has
learnt glasses are not age shows no shift. ``--draw mask`` draws a face mask instead
(`training.augment.SyntheticMask`: over nose, mouth and chin, of a random colour). Where the
photos label gender and race (UTKFace's), the shifts by group follow, as in `bench/texture.py`.

``--measure-eyes`` instead prints where BlazeFace's eyes sit around its squared box over
training photos: the source of `training.augment.EYES_IN_BOX`.
Crops stay in memory: they are made from the datasets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from bench.texture import group_lines  # noqa: E402
from edge_app.age_model import AgeRegressor  # noqa: E402
from edge_app.config import AgeModelConfig  # noqa: E402
from edge_app.crop import eye_angles_deg  # noqa: E402
from edge_app.model_card import ModelCard  # noqa: E402
from training.data import iter_detected_faces, iter_face_crops, load_sources, select  # noqa: E402
from training.evaluate import cell  # noqa: E402
from training.metrics import errors, key_figure, teens_and_adults  # noqa: E402
from training.train import PHOTO_CANVAS, PHOTO_DETECTOR, TrainConfig  # noqa: E402

WHAT = {"glasses": "synthetic glasses", "mask": "a synthetic face mask"}  # --draw, in the table's words


def measure_eyes(images) -> None:
    """Mean and spread of the levelled eye positions in box sides (from the squared box's centre)."""
    offsets = []
    for _, _, best in iter_detected_faces(images, PHOTO_DETECTOR, PHOTO_CANVAS):
        box, eyes = best.xyxy[0], best.keypoints[0, :2]
        angle = np.radians(eye_angles_deg(best.keypoints)[0])
        level = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        side = max(box[2] - box[0], box[3] - box[1])  # the squared box's side
        offsets.append(((eyes - (box[:2] + box[2:]) / 2) @ level.T / side).ravel())
    offsets = np.array(offsets)
    print(f"{len(offsets)} faces; right eye (x, y), left eye (x, y) in box sides from its centre:")
    print("mean", np.round(offsets.mean(axis=0), 3), "spread", np.round(offsets.std(axis=0), 3))


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=300)
    parser.add_argument("--context", type=float, default=1.25)
    parser.add_argument("--draw", choices=sorted(WHAT), default="glasses", help="what every face gets")
    parser.add_argument("--measure-eyes", action="store_true")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: photos, estimates, the printed and written tables."""
    card = ModelCard.load(args.model)
    images = load_sources(args.data, *card.validation_split)
    if args.measure_eyes:
        measure_eyes(select(images, "train", 100, args.seed))
        return

    from training.augment import CameraAugment, SyntheticGlasses, SyntheticMask

    layer = {"glasses": SyntheticGlasses, "mask": SyntheticMask}[args.draw]
    images = select(images, "val", args.per_source, args.seed)
    size = card.input_size
    # Stored crops as a training run cuts them: the card's framing widened by --context.
    run = TrainConfig(data_dirs=tuple(args.data), out_dir="", image_size=size, context=args.context, crop=card.crop)
    kept, crops = [], []
    for position, crop, status in iter_face_crops(images, run.stored_size, run.stored_crop, PHOTO_DETECTOR,
                                                  require_face=True, canvas=PHOTO_CANVAS):
        if status == "ok":
            kept.append(position)
            crops.append(crop)
    stored_crops = np.stack(crops).astype(np.float32)
    centre = CameraAugment(size, args.context)
    drawn = layer(1.0, args.context, card.crop.margin, seed=args.seed)(stored_crops, training=True)
    regressor = AgeRegressor(AgeModelConfig(model_path=args.model, max_batch=64))
    predict = [regressor.predict(np.round(np.asarray(centre(x))).clip(0, 255).astype(np.uint8))
               for x in (stored_crops, drawn)]
    true = images.age_years[kept].astype(np.float64)
    sources = images.source[kept]
    result = {"faces": len(kept), "model": Path(args.model).name, "rows": {},
              "settings": public_settings(args, "model", "data", "out")}
    for name in ["all", *dict.fromkeys(sources.tolist())]:
        mask = np.ones(len(kept), bool) if name == "all" else sources == name
        row = {}
        for label, predicted in zip(("plain", args.draw), predict, strict=True):
            row[label] = {"errors": errors(true[mask], predicted[mask]), "key": key_figure(true[mask], predicted[mask])}
        shift = predict[1][mask] - predict[0][mask]
        teens = shift[teens_and_adults(true[mask])[0]]
        row["shift_years"] = {"mean": float(shift.mean()), "median": float(np.median(shift)),
                              "13-17": float(teens.mean()) if teens.size else None}
        result["rows"][name] = row
    lines = [
        f"{len(kept)} validation faces ({args.per_source} photos per source, seed {args.seed}), model "
        f"`{result['model']}`, each plain and with {WHAT[args.draw]} drawn on (`training.augment.{layer.__name__}`):",
        "",
        f"| faces | photos | MAE plain → {args.draw} | bias plain → {args.draw} | mean shift | 13–17 shift "
        f"| key figure plain → {args.draw} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["rows"].items():
        p, g = row["plain"], row[args.draw]
        key = [cell(k["key"]["age_13_17_flagged"], ".0%") for k in (p, g)]
        lines.append(
            f"| {name} | {p['errors']['count']} | {p['errors']['mae']:.2f} → {g['errors']['mae']:.2f} "
            f"| {p['errors']['bias']:+.2f} → {g['errors']['bias']:+.2f} | {row['shift_years']['mean']:+.2f} "
            f"| {cell(row['shift_years']['13-17'], '+.2f')} | {key[0]} → {key[1]} |"
        )
    lines += group_lines(result, images.gender[kept], images.race[kept], true,
                         {"clean": predict[0], args.draw: predict[1]}, [args.draw])
    print("\n".join(lines))
    write_report(args.out, lines, result)


if __name__ == "__main__":
    main()
