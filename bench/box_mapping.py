"""How the full-range BlazeFace box (the app's) sits against the short-range box (photos').

    python bench/box_mapping.py DATA_DIR [N]

Labelled photos are close-ups, which the short-range model finds and the full-range model
mostly misses; the app runs the full-range model on camera frames. Training crops must be
framed like the app's, so photos are detected with the short-range model and its box is
mapped onto the full-range geometry. This measures that mapping on photos where both models
find exactly one face: the full-range box's side over the short-range side, and the shift
of its centre in short-range sides (median, with the interquartile range). It also reports
how often the full-range model finds the face when the photo is shrunk into a larger grey
canvas (as a face a metre or two from a till camera would be).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_app.config import MODELS_DIR, DetectorConfig  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from training.data import load_labels, read_rgb  # noqa: E402


def main() -> None:
    data = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    images = load_labels(data)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(images), min(count, len(images)), replace=False)
    short = FaceDetector(DetectorConfig(model_path=str(MODELS_DIR / "face_detection_short_range.tflite")), video=False)
    full = FaceDetector(DetectorConfig(model_path=str(MODELS_DIR / "face_detection_full_range_sparse.tflite")),
                        video=False)
    rows, full_found, canvas_found = [], 0, 0
    for i in picks:
        rgb = read_rgb(images.paths[i])
        if rgb is None:
            continue
        a, b = short.detect(rgb), full.detect(rgb)
        full_found += len(b) > 0
        h, w = rgb.shape[:2]
        canvas = np.full((3 * h, 3 * w, 3), 128, np.uint8)
        canvas[h : 2 * h, w : 2 * w] = rgb
        canvas_found += len(full.detect(canvas)) > 0
        if len(a) == 1 and len(b) == 1:
            sa, sb = a.xyxy[0], b.xyxy[0]
            side_a = max(sa[2] - sa[0], sa[3] - sa[1])
            side_b = max(sb[2] - sb[0], sb[3] - sb[1])
            ca, cb = (sa[:2] + sa[2:]) / 2, (sb[:2] + sb[2:]) / 2
            rows.append((side_b / side_a, *((cb - ca) / side_a)))
    short.close()
    full.close()
    r = np.array(rows)
    print(f"{data}: {len(picks)} photos; full-range finds a face in {full_found}, "
          f"in {canvas_found} when the photo is shrunk into a 3x grey canvas; both find one face in {len(r)}")
    for name, column in zip(("side full/short", "centre shift x / side", "centre shift y / side"), r.T,
                            strict=True):
        q1, med, q3 = np.percentile(column, [25, 50, 75])
        print(f"{name}: median {med:+.3f} (IQR {q1:+.3f} to {q3:+.3f})")


if __name__ == "__main__":
    main()
