"""Does the model read texture as age? The same faces, the same boxes, only the pixels changed.

    python bench/texture.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 300] [--changes noise film_grain ...] [--on-crop] \\
        [--model M] [--out docs/model/texture]

`agecheck evaluate --degrade NAME` corrupts a photo before detection, so its figures mix what
the corruption does to the detector's box with what it does to the model. Here BlazeFace
finds each sampled validation face once, on the clean photo; each corruption of
`training.degrade` in ``--changes`` is then applied to the whole photo (seeded per photo, as
``--degrade`` draws it) and the face is cut again with the same box and eyes. A shift of the
estimate is the model reading the new pixels. A model that reads age from the face and not
from its grain, blocks or sharpness shows none; one that reads texture as age moves
teenagers and adults alike, or worse, teenagers more. Per change: the mean shift for all
faces, 13-17 and 25+, the share of 13-17 read 3 or more years older, and the key figure on
these faces clean and changed; and the shifts by gender and race group where the labels
give them (UTKFace's). ``--on-crop`` applies each corruption to the cut crop instead
of the photo: its scale is then the crop's whatever the photo's size (CLAHE's 8x8 tiles are
8 px of a 64 px crop, where on a photo they span more or less of the face as the photo is
larger or smaller against it). Crops stay in memory: they are made from the datasets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.age_model import AgeRegressor  # noqa: E402
from edge_app.config import AgeModelConfig  # noqa: E402
from edge_app.crop import crop_face_views  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from training.data import GENDERS, RACES, iter_detected_faces, load_sources, select  # noqa: E402
from training.degrade import DEGRADATIONS, degrade  # noqa: E402
from training.evaluate import cell  # noqa: E402
from training.metrics import errors, key_figure, teens_and_adults  # noqa: E402
from training.train import PHOTO_CANVAS, PHOTO_DETECTOR  # noqa: E402

# Texture first (grain, blocks, sharpness, local contrast, softness), then the colour
# changes that should not move an age at all, as a control.
CHANGES = ("noise", "film_grain", "jpeg", "sharpen", "local_contrast", "blur", "downscale", "grey", "colour_cast")
OLDER_YEARS = 3.0  # a 13-17 read this much older or more is counted


def shift_figures(shift: np.ndarray, true: np.ndarray) -> dict:
    """Mean shift (years) of all faces, 13-17 and 25+, and the share of 13-17 read `OLDER_YEARS` older."""
    teens, adults = teens_and_adults(true)
    return {
        "mean": float(shift.mean()),
        "13-17": float(shift[teens].mean()) if teens.any() else None,
        "25+": float(shift[adults].mean()) if adults.any() else None,
        "13-17_older_share": float((shift[teens] >= OLDER_YEARS).mean()) if teens.any() else None,
    }


def signed(value: float | None) -> str:
    """Years with their sign, or n/a."""
    return "n/a" if value is None else f"{value:+.2f}"


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=300)
    parser.add_argument("--changes", nargs="+", default=list(CHANGES),
                        help=f"corruptions of training.degrade (default: {' '.join(CHANGES)})")
    parser.add_argument("--on-crop", action="store_true", help="corrupt the cut crop instead of the whole photo")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    """Detect each face once, cut it from the clean and each changed photo, estimate; the tables."""
    unknown = [name for name in args.changes if name not in DEGRADATIONS]
    if unknown:
        raise AgecheckError(f"--changes {' '.join(unknown)}: expected names from {', '.join(DEGRADATIONS)}")
    regressor = AgeRegressor(AgeModelConfig(model_path=args.model, max_batch=64))
    card = regressor.card
    images = select(load_sources(args.data, *card.validation_split), "val", args.per_source, args.seed)

    conditions = ["clean", *args.changes]
    kept, crops = [], {name: [] for name in conditions}
    for position, rgb, face in iter_detected_faces(images, PHOTO_DETECTOR, PHOTO_CANVAS):
        kept.append(position)
        clean = crop_face_views(rgb, face.xyxy, card.input_size, card.crop, face.keypoints)[0]  # every view of the card
        crops["clean"].append(clean)
        key = images.paths[position].name  # each photo draws its own corruption, as --degrade does
        for name in args.changes:
            if args.on_crop:
                crops[name].append(np.stack([degrade(view, name, args.seed, key) for view in clean]))
            else:
                photo = degrade(rgb, name, args.seed, key)
                crops[name].append(crop_face_views(photo, face.xyxy, card.input_size, card.crop, face.keypoints)[0])
    if not kept:
        raise AgecheckError(f"no face was found in any of {len(images)} photos; expected labelled face photos")
    predicted = {name: regressor.predict_views(np.stack(crops[name])) for name in conditions}
    true = images.age_years[kept].astype(np.float64)
    sources = images.source[kept]

    result = {"model": Path(args.model).name, "faces": len(kept), "older_years": OLDER_YEARS, "rows": {},
              "settings": public_settings(args, "model", "data", "out")}
    parts = ["all", *dict.fromkeys(sources.tolist())]
    for part in parts:
        mask = np.ones(len(kept), bool) if part == "all" else sources == part
        result["rows"][part] = {
            name: {"errors": errors(true[mask], predicted[name][mask]),
                   "key": key_figure(true[mask], predicted[name][mask]),
                   "shift_years": shift_figures(predicted[name][mask] - predicted["clean"][mask], true[mask])}
            for name in conditions
        }

    rows = result["rows"]
    lines = [
        f"{len(kept)} validation faces ({args.per_source} photos per source, seed {args.seed}), model "
        f"`{result['model']}`; each face detected once on the clean photo and cut with that box "
        + ("and each corruption of `training.degrade` applied to the cut crop"
           if args.on_crop else "from the photo changed by each corruption of `training.degrade`")
        + ", so only the pixels differ. Shift: changed minus clean estimate, years.",
        "",
        "| change | MAE | shift all | shift 13–17 | shift 25+ | 13–17 − 25+ "
        f"| 13–17 read ≥ {OLDER_YEARS:g} years older | key figure clean → changed | "
        + " | ".join(f"{p} 13–17 / 25+" for p in parts[1:]) + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in parts[1:]) + " |",
    ]
    clean_key = cell(rows["all"]["clean"]["key"]["age_13_17_flagged"], ".0%")
    for name in conditions:
        figures = rows["all"][name]
        s = figures["shift_years"]
        gap = None if s["13-17"] is None or s["25+"] is None else s["13-17"] - s["25+"]
        by_source = [f"{signed(rows[p][name]['shift_years']['13-17'])} / {signed(rows[p][name]['shift_years']['25+'])}"
                     for p in parts[1:]]
        lines.append(
            f"| {name} | {figures['errors']['mae']:.2f} | {signed(s['mean'])} | {signed(s['13-17'])} "
            f"| {signed(s['25+'])} | {signed(gap)} | {cell(s['13-17_older_share'], '.0%')} "
            f"| {clean_key} → {cell(figures['key']['age_13_17_flagged'], '.0%')} | " + " | ".join(by_source) + " |"
        )
    lines += group_lines(result, images.gender[kept], images.race[kept], true, predicted, args.changes)
    print("\n".join(lines))
    write_report(args.out, lines, result)


def group_lines(result: dict, gender: np.ndarray, race: np.ndarray, true: np.ndarray, predicted: dict,
                changes: list[str]) -> list[str]:
    """Shifts of 13-17 and 25+ by labelled gender and race group into ``result["groups"]``; their table."""
    labelled = [(name, gender == code) for code, name in GENDERS.items()]
    labelled += [(name, race == code) for code, name in RACES.items()]
    labelled = [(name, mask) for name, mask in labelled if mask.any()]
    if not labelled:
        return []
    result["groups"] = {}
    lines = ["", "Shift 13–17 / 25+ by the labelled group (UTKFace's labels; few teenagers per group: read "
             "the 13–17 figures as rough):", "",
             "| group | 13–17 / 25+ faces | " + " | ".join(changes) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in changes) + " |"]
    for name, mask in labelled:
        shifts = {change: shift_figures(predicted[change][mask] - predicted["clean"][mask], true[mask])
                  for change in changes}
        teens, adults = (int((group & mask).sum()) for group in teens_and_adults(true))
        result["groups"][name] = {"13-17": teens, "25+": adults, "shift_years": shifts}
        cells = [f"{signed(f['13-17'])} / {signed(f['25+'])}" for f in shifts.values()]
        lines.append(f"| {name} | {teens} / {adults} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
