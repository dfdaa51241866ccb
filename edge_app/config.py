"""One frozen, validated config dataclass per stage, and `load_config` for TOML files.

Every check raises ``ValueError`` naming the key, its value and what is allowed, so a typo
in ``/etc/agecheck/config.toml`` is one clear line at start-up, never a silent default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edge_app.errors import AgecheckError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("AGECHECK_MODELS_DIR", PROJECT_ROOT / "models"))
DEFAULT_DETECTOR_MODEL = MODELS_DIR / "face_detection_full_range_sparse.tflite"
DEFAULT_AGE_MODEL = MODELS_DIR / "age_resnet50_int8.tflite"
DEFAULT_SAMPLE_CLIP = PROJECT_ROOT / "samples" / "face-demographics-walking-and-pause.gif"


class ConfigError(AgecheckError, ValueError):
    """A config value outside what is allowed."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: expected {allowed}")


def _number(key: str, value: Any, lo: float, hi: float, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        is_number = is_number and float(value).is_integer()
    _require(
        is_number and math.isfinite(value) and lo <= value <= hi, key, value, f"{kind} in [{lo}, {hi}]"
    )


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from.

    Attributes:
        source: camera index (``"0"``), device path (``/dev/video2``), video file, or URL.
        loop: restart a file source at its end (kiosk demos and tests).
        reopen_backoff_ms: first wait before reopening a failed camera; doubles up to
            ``reopen_backoff_max_ms``.
        reopen_backoff_max_ms: longest wait between reopen attempts.
        give_up_after_s: a live source that gives no frame for this long ends the run with
            a non-zero exit, so that systemd restarts the service.
    """

    source: str = "0"
    loop: bool = False
    reopen_backoff_ms: int = 500
    reopen_backoff_max_ms: int = 10_000
    give_up_after_s: float = 300.0

    def __post_init__(self) -> None:
        _require(isinstance(self.source, str) and self.source != "", "source.source",
                 self.source, "a camera index, device path, file or URL")
        _require(isinstance(self.loop, bool), "source.loop", self.loop, "true or false")
        _number("source.reopen_backoff_ms", self.reopen_backoff_ms, 1, 600_000, integer=True)
        _number("source.reopen_backoff_max_ms", self.reopen_backoff_max_ms,
                self.reopen_backoff_ms, 600_000, integer=True)
        _number("source.give_up_after_s", self.give_up_after_s, 0, 86_400)


@dataclass(frozen=True)
class DetectorConfig:
    """MediaPipe BlazeFace settings.

    Attributes:
        model_path: BlazeFace ``.tflite``. The full-range model finds faces 2-5 m away that
            the short-range model misses (measured in ``bench/detector_choice.py``).
        min_detection_confidence: raising it drops false faces (posters, patterns) but
            risks missing small or turned faces, which then get no age check. At 0.6 four in
            five of the till bench's false faces went and 1.5% of its customers were never
            seen (`docs/PERFORMANCE.md`, "False faces and `min_detection_confidence`").
        min_suppression_threshold: IoU above which overlapping boxes are merged.
        min_interval_ms: run BlazeFace at most once per this much video time; a frame in
            between reuses the last frame's faces (a customer moves a few pixels in 1/60 s).
            25 detects every frame of a 30 fps camera and every other frame at 50-60 fps,
            where detection was the loop's largest stage; 0 detects every frame.
        max_input_side_px: a frame whose longer side exceeds this is shrunk by the smallest
            whole factor k that brings it within it, each k x k block of pixels averaged
            (720p: k = 3, 426 x 240), before BlazeFace; boxes and keypoints come back in the
            frame's pixels. BlazeFace looks at 192 px whatever it is given, and MediaPipe's own
            resize samples a 720p frame without averaging, so camera noise reaches it intact:
            under sensor-like noise (sigma 25) it found a face in 80% of till frames, 97% after
            the shrink (`docs/PERFORMANCE.md`, "Detector input"). 0 passes frames as they are.
    """

    model_path: str = str(DEFAULT_DETECTOR_MODEL)
    min_detection_confidence: float = 0.5
    min_suppression_threshold: float = 0.3
    min_interval_ms: float = 25.0
    max_input_side_px: int = 480

    def __post_init__(self) -> None:
        _require(isinstance(self.model_path, str) and self.model_path != "",
                 "detector.model_path", self.model_path, "a path to a .tflite file")
        _number("detector.min_detection_confidence", self.min_detection_confidence, 0.0, 1.0)
        _number("detector.min_suppression_threshold", self.min_suppression_threshold, 0.0, 1.0)
        _number("detector.min_interval_ms", self.min_interval_ms, 0.0, 1000.0)
        _require(isinstance(self.max_input_side_px, int) and not isinstance(self.max_input_side_px, bool)
                 and (self.max_input_side_px == 0 or 128 <= self.max_input_side_px <= 8192),
                 "detector.max_input_side_px", self.max_input_side_px, "0 (off) or an integer in [128, 8192]")


@dataclass(frozen=True)
class AgeModelConfig:
    """Age regressor settings.

    Attributes:
        model_path: int8 ``.tflite``; its model card is the ``.json`` beside it.
        num_threads: interpreter threads. More threads lower latency but take cores from
            capture and detection.
        max_batch: most crops in one ``invoke``; more faces are split into several batches.
    """

    model_path: str = str(DEFAULT_AGE_MODEL)
    num_threads: int = 2
    max_batch: int = 8

    def __post_init__(self) -> None:
        _require(isinstance(self.model_path, str) and self.model_path != "",
                 "age_model.model_path", self.model_path, "a path to a .tflite file")
        _number("age_model.num_threads", self.num_threads, 1, 64, integer=True)
        _number("age_model.max_batch", self.max_batch, 1, 64, integer=True)


@dataclass(frozen=True)
class TrackerConfig:
    """Per-customer tracking.

    Attributes:
        iou_threshold: least IoU between a track's last box and a detection to match them.
            Lower values follow fast movers but risk swapping two close customers.
        max_missing_ms: a track not matched for this long is forgotten (its state evicted).
        estimate_interval_ms: a track's age is re-estimated at most this often once it has
            ``min_estimates``; before that, every frame, so the first decision is quick.
        window: number of recent estimates whose median is the track's age.
        min_estimates: estimates a track needs before its age is reported.
    """

    iou_threshold: float = 0.3
    max_missing_ms: int = 1000
    estimate_interval_ms: int = 250
    window: int = 15
    min_estimates: int = 3

    def __post_init__(self) -> None:
        _number("tracker.iou_threshold", self.iou_threshold, 0.0, 1.0)
        _number("tracker.max_missing_ms", self.max_missing_ms, 0, 600_000, integer=True)
        _number("tracker.estimate_interval_ms", self.estimate_interval_ms, 0, 60_000, integer=True)
        _number("tracker.window", self.window, 1, 1000, integer=True)
        _number("tracker.min_estimates", self.min_estimates, 1, self.window, integer=True)


@dataclass(frozen=True)
class QualityConfig:
    """Which faces are good enough to estimate (`edge_app.quality`); 0 turns a check off.

    The defaults come from a sweep over validation photos made smaller and blurrier, and
    their natural turn (``bench/quality_sweep.py``, ``docs/PERFORMANCE.md``): each is where
    the model's error grows by more than a year over the clean photos'.

    Attributes:
        min_eye_distance_px: pixels between the eyes in the frame.
        min_smoothed_sharpness: variance of the Laplacian of the grey face crop at 64 px
            (`edge_app.quality.SHARPNESS_SIDE_PX`, whatever the model's input side), smoothed
            first so that camera noise does not count as detail
            (`edge_app.quality.SHARPNESS_SMOOTHING_PX`).
        max_turn: how far the nose sits off the eyes' midpoint, in eye distances
            (0 frontal; about 0.5 in profile).
    """

    min_eye_distance_px: float = 10.0
    min_smoothed_sharpness: float = 4.0
    max_turn: float = 0.45

    def __post_init__(self) -> None:
        _number("quality.min_eye_distance_px", self.min_eye_distance_px, 0, 1000)
        _number("quality.min_smoothed_sharpness", self.min_smoothed_sharpness, 0, 100_000)
        _number("quality.max_turn", self.max_turn, 0, 10)


@dataclass(frozen=True)
class PolicyConfig:
    """When to tell the cashier to check ID.

    Attributes:
        threshold_age: legal age for alcohol (18; 21 where the law says so).
        margin_years: added to ``threshold_age``; ``None`` takes the model card's ``mae``.
            A larger margin flags more minors but also more adults needlessly; the card's
            trade-off table (``agecheck card``) shows it, measured on validation data.
        unclear_after_s: a customer in view this long without an age (too few estimates)
            is flagged with reason ``face_unclear``: a face the app cannot judge is asked
            for ID, never waved through. 0 turns this off.
        max_spread_years: a customer whose estimates' interquartile range exceeds this is
            flagged with reason ``uncertain``: the model disagrees with itself. 0 turns
            this off.

    A flag is sticky: it stays until the customer leaves or the cashier acknowledges it.
    """

    threshold_age: float = 18
    margin_years: float | None = None
    unclear_after_s: float = 2.0
    max_spread_years: float = 12.0

    def __post_init__(self) -> None:
        _number("policy.threshold_age", self.threshold_age, 1, 120)
        if self.margin_years is not None:
            _number("policy.margin_years", self.margin_years, 0, 50)
        _number("policy.unclear_after_s", self.unclear_after_s, 0, 600)
        _number("policy.max_spread_years", self.max_spread_years, 0, 100)


@dataclass(frozen=True)
class OutputConfig:
    """Display and files.

    Attributes:
        display: show the cashier's window (ignored with a log line when no screen exists).
        events_max_bytes: rotate the events file past this size (0: never rotate).
        events_backups: rotated events files to keep.
    """

    display: bool = False
    events_max_bytes: int = 10_000_000
    events_backups: int = 3

    def __post_init__(self) -> None:
        _require(isinstance(self.display, bool), "output.display", self.display, "true or false")
        _number("output.events_max_bytes", self.events_max_bytes, 0, 10**12, integer=True)
        _number("output.events_backups", self.events_backups, 0, 100, integer=True)


@dataclass(frozen=True)
class AppConfig:
    """Every stage's settings."""

    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    age_model: AgeModelConfig = field(default_factory=AgeModelConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def override(self, section: str, **values: Any) -> AppConfig:
        """A copy with the given keys of one section replaced (``None`` values are skipped)."""
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return self
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **values)})


