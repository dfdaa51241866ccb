"""Does the quality gate's blur test still refuse a blurred face once the camera adds noise?

    python bench/gate_noise.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 100] [--blur 0 4 8 12] [--sensor-noise 0 6 12 25] \\
        [--out docs/gate_noise]

Each sampled validation photo is placed in a 720p till frame (as `bench/detector_input.py`
does), and its face found on that clean frame. The frame is then blurred (Gaussian, sigma
in frame pixels: the face is 100-180 px wide there) and Gaussian sensor noise of each sigma
is added; the app's quality checks (`edge_app.quality.measure` and `passes`, as its `gate`
applies them; default `QualityConfig`, the card's crop) judge the same face on it. Per blur
and noise: the median of the gate's sharpness measure (variance of the Laplacian of the smoothed 64 px
grey crop) and the share of faces that pass the gate. The blur test works if blurred faces
fail whatever the noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detector_input import till_frames, with_sensor_noise  # noqa: E402
from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app import quality  # noqa: E402
from edge_app.config import DetectorConfig, QualityConfig  # noqa: E402
from edge_app.crop import crop_faces  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.model_card import ModelCard  # noqa: E402
from training.data import most_confident  # noqa: E402


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=100)
    parser.add_argument("--blur", type=float, nargs="+", default=[0.0, 4.0, 8.0, 12.0],
                        help="sigmas of the Gaussian blur of the frame, in frame pixels")
    parser.add_argument("--sensor-noise", type=float, nargs="+", default=[0.0, 6.0, 12.0, 25.0],
                        help="sigmas of Gaussian noise added to the blurred frame")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: frames, faces, the printed and written table."""
    if any(s < 0 for s in [*args.blur, *args.sensor_noise]):
        raise AgecheckError(f"--blur {args.blur} --sensor-noise {args.sensor_noise}: expected sigmas of 0 or more")
    card = ModelCard.load(args.model)
    config = QualityConfig()
    detector = FaceDetector(DetectorConfig(), video=False)
    try:
        frames, redrawn = till_frames(args)
        framed = [(frame, most_confident(detector.detect(frame))) for frame in frames]
    finally:
        detector.close()
    framed = [(frame, face) for frame, face in framed if face is not None]
    if not framed:
        raise AgecheckError(f"no face found in the till frames of {', '.join(args.data)}")
    noise_rng = np.random.default_rng([args.seed, 2])
    rows = []
    for blur in args.blur:
        for sigma in args.sensor_noise:
            sharpness, passed = [], 0
            for frame, face in framed:
                image = with_sensor_noise(cv2.GaussianBlur(frame, (0, 0), blur) if blur else frame, sigma, noise_rng)
                # the gate's own measures and limits, on the crop it would cut (one crop, not two)
                measures = quality.measure(face, crop_faces(image, face.xyxy, card.input_size, card.crop,
                                                            face.keypoints))
                sharpness.append(float(measures.sharpness[0]))
                passed += int(quality.passes(measures, config)[0])
            rows.append({"blur_px": blur, "sensor_noise": sigma, "faces": len(framed),
                         "sharpness_median": float(np.median(sharpness)), "passed": passed / len(framed)})
    lines = [
        f"{len(framed)} faces in 720p till frames ({args.per_source} validation photos per source, seed {args.seed}; "
        f"{redrawn} backgrounds drawn again: the detector found a face in them), "
        f"judged by the app's quality gate (min_smoothed_sharpness {config.min_smoothed_sharpness:g}, "
        f"also eye distance and turn) after blur and sensor noise:",
        "",
        "| blur (sigma, frame px) | sensor noise (sigma) | sharpness, median | faces the gate passes |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['blur_px']:g} | {r['sensor_noise']:g} | {r['sharpness_median']:.0f} | {r['passed']:.0%} |")
    print("\n".join(lines))
    write_report(args.out, lines, {"rows": rows, "backgrounds_redrawn": redrawn,
                                   "settings": public_settings(args, "data", "model", "out")})


if __name__ == "__main__":
    main()
