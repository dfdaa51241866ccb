"""Which BlazeFace model and confidence to use on till-camera video, measured on real clips.

    python bench/detector_choice.py [CLIP ...]   (default: the bundled clip)

For each model and min_detection_confidence: faces found per frame, frames with a face,
and ms per frame. Prints a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_app.capture import VideoSource  # noqa: E402
from edge_app.config import DEFAULT_SAMPLE_CLIP, MODELS_DIR, DetectorConfig, SourceConfig  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402

MODELS = ("face_detection_full_range_sparse.tflite", "face_detection_short_range.tflite")
CONFIDENCES = (0.3, 0.5, 0.7)


def read(clip: Path) -> list:
    with VideoSource(SourceConfig(source=str(clip))) as source:
        return [frame.rgb for frame in source.frames()]


def main() -> None:
    clips = [Path(p) for p in sys.argv[1:]] or [DEFAULT_SAMPLE_CLIP]
    print("| clip | model | min confidence | faces/frame | frames with a face | ms/frame |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for clip in clips:
        frames = read(clip)
        for model in MODELS:
            for confidence in CONFIDENCES:
                config = DetectorConfig(model_path=str(MODELS_DIR / model), min_detection_confidence=confidence)
                with FaceDetector(config) as detector:
                    started = time.perf_counter()
                    counts = [len(detector.detect(f, timestamp_ms=i * 80)) for i, f in enumerate(frames)]
                    ms = (time.perf_counter() - started) / len(frames) * 1000
                print(f"| {clip.name} | {model.split('.')[0].replace('face_detection_', '')} | {confidence} | "
                      f"{sum(counts) / len(frames):.2f} | {sum(c > 0 for c in counts)}/{len(frames)} | {ms:.1f} |")


if __name__ == "__main__":
    main()
