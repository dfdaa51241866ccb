"""How much of each face crop is the photo, and does the model read the rest?

    python bench/crop_border.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 300] [--margins 0.1 0.25] [--model M] [--out docs/model/crop_border]

Training and the app cut a face with the card's framing: the squared BlazeFace box plus a
margin on each side. Where the framing runs off the photo, `edge_app.crop` fills it with the
photo's replicated edge pixels (``pad: edge``); on a camera frame the face has real
surroundings instead. For sampled validation photos of each source this reports the share of
the framing (unrotated) that lies outside the photo at each of ``--margins``, and the
model's estimate of each face cut at the card's margin three ways: as in training (edges
replicated), black outside, and the photo set into a soft shop-like background (the till
bench's, `bench/per_customer.background`). A model that reads age from the face alone shows
no shift. Crops stay in memory: they are made from the datasets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.per_customer import background  # noqa: E402
from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.age_model import AgeRegressor  # noqa: E402
from edge_app.config import AgeModelConfig  # noqa: E402
from edge_app.crop import CropSettings, crop_faces, square_boxes  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from training.data import iter_detected_faces, load_sources, select  # noqa: E402
from training.metrics import errors, teens_and_adults  # noqa: E402
from training.train import PHOTO_CANVAS, PHOTO_DETECTOR  # noqa: E402

FILLS = ("edge", "black", "background")


def outside_share(box: np.ndarray, margin: float, height: int, width: int) -> float:
    """Share of the squared, ``margin``-grown ``box`` (x0, y0, x1, y1) that lies outside the photo."""
    x0, y0, x1, y1 = square_boxes(box[None], margin)[0]
    inside = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
    return 1.0 - inside / ((x1 - x0) * (y1 - y0))


def cut(rgb: np.ndarray, face, size: int, crop: CropSettings, fill: str, rng: np.random.Generator) -> np.ndarray:
    """The face of ``rgb`` cut at the card's framing, the outside filled as ``fill`` says."""
    if fill == "edge":
        return crop_faces(rgb, face.xyxy, size, crop, face.keypoints)[0]
    if fill == "black":
        return crop_faces(rgb, face.xyxy, size, CropSettings(crop.margin, "constant", crop.align), face.keypoints)[0]
    height, width = rgb.shape[:2]
    canvas = cv2.resize(background(rng), (3 * width, 3 * height), interpolation=cv2.INTER_AREA)
    canvas[height : 2 * height, width : 2 * width] = rgb
    offset = np.array([width, height], np.float32)
    return crop_faces(canvas, face.xyxy + np.tile(offset, 2), size, crop, face.keypoints + offset)[0]


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=300)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.25])
    args = parser.parse_args()
    run_bench(run, args)


def run(args: argparse.Namespace) -> None:
    """Cut every sampled face three ways, estimate each; print and write the table."""
    regressor = AgeRegressor(AgeModelConfig(model_path=args.model, max_batch=64))
    card = regressor.card
    images = select(load_sources(args.data, *card.validation_split), "val", args.per_source, args.seed)

    kept, shares, box_sides, crops = [], [], [], {fill: [] for fill in FILLS}
    for position, rgb, face in iter_detected_faces(images, PHOTO_DETECTOR, PHOTO_CANVAS):
        height, width = rgb.shape[:2]
        box = face.xyxy[0]
        kept.append(position)
        box_sides.append(max(box[2] - box[0], box[3] - box[1]) / max(height, width))
        shares.append([outside_share(box, m, height, width) for m in args.margins])
        for fill in FILLS:
            rng = np.random.default_rng([args.seed, position])
            crops[fill].append(cut(rgb, face, card.input_size, card.crop, fill, rng))
    if not kept:
        raise AgecheckError(f"no face was found in any of {len(images)} photos; expected labelled face photos")
    predicted = {fill: regressor.predict(np.stack(crops[fill])) for fill in FILLS}
    true = images.age_years[kept].astype(np.float64)
    sources, shares, box_sides = images.source[kept], np.array(shares), np.array(box_sides)

    result = {"model": Path(args.model).name, "crop": card.crop.to_dict(), "faces": len(kept), "rows": {},
              "settings": public_settings(args, "model", "data", "out")}
    for name in ["all", *dict.fromkeys(sources.tolist())]:
        mask = np.ones(len(kept), bool) if name == "all" else sources == name
        teens, adults = (mask & group for group in teens_and_adults(true))
        row = {"faces": int(mask.sum()), "box_side_of_photo_median": float(np.median(box_sides[mask])),
               "outside_share_mean": {str(m): float(shares[mask, i].mean()) for i, m in enumerate(args.margins)},
               "fills": {}}
        for fill in FILLS:
            shift = predicted[fill] - predicted["edge"]
            row["fills"][fill] = {
                "errors": errors(true[mask], predicted[fill][mask]),
                "shift_years": {"mean": float(shift[mask].mean()),
                                "13-17": float(shift[teens].mean()) if teens.any() else None,
                                "25+": float(shift[adults].mean()) if adults.any() else None},
            }
        result["rows"][name] = row

    margins = " / ".join(f"{m:g}" for m in args.margins)
    lines = [
        f"{len(kept)} validation faces ({args.per_source} photos per source, seed {args.seed}), model "
        f"`{result['model']}` (card margin {card.crop.margin:g}); the framing outside the photo, and each face cut "
        "with that outside replicated from the photo's edges (as trained), black, or a soft background:",
        "",
        f"| faces | n | box side / photo side | framing outside the photo at margin {margins} "
        "| MAE edge / black / background | bias edge / black / background "
        "| shift black: all / 13–17 / 25+ | shift background: all / 13–17 / 25+ |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def signed(value):
        return "n/a" if value is None else f"{value:+.2f}"

    for name, row in result["rows"].items():
        fills = row["fills"]
        shifts = [" / ".join(signed(fills[f]["shift_years"][k]) for k in ("mean", "13-17", "25+"))
                  for f in ("black", "background")]
        outside = " / ".join(f"{v:.0%}" for v in row["outside_share_mean"].values())
        mae = " / ".join(f"{fills[f]['errors']['mae']:.2f}" for f in FILLS)
        bias = " / ".join(f"{fills[f]['errors']['bias']:+.2f}" for f in FILLS)
        lines.append(f"| {name} | {row['faces']} | {row['box_side_of_photo_median']:.2f} | {outside} | {mae} "
                     f"| {bias} | {shifts[0]} | {shifts[1]} |")
    print("\n".join(lines))
    write_report(args.out, lines, result)


if __name__ == "__main__":
    main()