RETIRED_KEYS = {
    "quality.min_sharpness": (
        "it measured the bare Laplacian, which camera noise fools (docs/PERFORMANCE.md, "
        "\"Camera noise and the blur test\"); set quality.min_smoothed_sharpness "
        f"instead, on its own scale (default {QualityConfig().min_smoothed_sharpness:g})"
    ),
}
"""Keys a config may still hold from an older release, and what replaced them."""


def config_from_dict(data: dict[str, Any]) -> AppConfig:
    """Build an `AppConfig` from nested dicts, rejecting unknown sections and keys.

    Raises:
        ConfigError: for an unknown section or key, or a value outside its range.
    """
    sections = {f.name: f.type for f in dataclasses.fields(AppConfig)}
    built = {}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}]: expected one of {sorted(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{section}] must be a table, got {values!r}")
        cls = type(getattr(AppConfig(), section))
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if (name := f"{section}.{key}") in RETIRED_KEYS:
                raise ConfigError(f"config key {name} is retired: {RETIRED_KEYS[name]}")
            if key not in allowed:
                raise ConfigError(
                    f"unknown config key {section}.{key}: expected one of {sorted(allowed)}"
                )
        built[section] = cls(**values)
    return AppConfig(**built)


def load_config(path: str | Path | None) -> AppConfig:
    """Read a TOML config file; ``None`` gives the defaults.

    Raises:
        ConfigError: if the file is missing, is not TOML, or holds a bad key or value.
    """
    if path is None:
        return AppConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    return config_from_dict(data)
