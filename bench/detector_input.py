"""What shrinking a frame before BlazeFace does: faces found through camera noise, and where.

    python bench/detector_input.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 300] [--sides 0 640 480 384 320] \\
        [--sensor-noise 0 12 25] [--confidences 0.5 0.6 0.7 0.8] [--out docs/detector_input]

Each sampled validation photo is placed in a 720p till frame as `bench/per_customer.py`
places a customer (its first frame, a soft background in which BlazeFace finds no face of its
own: `bench/per_customer.background_without_faces`), then Gaussian sensor noise of each
``--sensor-noise`` sigma is added to the whole frame, as a camera at high gain in a dim shop
makes it. BlazeFace (the app's `FaceDetector`) runs on each frame at each ``--sides``
setting of ``[detector] max_input_side_px`` (0: the frame as it is). Per setting and noise:
the share of frames where it finds a face, ms per frame, and how far its most confident face
lies from the one found on the same frame without noise and without shrinking (box IoU,
eye-keypoint error in eye distances): the reference is itself a detection, so the no-shrink
rows score 1.0 / 0.0 on clean frames by construction.

A second table weighs ``[detector] min_detection_confidence`` (the app's input side, each
noise): the share of till frames whose customer is still found at each ``--confidences``
value, beside the share of as many empty backgrounds of the same kind, drawn without the
check above, in which BlazeFace finds a face that is not there (a fifth to a quarter of them
hold a blob it takes for one). Raising the confidence drops such false faces and, with them,
faces it is less sure of; the table says how many of each. The backgrounds are the bench's
own blotches, not a shop's posters and patterns: what a real till's background does is not
measured here. (The frames' backgrounds are checked at the app's default confidence: below
it, a false face in one would count as its customer found.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.per_customer import background, background_without_faces, customer_frames, customer_photo  # noqa: E402
from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.config import ConfigError, DetectorConfig  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.model_card import ModelCard  # noqa: E402
from edge_app.track import box_iou  # noqa: E402
from training.data import load_sources, most_confident, select  # noqa: E402


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=300)
    parser.add_argument("--sides", type=int, nargs="+", default=[0, 640, 480, 384, 320],
                        help="[detector] max_input_side_px settings to compare (0: off)")
    parser.add_argument("--sensor-noise", type=float, nargs="+", default=[0.0, 12.0, 25.0],
                        help="sigmas of Gaussian noise added to each frame")
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8],
                        help="[detector] min_detection_confidence values to weigh (customers found, false faces)")
    run_bench(measure, parser.parse_args())


def till_frames(args: argparse.Namespace) -> tuple[list[np.ndarray], int]:
    """One 720p RGB till frame per sampled validation photo (clean: noise is added later), and
    how many backgrounds were drawn again because the app's detector found a face in them."""
    images = select(load_sources(args.data, *ModelCard.load(args.model).validation_split), "val",
                    args.per_source, args.seed)
    rng = np.random.default_rng(args.seed)
    frames, redrawn = [], 0
    with FaceDetector(DetectorConfig(), video=False) as detector:
        for path in images.paths:
            photo = customer_photo(path, "none", args.seed)
            if photo is None:
                continue
            back, again = background_without_faces(rng, detector)
            redrawn += again
            bgr = next(customer_frames(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), back, 2, rng))
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not frames:
        raise AgecheckError(f"no readable validation photo in {', '.join(args.data)}")
    return frames, redrawn


