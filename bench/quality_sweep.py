"""Where the age model's error grows: face size, sharpness, turn and light, on validation photos.

    python bench/quality_sweep.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 300] [--model models/age_resnet50_int8.tflite] [--out OUT]

Each validation photo (a seeded sample per source) is made into small faces (the photo
shrunk so that the eyes are 6-48 px apart), blurred faces (Gaussian, in proportion to the
face) and faces in dim and glaring light (gamma and gain, highlights clipped), detected by
the app's detector and cut by the app's crop, as `agecheck run` would; the clean photos give
the turn. For the light, which lasts at a till, it also shows what refusing the faces beyond
a limit would do against widening the margin until as many adults are asked. Prints Markdown
tables of MAE per bin of the measures that `edge_app.quality` gates on, and of the face's
brightness, which it counts (and with ``--out``, writes them to OUT.md and OUT.json), for
docs/PERFORMANCE.md; the gate's defaults and the light limits are read off them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.age_model import AgeRegressor  # noqa: E402
from edge_app.config import AgeModelConfig, DetectorConfig  # noqa: E402
from edge_app.crop import crop_face_views  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from edge_app.quality import BRIGHT_FACE_BRIGHTNESS, DARK_FACE_BRIGHTNESS, brightness, measure  # noqa: E402
from training.data import RACES, detect_in_photo, load_sources, most_confident, read_rgb, select  # noqa: E402
from training.degrade import to_uint8  # noqa: E402
from training.evaluate import cell  # noqa: E402
from training.metrics import gate_flags, teens_and_adults  # noqa: E402

EYE_DISTANCES_PX = (6, 8, 10, 12, 16, 20, 24, 32, 48)
BLUR_SIGMAS_PER_EYE_DISTANCE = (0.0, 0.04, 0.08, 0.12, 0.18, 0.25)
LIGHTS = ((2.2, 0.25), (2.0, 0.35), (1.7, 0.45), (1.4, 0.6), (1.0, 1.4), (1.0, 1.8), (1.0, 2.2), (1.0, 2.8))
"""(gamma, gain) of each light: a dim shop to a window behind the till (highlights clip)."""
REFUSAL_LIMITS = (("darker than", DARK_FACE_BRIGHTNESS), ("darker than", 30.0), ("darker than", 45.0),
                  ("brighter than", 210.0), ("brighter than", BRIGHT_FACE_BRIGHTNESS), ("brighter than", 245.0))


def relit(rgb: np.ndarray, gamma: float, gain: float) -> np.ndarray:
    """``rgb`` under other light: ``255 * gain * (rgb / 255) ** gamma``, clipped to uint8."""
    return to_uint8(255 * gain * (rgb.astype(np.float32) / 255) ** gamma)


def refuse_or_widen(true: np.ndarray, predicted: np.ndarray, refused: np.ndarray, threshold_age: float,
                    margin_years: float) -> dict:
    """13-17s and adults 25+ asked for ID if ``refused`` faces were always asked, and at the wider
    margin that asks at least as many adults without refusing any (searched in 0.05-year steps).
    Shares are None where a group is empty."""
    teens, adults = teens_and_adults(true)
    asked = gate_flags(predicted, threshold_age, margin_years) | refused
    adults_asked = asked[adults].mean() if adults.any() else 0.0
    wider = margin_years
    while adults.any() and gate_flags(predicted[adults], threshold_age, wider).mean() < adults_asked and wider < 60:
        wider += 0.05
    widened = gate_flags(predicted, threshold_age, wider)

    def share(flags, group):
        return float(flags[group].mean()) if group.any() else None

    return {"refused": float(refused.mean()), "teens_asked": share(asked, teens), "adults_asked": share(asked, adults),
            "wider_margin_years": round(wider, 2), "teens_asked_wider": share(widened, teens),
            "adults_asked_wider": share(widened, adults)}


def table(title: str, unit: str, values: np.ndarray, errors: np.ndarray, edges: list[float],
          min_faces: int) -> tuple[list, list]:
    """A Markdown table of MAE and bias per bin of ``values`` (bins of ``min_faces`` or more), and its rows."""
    lines = [f"{title}", "", f"| {unit} | faces | MAE | bias |", "| --- | ---: | ---: | ---: |"]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (values >= lo) & (values < hi)
        if mask.sum() >= min_faces:
            rows.append({"from": lo, "to": hi, "faces": int(mask.sum()),
                         "mae": round(float(np.abs(errors[mask]).mean()), 3),
                         "bias": round(float(errors[mask].mean()), 3)})
            lines.append(f"| {lo:g}–{hi:g} | {mask.sum()} | {rows[-1]['mae']:.2f} | {rows[-1]['bias']:+.2f} |")
    return lines + [""], rows


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=300)
    parser.add_argument("--min-bin-faces", type=int, default=10, help="bins with fewer faces are left out")
    run_bench(sweep, parser.parse_args())


def sweep(args: argparse.Namespace) -> None:
    """Everything after the arguments: photos, estimates, the printed and written tables."""
    regressor = AgeRegressor(AgeModelConfig(model_path=args.model))
    images = select(load_sources(args.data, *regressor.card.validation_split), "val", args.per_source, args.seed)
    size, crop = regressor.input_size, regressor.card.crop
    rows = {"size": [], "blur": [], "turn": []}  # (measure, error) pairs
    light = []  # (brightness, true age, estimate, labelled race or -1)
    found = {d: [0, 0] for d in EYE_DISTANCES_PX}
    with FaceDetector(DetectorConfig(), video=False) as detector:

        def estimate(rgb):
            best = most_confident(detect_in_photo(detector, rgb, 3.0))
            if best is None:
                return None
            views = crop_face_views(rgb, best.xyxy, size, crop, best.keypoints)  # as the app: every view of the card
            crops = views[:, 0]
            return measure(best, crops), float(regressor.predict_views(views)[0]), float(brightness(crops)[0])

        for path, age, race in zip(images.paths, images.age_years.tolist(), images.race.tolist(), strict=True):
            rgb = read_rgb(path)
            if rgb is None:
                continue
            clean = estimate(rgb)
            if clean is None:
                continue
            measures, predicted, level = clean
            eyes = float(measures.eye_distance_px[0])
            if not np.isfinite(eyes) or eyes < 8:
                continue
            rows["turn"].append((float(measures.turn[0]), predicted - age))
            for target in EYE_DISTANCES_PX:
                scale = target / eyes
                if scale >= 1:
                    continue
                small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                found[target][1] += 1
                result = estimate(small)
                if result is not None:
                    found[target][0] += 1
                    rows["size"].append((float(result[0].eye_distance_px[0]), result[1] - age))
            for k in BLUR_SIGMAS_PER_EYE_DISTANCE[1:]:
                result = estimate(cv2.GaussianBlur(rgb, (0, 0), sigmaX=k * eyes))
                if result is not None:
                    rows["blur"].append((float(result[0].sharpness[0]), result[1] - age))
            rows["blur"].append((float(measures.sharpness[0]), predicted - age))
            light.append((level, age, predicted, race))
            for gamma, gain in LIGHTS:
                result = estimate(relit(rgb, gamma, gain))
                if result is not None:
                    light.append((result[2], age, result[1], race))
    turn, size_rows, blur = (np.array(rows[k]) for k in ("turn", "size", "blur"))
    light = np.array(light)
    clean_mae = np.abs(turn[:, 1]).mean()
    lines = [f"{len(turn)} validation photos ({args.per_source} per source, seed {args.seed}), model "
             f"{Path(args.model).name}; clean MAE {clean_mae:.2f}", "",
             "| eyes apart (px) | faces found |", "| ---: | ---: |"]
    lines += [f"| {d} | {hit}/{tried} |" for d, (hit, tried) in found.items()] + [""]
    result = {"photos": len(turn), "clean_mae": round(float(clean_mae), 3),
              "faces_found": {str(d): {"found": hit, "tried": tried} for d, (hit, tried) in found.items()},
              "settings": public_settings(args, "model", "data", "out")}
    for key, title, unit, rows, edges in (
        ("by_eye_distance", "By eye distance (photos shrunk):", "eyes apart (px)", size_rows,
         [0, 6, 8, 10, 12, 16, 20, 24, 32, 48, 1000]),
        ("by_sharpness", "By sharpness (photos blurred, and clean):", "Laplacian variance, smoothed", blur,
         [0, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100_000]),
        ("by_turn", "By turn (clean photos):", "nose off centre (eye distances)", turn,
         [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 10]),
        ("by_brightness", "By brightness (photos in dim and glaring light, and clean):",
         "mean grey of the face's middle", np.stack([light[:, 0], light[:, 2] - light[:, 1]], axis=1),
         [0, 20, 30, 45, 60, 80, 100, 130, 160, 190, 210, 230, 245, 256]),
    ):
        table_lines, result[key] = table(title, unit, rows[:, 0], rows[:, 1], edges, args.min_bin_faces)
        lines += table_lines
    lines += refusal_lines(result, light, regressor.card.mae_years) + light_by_group_lines(result, light)
    print("\n".join(lines))
    write_report(args.out, lines, result)


def refusal_lines(result: dict, light: np.ndarray, margin_years: float) -> list[str]:
    """The light sweep's faces: refusing those beyond each limit, against a wider margin (into ``result``)."""
    level, true, predicted, _ = light.T
    lines = [f"Refusing faces in poor light (light sweep, {len(light)} faces; gate 18 + {margin_years:.2f}), "
             "against widening the margin until as many adults 25+ are asked:", "",
             "| refuse faces | refused | 13–17 asked | 25+ asked | wider margin instead | 13–17 asked | 25+ asked |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    result["refuse_or_widen"] = []
    for words, limit in REFUSAL_LIMITS:
        refused = level < limit if words == "darker than" else level > limit
        row = refuse_or_widen(true, predicted, refused, 18.0, margin_years)
        result["refuse_or_widen"].append({"refuse": f"{words} {limit:g}", **row})
        shares = [cell(row[k], ".1%") for k in ("teens_asked", "adults_asked", "teens_asked_wider",
                                                   "adults_asked_wider")]
        lines.append(f"| {words} {limit:g} | {row['refused']:.1%} | {shares[0]} | {shares[1]} | "
                     f"{row['wider_margin_years']:.2f} | {shares[2]} | {shares[3]} |")
    return lines + [""]


def light_by_group_lines(result: dict, light: np.ndarray) -> list[str]:
    """Which labelled faces (UTKFace's race labels) the light limits count, group by group (into ``result``)."""
    level, race = light[:, 0], light[:, 3]
    groups = [(name, race == code) for code, name in RACES.items() if (race == code).any()]
    if not groups:
        return []
    lines = [f"Beyond the light limits by labelled group (the light sweep's faces with UTKFace's race labels; "
             f"darker than {DARK_FACE_BRIGHTNESS:g}, brighter than {BRIGHT_FACE_BRIGHTNESS:g}):", "",
             "| group | faces | too dark | too bright |", "| --- | ---: | ---: | ---: |"]
    result["light_by_group"] = {}
    for name, mask in groups:
        dark = float((level[mask] < DARK_FACE_BRIGHTNESS).mean())
        bright = float((level[mask] > BRIGHT_FACE_BRIGHTNESS).mean())
        result["light_by_group"][name] = {"faces": int(mask.sum()), "too_dark": dark, "too_bright": bright}
        lines.append(f"| {name} | {mask.sum()} | {dark:.1%} | {bright:.1%} |")
    return lines + [""]


if __name__ == "__main__":
    main()
