"""Shared fixtures: real frames from the bundled clip, tiny real models, tiny datasets."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest

from edge_app.capture import VideoSource
from edge_app.config import DEFAULT_SAMPLE_CLIP, SourceConfig
from edge_app.faces import Faces

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def clip_frames() -> list[np.ndarray]:
    """All 41 BGR frames of the bundled clip (three people walking towards the camera)."""
    with VideoSource(SourceConfig(source=str(DEFAULT_SAMPLE_CLIP))) as source:
        frames = [frame.image for frame in source.frames()]
    assert len(frames) == 41
    return frames


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """``frames`` (480x270 BGR, as the bundled clip's) as an MJPG file at its 12.5 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.5, (480, 270))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def glare_clip(clip_frames, tmp_path_factory) -> Path:
    """The bundled clip under a window's glare (gain 2.8, highlights clipped), as an MJPG file."""
    return write_clip(tmp_path_factory.mktemp("clips") / "glare.avi",
                      [cv2.convertScaleAbs(frame, alpha=2.8) for frame in clip_frames])


@pytest.fixture(scope="session")
def brightness_tflite(tmp_path_factory) -> Path:
    """A real int8 .tflite (+ card) whose age output is 100 x mean brightness."""
    from tests.models import brightness_model

    return brightness_model(tmp_path_factory.mktemp("models") / "bright.tflite")


def make_faces(xyxy, confidence=None, tracker_id=None, age_years=None) -> Faces:
    """Build `Faces` from plain lists (like supervision's mock_detections)."""
    xyxy = np.array(xyxy, np.float32).reshape(-1, 4)
    confidence = np.full(len(xyxy), 0.9) if confidence is None else confidence
    return Faces(xyxy=xyxy, confidence=confidence, tracker_id=tracker_id, age_years=age_years)


def face_photos(clip_frames, count: int, size: int = 120) -> list[np.ndarray]:
    """Close-up "photos" cut from the clip around its three faces, varied by frame and offset."""
    centres = [(75, 120), (226, 112), (374, 140)]  # face centres in the later frames (x, y)
    photos = []
    for i in range(count):
        frame = clip_frames[20 + (i * 7) % 21]
        cx, cy = centres[i % 3]
        cx, cy = cx + (i % 5) - 2, cy + (i % 3) - 1
        half = size // 2
        crop = frame[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half]
        photos.append(cv2.resize(crop, (size, size)))
    return photos


def write_jpeg(path: Path, bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)


@pytest.fixture(scope="session")
def datasets(tmp_path_factory, clip_frames) -> dict[str, Path]:
    """Tiny datasets in the three layouts (ages chosen so the numbers can be checked)."""
    root = tmp_path_factory.mktemp("datasets")
    photos = face_photos(clip_frames, 30)
    ages = [5 + 3 * i for i in range(30)]

    seeds = root / "seeds"
    (seeds / "final_files").mkdir(parents=True)
    rows = ["file_name,real_age"]
    for i, (photo, age) in enumerate(zip(photos, ages, strict=True)):
        write_jpeg(seeds / "final_files" / f"{i:06d}.jpg", photo)
        rows.append(f"{i:06d}.jpg,{age}")
    (seeds / "labels.csv").write_text("\n".join(rows) + "\n")

    appa = root / "appa"
    for part, (lo, hi) in {"train": (0, 18), "valid": (18, 24), "test": (24, 30)}.items():
        rows = ["file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age"]
        for i in range(lo, hi):
            write_jpeg(appa / part / f"{i:06d}.jpg", photos[i])
            rows.append(f"{i:06d}.jpg,10,{ages[i] + 1},3.0,{ages[i]}")
        (appa / f"gt_avg_{part}.csv").write_text("\n".join(rows) + "\n")

    utk = root / "utkface"
    for i, (photo, age) in enumerate(zip(photos, ages, strict=True)):
        write_jpeg(utk / f"{age}_{i % 2}_{i % 5}_2017011{i:04d}.jpg.chip.jpg", photo)
    return {"seeds": seeds, "appa-real": appa, "utkface": utk}