def with_sensor_noise(frame: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``frame`` with Gaussian sensor noise of ``sigma`` (grey levels) added; itself when sigma is 0."""
    if not sigma:
        return frame
    return np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def eye_error(reference, face) -> float:
    """Mean distance of the two eye keypoints from the reference's, in the reference's eye distances."""
    ref_eyes, eyes = reference.keypoints[0, :2], face.keypoints[0, :2]
    return float(np.linalg.norm(eyes - ref_eyes, axis=1).mean() / np.linalg.norm(ref_eyes[1] - ref_eyes[0]))


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: frames, detections, the printed and written table."""
    try:  # the app's own rules for the settings
        configs = {side: DetectorConfig(max_input_side_px=side) for side in args.sides}
    except ConfigError as error:
        raise AgecheckError(f"--sides {args.sides}: {error}") from None
    try:
        lowest = min((DetectorConfig(min_detection_confidence=c) for c in args.confidences),
                     key=lambda config: config.min_detection_confidence)
    except ConfigError as error:
        raise AgecheckError(f"--confidences {args.confidences}: {error}") from None
    frames, redrawn = till_frames(args)
    detectors = {side: FaceDetector(config, video=False) for side, config in configs.items()}
    reference_detector = detectors.get(0) or FaceDetector(DetectorConfig(max_input_side_px=0), video=False)
    noise_rng = np.random.default_rng([args.seed, 1])
    cells = {(sigma, side): {"found": 0, "seconds": 0.0, "iou": [], "eye_error": []}
             for sigma in args.sensor_noise for side in args.sides}
    try:
        for frame in frames:
            reference = most_confident(reference_detector.detect(frame))
            for sigma in args.sensor_noise:
                noisy = with_sensor_noise(frame, sigma, noise_rng)
                for side, detector in detectors.items():
                    started = time.perf_counter()
                    face = most_confident(detector.detect(noisy))
                    cell = cells[(sigma, side)]
                    cell["seconds"] += time.perf_counter() - started
                    if face is None:
                        continue
                    cell["found"] += 1
                    if reference is not None:
                        cell["iou"].append(float(box_iou(reference.xyxy, face.xyxy)[0, 0]))
                        cell["eye_error"].append(eye_error(reference, face))
    finally:
        for detector in {*detectors.values(), reference_detector}:
            detector.close()
    rows = []
    for (sigma, side), cell in cells.items():
        rows.append({
            "sensor_noise": sigma, "max_input_side_px": side, "frames": len(frames),
            "found": cell["found"] / len(frames), "ms_per_frame": 1000 * cell["seconds"] / len(frames),
            "iou_median": float(np.median(cell["iou"])) if cell["iou"] else None,
            "iou_p5": float(np.percentile(cell["iou"], 5)) if cell["iou"] else None,
            "eye_error_median": float(np.median(cell["eye_error"])) if cell["eye_error"] else None,
        })
    lines = [
        f"{len(frames)} till frames (1280x720, one per validation photo, {args.per_source} per source, seed "
        f"{args.seed}; {redrawn} backgrounds drawn again: the detector found a face in them); reference: "
        "the most confident face of the clean frame, not shrunk.",
        "",
        "| sensor noise (sigma) | max_input_side_px | faces found | ms/frame | box IoU with the reference: "
        "median / 5th percentile | eye error (eye distances), median |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        iou = "–" if r["iou_median"] is None else f"{r['iou_median']:.3f} / {r['iou_p5']:.3f}"
        eye = "–" if r["eye_error_median"] is None else f"{r['eye_error_median']:.3f}"
        lines.append(f"| {r['sensor_noise']:g} | {r['max_input_side_px'] or 'off'} | {r['found']:.1%} "
                     f"| {r['ms_per_frame']:.1f} | {iou} | {eye} |")
    confidence_rows = confidence_table(frames, lowest, args)
    lines += [
        "",
        f"At the app's input side ({lowest.max_input_side_px} px), per `min_detection_confidence`: till frames whose "
        f"customer is found, and as many empty backgrounds of the same kind (drawn without the check) in which a "
        f"face is found, the same noise added:",
        "",
        "| sensor noise (sigma) | min_detection_confidence | till frames: customer found | "
        "empty backgrounds: a face found |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for r in confidence_rows:
        lines.append(f"| {r['sensor_noise']:g} | {r['min_confidence']:g} | {r['customer_found']:.1%} "
                     f"| {r['false_face']:.1%} |")
    print("\n".join(lines))
    write_report(args.out, lines, {"rows": rows, "confidence_rows": confidence_rows, "backgrounds_redrawn": redrawn,
                                   "settings": public_settings(args, "data", "model", "out")})


def confidence_table(frames: list[np.ndarray], config: DetectorConfig, args: argparse.Namespace) -> list[dict]:
    """Per noise and ``--confidences`` value: the share of ``frames`` with a face scored at least
    that, and of as many fresh `background`s (seeded apart from the frames) with one."""
    back_rng, noise_rng = np.random.default_rng([args.seed, 3]), np.random.default_rng([args.seed, 4])
    empty = [cv2.cvtColor(background(back_rng), cv2.COLOR_BGR2RGB) for _ in frames]
    best = {"customer": {sigma: [] for sigma in args.sensor_noise}, "false": {sigma: [] for sigma in args.sensor_noise}}
    with FaceDetector(config, video=False) as detector:
        for kind, images in (("customer", frames), ("false", empty)):
            for image in images:
                for sigma in args.sensor_noise:
                    faces = detector.detect(with_sensor_noise(image, sigma, noise_rng))
                    best[kind][sigma].append(float(faces.confidence.max()) if len(faces) else 0.0)
    rows = []
    for sigma in args.sensor_noise:
        customer, false = np.array(best["customer"][sigma]), np.array(best["false"][sigma])
        for confidence in sorted(args.confidences):
            rows.append({"sensor_noise": sigma, "min_confidence": confidence, "frames": len(frames),
                         "customer_found": float((customer >= confidence).mean()),
                         "false_face": float((false >= confidence).mean())})
    return rows


if __name__ == "__main__":
    main()
