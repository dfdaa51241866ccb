"""Per photo or per till frame: does the till's framing change what a model estimates?

    python bench/till_frame.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf --model models/age_resnet50_int8.tflite [--model OTHER.tflite] \\
        [--per-source 0] [--degrade camera] [--seed 0] [--margin-years M] [--out docs/model/NAME] \\
        [--predictions-dir RUN/till_frame]

`agecheck evaluate` finds each face in its photo (on the card's canvas) and cuts it from the
photo's own pixels. At the till bench (`bench/per_customer.py`) the same photo is first
scaled to a till-like size in a 720p frame, compressed into an MJPG clip, found in the whole
frame and cut from the frame's pixels. This scores every photo both ways with each model,
on one frame per photo (framed as the bench frames a customer's first frame: size and place
drawn the same way, seeded, though not the same draws as its clip; a background in which the
detector finds a face of its own is drawn again, as there), so that a
difference between per-photo figures and the till's is put down to the framing or not. The
photos whose face is not found either way are left out of both, and counted. Every model is
scored at one margin (``--margin-years``, default the first model's card MAE), so that their
gates compare like for like. ``--predictions-dir`` writes each model's estimates both ways
in `agecheck evaluate`'s predictions format (for `bench/compare_models.py`); they name
dataset files, so they belong beside a run, not in the project.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.per_customer import background_without_faces, customer_frames, customer_photo, till_writer  # noqa: E402
from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.age_model import AgeRegressor  # noqa: E402
from edge_app.config import AgeModelConfig  # noqa: E402
from edge_app.crop import crop_face_views  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.faces import Faces  # noqa: E402
from training.data import detect_in_photo, load_sources, most_confident, select  # noqa: E402
from training.degrade import DEGRADATIONS  # noqa: E402
from training.evaluate import cell, write_predictions  # noqa: E402
from training.export import canvas_from_card, detector_from_card  # noqa: E402
from training.metrics import figures  # noqa: E402

WAYS = ("photo", "till frame")


def estimate(models: list[AgeRegressor], rgb: np.ndarray, face: Faces) -> list[float]:
    """Each model's estimate of ``face``, cut from ``rgb`` with that model's card settings (every view it names)."""
    return [float(m.predict_views(crop_face_views(rgb, face.xyxy, m.input_size, m.card.crop, face.keypoints))[0])
            for m in models]


def table(true_years, sources, estimates, names, margin_years) -> tuple[list[str], list[dict]]:
    """Markdown rows and JSON rows: each model, each way, all photos and each source."""
    lines = [
        "| model | photos | way | MAE | 13–17 bias | key figure | AUC 13–17 vs 25+ | under 18 flagged | 25+ flagged |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = []
    groups = [("all", np.ones(len(true_years), bool))] + [(s, sources == s) for s in dict.fromkeys(sources.tolist())]
    for m, name in enumerate(names):
        for group, mask in groups:
            for w, way in enumerate(WAYS):
                f = figures(true_years[mask], estimates[mask, m, w], 18, margin_years)
                teens = f["errors"]["bands"].get("13-17", {})
                row = {"model": name, "photos": group, "way": way, "count": int(mask.sum()),
                       "mae": f["errors"]["mae"], "bias_13_17": teens.get("bias"),
                       "key": f["key"]["age_13_17_flagged"], "auc": f["key"]["auc_13_17_vs_25_plus"],
                       "minors_flagged": f["policy"]["minors_flagged"],
                       "adults_flagged": f["policy"]["age_25_plus_flagged"]}
                rows.append(row)
                lines.append(
                    f"| {name} | {group} ({row['count']}) | {way} | {row['mae']:.2f} | "
                    f"{cell(row['bias_13_17'], '+.2f')} | {cell(row['key'], '.1%')} | {cell(row['auc'], '.3f')} | "
                    f"{cell(row['minors_flagged'], '.1%')} | "
                    f"{cell(row['adults_flagged'], '.1%')} |")
    return lines, rows


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=0, model=False)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--degrade", default="camera")
    parser.add_argument("--margin-years", type=float, default=None)
    parser.add_argument("--predictions-dir", default=None)
    args = parser.parse_args()
    if args.degrade != "none" and args.degrade not in DEGRADATIONS:
        parser.error(f"--degrade {args.degrade!r}: expected none or one of {', '.join(DEGRADATIONS)}")
    run_bench(run, args)


def run(args: argparse.Namespace) -> None:
    """Score every photo both ways with every model; print and write the table."""
    models = [AgeRegressor(AgeModelConfig(model_path=path)) for path in args.model]
    card = models[0].card.data
    margin = card["mae"] if args.margin_years is None else args.margin_years
    images = select(load_sources(args.data, *models[0].card.validation_split), "val", args.per_source, args.seed)
    canvas = canvas_from_card(card)
    rng = np.random.default_rng(args.seed)
    kept, per_photo, redrawn = [], [], 0
    with tempfile.TemporaryDirectory() as tmp, FaceDetector(detector_from_card(card), video=False) as detector:
        clip = Path(tmp) / "frames.avi"
        writer = till_writer(clip, 30)
        for i in range(len(images)):
            rgb = customer_photo(images.paths[i], args.degrade, args.seed)
            if rgb is None:
                continue
            back, again = background_without_faces(rng, detector)
            redrawn += again
            writer.write(next(customer_frames(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), back, 1, rng)))
            face = most_confident(detect_in_photo(detector, rgb, canvas))
            kept.append(i)
            per_photo.append(None if face is None else estimate(models, rgb, face))
        writer.release()
        reader = cv2.VideoCapture(str(clip))
        rows = []
        for i, photo in zip(kept, per_photo, strict=True):
            ok, bgr = reader.read()
            if not ok:
                raise AgecheckError(f"the clip of till frames ended early, at photo {len(rows)} of {len(kept)}")
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            face = most_confident(detector.detect(frame))
            if photo is not None and face is not None:
                rows.append((i, photo, estimate(models, frame, face)))
        reader.release()
    if not rows:
        raise AgecheckError(f"no face was found both in a photo and in its till frame, of {len(images)} photos")
    index = np.array([r[0] for r in rows], np.int64)
    estimates = np.array([[r[1], r[2]] for r in rows], np.float64).transpose(0, 2, 1)  # photo, model, way
    true_years = images.age_years[index].astype(np.float64)
    sources = images.source[index]
    names = [Path(path).name for path in args.model]
    if len(set(names)) < len(names):  # e.g. two runs' age_resnet50_int8.tflite
        names = [f"{Path(path).parent.name}/{Path(path).name}" for path in args.model]
    lines, json_rows = table(true_years, sources, estimates, names, margin)
    lines = [
        f"{len(rows)} of {len(images)} validation photos (`--degrade {args.degrade}`, seed {args.seed}; "
        f"{len(images) - len(rows)} left out: no face found in the photo or in its till frame; {redrawn} "
        f"backgrounds drawn again: the detector found a face in them), each model at margin {margin:.2f}; "
        "flagged: estimate < 18 + margin.",
        "",
        *lines,
    ]
    print("\n".join(lines))
    if args.predictions_dir:  # MODEL_WAY.csv, in `agecheck evaluate`'s format
        folder, files = Path(args.predictions_dir), [images.paths[i].name for i in index]
        folder.mkdir(parents=True, exist_ok=True)
        for m, name in enumerate(names):
            for w, way in enumerate(WAYS):
                stem = f"{name.removesuffix('.tflite').replace('/', '_')}_{way.replace(' ', '_')}"
                write_predictions(folder / f"{stem}.csv", sources, files, true_years, estimates[:, m, w])
    settings = public_settings(args, "data", "out", "predictions_dir") | {"model": names}
    write_report(args.out, lines, {"rows": json_rows, "backgrounds_redrawn": redrawn, "settings": settings})


if __name__ == "__main__":
    main()
