"""Per-stage and end-to-end speed of the edge app, and its peak memory.

    python bench/stages.py [--model models/age_resnet50_int8.tflite] [--seconds 10] \\
        [--config A.toml --config B.toml --repeats 5]

The 720p 60 fps one-face clip is made from the bundled sample (the left customer, cropped and
scaled up, played forwards and backwards), so anyone can rerun this without other data.
Prints a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import run_bench  # noqa: E402
from edge_app import quality  # noqa: E402
from edge_app.age_model import AgeRegressor  # noqa: E402
from edge_app.capture import VideoSource  # noqa: E402
from edge_app.config import (  # noqa: E402
    DEFAULT_AGE_MODEL,
    DEFAULT_SAMPLE_CLIP,
    AgeModelConfig,
    DetectorConfig,
    QualityConfig,
    SourceConfig,
    TrackerConfig,
    load_config,
)
from edge_app.crop import crop_face_views  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from edge_app.overlay import draw  # noqa: E402
from edge_app.track import FaceTracker  # noqa: E402


def make_720p_clip(path: Path, seconds: float, fps: float = 60.0) -> Path:
    with VideoSource(SourceConfig(source=str(DEFAULT_SAMPLE_CLIP))) as source:
        frames = [frame.image[50:158, 0:192] for frame in source.frames()]  # the left customer alone, 16:9
    cycle = frames + frames[::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1280, 720))
    for i in range(int(seconds * fps)):
        # Each source frame is shown ~5 times: a 12.5 fps clip slowed to 60 fps.
        writer.write(cv2.resize(cycle[(i // 5) % len(cycle)], (1280, 720), interpolation=cv2.INTER_CUBIC))
    writer.release()
    return path


def ms_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000


def stage_timings(clip: Path, model: Path, detector_config: DetectorConfig) -> dict:
    capture = cv2.VideoCapture(str(clip))
    frames = []
    started = time.perf_counter()
    while len(frames) < 120:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    decode_ms = (time.perf_counter() - started) / len(frames) * 1000
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    to_rgb_ms = ms_per_call(lambda: cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB), 50)
    out = {"decode_720p_ms": decode_ms, "bgr_to_rgb_ms": to_rgb_ms}
    with FaceDetector(replace(detector_config, min_interval_ms=0)) as detector:  # BlazeFace on every frame
        started = time.perf_counter()
        faces_per_frame = [detector.detect(image, timestamp_ms=i * 17 + 1) for i, image in enumerate(rgb)]
        out["detect_ms"] = (time.perf_counter() - started) / len(rgb) * 1000
    faces = next(f for f in faces_per_frame if len(f))
    regressor = AgeRegressor(AgeModelConfig(model_path=str(model), num_threads=2, max_batch=64))
    size, crop = regressor.input_size, regressor.card.crop
    out["crop_ms_per_face"] = ms_per_call(  # every test-time view the card names, as the quality gate cuts them
        lambda: crop_face_views(rgb[0], faces.xyxy, size, crop, faces.keypoints), 50
    ) / len(faces)
    face_views = crop_face_views(rgb[0], faces.xyxy, size, crop, faces.keypoints)
    face_crops = face_views[:, 0]
    out["test_time_views"] = face_views.shape[1]
    out["age_ms_per_face"] = ms_per_call(lambda: regressor.predict_views(face_views[:1]), 20)
    out["quality_ms_per_face"] = ms_per_call(
        lambda: quality.passes(quality.measure(faces, face_crops), QualityConfig()), 50
    ) / len(faces)
    rng = np.random.default_rng(0)
    for batch in (1, 2, 4, 8):
        crops = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        ms = ms_per_call(lambda c=crops: regressor.predict(c), 20)
        out[f"age_batch{batch}_ms"] = ms
        out[f"age_batch{batch}_faces_per_s"] = batch / ms * 1000
    tracker = FaceTracker(TrackerConfig())
    clock = iter(range(0, 10**9, 17))
    out["track_ms"] = ms_per_call(lambda: tracker.update(faces, next(clock)), 200)
    decisions = np.ones(len(faces), np.int8)
    aged = faces.with_ages(np.full(len(faces), 16.0))
    out["draw_ms"] = ms_per_call(lambda: draw(frames[0], aged, decisions, 18, 6.0, 30.0), 50)  # in place
    with tempfile.TemporaryDirectory() as tmp:
        writer = cv2.VideoWriter(str(Path(tmp) / "x.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 60, (1280, 720))
        out["encode_720p_ms"] = ms_per_call(lambda: writer.write(frames[0]), 60)
        writer.release()
    out["age_model_input_px"] = size
    return out


def end_to_end(clip: Path, model: Path, threshold_age: float, config: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "s.json"
        command = [sys.executable, "-m", "edge_app", "replay", str(clip), "--model", str(model),
                   "--output", str(Path(tmp) / "a.mp4"), "--summary", str(summary),
                   "--threshold-age", str(threshold_age), *(["--config", str(config)] if config else [])]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall_s = time.perf_counter() - started
        result = json.loads(summary.read_text())
    return {
        "frames": result["frames"],
        "detections": result["detections"],
        "video_fps": result["video_fps"],
        "processing_fps": result["processing_fps"],
        "realtime_factor": result["processing_fps"] / result["video_fps"],
        "wall_s_including_startup": wall_s,
        "peak_rss_mb": result["peak_rss_mb"],  # the app's own VmHWM
        "alerts": result["alerts"],
        "first_alert_after_track_start_s": result["first_alert_after_track_start_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_AGE_MODEL)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--config", type=Path, action="append",
                        help="an agecheck config for the end-to-end replay; repeat it to compare configs, "
                        "run in turn (the first one's [detector] settings are timed in the stage table too)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="end-to-end runs per config, interleaved (the host's run-to-run spread is large)")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: the measurements, the printed and written tables."""
    configs = args.config or [None]
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_720p_clip(Path(tmp) / "one_face_720p60.mp4", args.seconds)
        detector = load_config(configs[0]).detector if configs[0] else DetectorConfig()
        stages = stage_timings(clip, args.model, detector)
        # threshold 120: every customer is flagged, so the first-alert latency is measured.
        runs = {str(c): [] for c in configs}
        for _ in range(args.repeats):
            for config in configs:
                runs[str(config)].append(end_to_end(clip, args.model, threshold_age=120, config=config))
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}; model: {args.model.name} ({stages['age_model_input_px']} px)\n")
    print(f"test-time views per face: {stages['test_time_views']} (crop and age rows: all of them)\n")
    print("| stage | ms |\n| --- | ---: |")
    for key in ("decode_720p_ms", "bgr_to_rgb_ms", "detect_ms", "crop_ms_per_face", "quality_ms_per_face",
                "age_batch1_ms", "age_ms_per_face",
                "track_ms", "draw_ms", "encode_720p_ms"):
        print(f"| {key} | {stages[key]:.2f} |")
    print("\n| age batch | ms per invoke | faces/s |\n| ---: | ---: | ---: |")
    for batch in (1, 2, 4, 8):
        print(f"| {batch} | {stages[f'age_batch{batch}_ms']:.2f} | {stages[f'age_batch{batch}_faces_per_s']:.0f} |")
    first = runs[str(configs[0])][0]
    print(f"\nEnd to end, 720p {first['video_fps']:.0f} fps one-face clip, {first['frames']} frames, writing the "
          f"annotated video, {args.repeats} run(s) per config in turn:\n")
    print("| config | BlazeFace ran on | fps, median (range) | real time | peak RSS MB | first alert s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for config, results in runs.items():
        fps = [r["processing_fps"] for r in results]
        print(f"| {Path(config).name if config != 'None' else 'defaults'} | "
              f"{results[0]['detections']}/{results[0]['frames']} frames | "
              f"{np.median(fps):.1f} ({min(fps):.1f}-{max(fps):.1f}) | "
              f"{np.median(fps) / results[0]['video_fps']:.2f}x | {max(r['peak_rss_mb'] for r in results):.0f} | "
              f"{results[0]['first_alert_after_track_start_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "stages": stages, "end_to_end": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
