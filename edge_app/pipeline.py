"""The frame loop: capture -> detect -> track -> crop -> age -> policy -> overlay -> outputs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_app import quality
from edge_app.age_model import AgeRegressor
from edge_app.alerts import EventSink, JsonlSink, LogSink, event_record
from edge_app.capture import VideoSource
from edge_app.conditions import CONDITIONS, FACES_REFUSED, POOR_LIGHT, ConditionEvent, ConditionLog
from edge_app.config import AppConfig
from edge_app.detect import FaceDetector
from edge_app.errors import AgecheckError
from edge_app.faces import REFUSALS
from edge_app.model_card import tradeoff_summary
from edge_app.overlay import draw
from edge_app.policy import ALERT, TRACK_END, TRACK_START, AgePolicy, Event
from edge_app.rate import RecentRate
from edge_app.track import FaceTracker

log = logging.getLogger(__name__)
WINDOW = "agecheck"


@dataclass(frozen=True)
class Outputs:
    """Files a run writes; ``None`` writes nothing of that kind (no images unless asked)."""

    video: Path | None = None
    events: Path | None = None
    summary: Path | None = None


@dataclass(frozen=True)
class FrameStats:
    """What one frame cost and found (for metrics and status lines)."""

    faces: int
    estimates: int
    new_alerts: int
    refused: dict[str, int]  # faces the quality gate refused, per reason (`quality.refusal_counts`)
    too_dark: int  # estimates of faces in poor light (`quality.LightMeter`)
    too_bright: int
    notice: str | None  # `quality.LightMeter`'s and `quality.RefusalMeter`'s notices, when either speaks
    conditions: frozenset[str]  # the till's conditions on now (`conditions.ConditionLog.active`)
    age_seconds: float
    frame_seconds: float
    recent_fps: float


@dataclass
class Hooks:
    """How a caller follows and steers a run; every hook is optional.

    Attributes:
        on_frame: after each frame, with the running summary and the frame's stats.
        on_estimates: after each frame's age estimates, with the tracks they are of, the
            estimates (years, one per track, before any aggregation) and the frame's time in
            ms: how a track's estimates would aggregate under other settings
            (`bench/aggregation.py`).
        on_camera_wait: while a lost camera is being reopened (keep a watchdog fed).
        should_stop: polled once per frame; True finishes the frame and ends the run.
        should_reload: polled once per frame; True ends the run with ``reload_requested``
            set, so the caller can start again with a new config.
    """

    on_frame: Callable[[Summary, FrameStats], None] | None = None
    on_estimates: Callable[[np.ndarray, np.ndarray, int], None] | None = None
    on_camera_wait: Callable[[], None] | None = None
    should_stop: Callable[[], bool] = lambda: False
    should_reload: Callable[[], bool] = lambda: False


@dataclass
class Summary:
    """What a run did."""

    source: str
    frames: int = 0
    faces: int = 0
    detections: int = 0  # frames BlazeFace ran on ([detector] min_interval_ms skips the others)
    tracks: int = 0
    alerts: int = 0
    age_estimates: int = 0
    faces_refused: int = 0  # face-frames the quality gate refused (too small, blurred or turned)
    faces_refused_by_reason: dict = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))
    age_estimates_too_dark: int = 0  # estimates of faces in light where the model errs more (`quality.LightMeter`)
    age_estimates_too_bright: int = 0
    # how long each of the till's conditions (`conditions.ConditionLog`) was on, in seconds of the source
    condition_seconds: dict = field(default_factory=lambda: dict.fromkeys(CONDITIONS, 0.0))
    video_fps: float = 0.0
    processing_fps: float = 0.0
    duration_s: float = 0.0
    threshold_age: float = 18
    margin_years: float = 0.0
    model: str = ""
    camera_reconnects: int = 0
    peak_rss_mb: float = 0.0
    reload_requested: bool = False
    first_alert_after_track_start_s: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def display_available() -> bool:
    """A screen to draw on (X11 or Wayland)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _timed(function, *args):
    """``(function(*args), seconds it took)``."""
    started = time.monotonic()
    result = function(*args)
    return result, time.monotonic() - started


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` would also count the
    parent's memory from before ``exec`` when the app is started by a larger process.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_window(shape: tuple[int, ...], min_width: int = 960) -> None:
    """Open the cashier's window: resizable, at least ``min_width`` wide, and without a toolbar.

    Qt's toolbar has a save button, and no customer's frame may be saved by accident.
    """
    cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
    height, width = shape[:2]
    scale = max(1.0, min_width / width)
    cv2.resizeWindow(WINDOW, int(width * scale), int(height * scale))


class VideoWriter:
    """Annotated frames to a video file, encoded on a background thread.

    Encoding a 720p frame takes milliseconds that the frame loop need not wait for:
    OpenCV releases the GIL while encoding, so the second core does it. The queue is
    bounded, so a slow disk slows the loop instead of filling memory. Every frame is written.
    """

    def __init__(self, path: Path, fps: float, queue_frames: int = 8) -> None:
        if path.is_dir():
            raise AgecheckError(f"--output {path} is a directory; expected a video file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps = path, fps
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open(self, image) -> cv2.VideoWriter:
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".m4v") else "MJPG"))
        writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (image.shape[1], image.shape[0]))
        if not writer.isOpened():
            raise AgecheckError(f"could not write video {self.path}: use a .mp4 or .avi name")
        return writer

    def _encode(self, writer: cv2.VideoWriter) -> None:
        try:
            while (image := self._queue.get()) is not None:
                writer.write(image)
        except BaseException as error:  # noqa: BLE001  # handed to the loop thread at close
            self._error = error
        finally:
            writer.release()

    def write(self, image) -> None:
        """Queue one BGR frame (the first one fixes the video's size)."""
        if self._thread is None:
            writer = self._open(image)  # open here so a bad path fails on the loop thread
            self._thread = threading.Thread(target=self._encode, args=(writer,), name="video-writer", daemon=True)
            self._thread.start()
        if self._error is not None:
            raise self._error
        self._queue.put(image)

    def close(self) -> None:
        """Write the queued frames and close the file."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            if self._error is not None:
                raise self._error


class EventRouter:
    """Sends each event to every sink and keeps the summary's counts of tracks and alerts."""

    def __init__(self, sinks: list[EventSink], summary: Summary, live: bool) -> None:
        self.sinks, self.summary, self.live = sinks, summary, live
        self._track_start_ms: dict[int, int] = {}

    def send(self, events: Sequence[Event | ConditionEvent]) -> int:
        """Deliver events; returns how many were alerts."""
        alerts = 0
        for event in events:
            record = event_record(event, self.summary.threshold_age, self.summary.margin_years, self.live)
            for sink in self.sinks:
                sink.send(record)
            if event.type == TRACK_START:
                self.summary.tracks += 1
                self._track_start_ms[event.track_id] = event.timestamp_ms
            elif event.type == ALERT:
                alerts += 1
                start_ms = self._track_start_ms.get(event.track_id, event.timestamp_ms)
                self.summary.first_alert_after_track_start_s.append(round((event.timestamp_ms - start_ms) / 1000, 3))
            elif event.type == TRACK_END:
                self._track_start_ms.pop(event.track_id, None)
        self.summary.alerts += alerts
        return alerts


QUIT, ACKNOWLEDGE = "quit", "acknowledge"
KEYS = {ord("q"): QUIT, 27: QUIT, ord(" "): ACKNOWLEDGE, ord("c"): ACKNOWLEDGE}


class Window:
    """The cashier's window, opened on the first frame.

    `show` returns what the cashier asked for: `QUIT` (q or Esc), `ACKNOWLEDGE` (space or
    c: "I have checked the ID"), or ``None``.
    """

    def __init__(self) -> None:
        self._open = False

    def show(self, image) -> str | None:  # noqa: D102
        if not self._open:
            open_window(image.shape)
            self._open = True
        cv2.imshow(WINDOW, image)
        return KEYS.get(cv2.waitKey(1) & 0xFF)

    def close(self) -> None:  # noqa: D102
        if self._open:
            cv2.destroyWindow(WINDOW)


def run(
    config: AppConfig,
    outputs: Outputs = Outputs(),
    sinks: list[EventSink] | None = None,
    hooks: Hooks | None = None,
) -> Summary:
    """Run the pipeline over ``config.source`` until it ends, or a hook stops it.

    Args:
        config: every stage's settings.
        outputs: annotated video, events and summary files to write.
        sinks: extra event sinks (the log sink is always on).
        hooks: progress, watchdog, stop and reload callbacks.

    Returns:
        The run's `Summary` (also written to ``outputs.summary``).

    Raises:
        AgecheckError: for a bad source, model, card or output path (before any frame).
    """
    hooks = hooks or Hooks()
    with contextlib.ExitStack() as stack:
        # The source first: a wrong path is the commonest mistake and the cheapest to find.
        source = stack.enter_context(VideoSource(config.source, on_wait=hooks.on_camera_wait))
        age_model = AgeRegressor(config.age_model)
        detector = stack.enter_context(FaceDetector(config.detector))
        margin_years = config.policy.margin_years
        if margin_years is None:
            margin_years = age_model.card.mae_years
        tracker = FaceTracker(config.tracker)
        policy = AgePolicy(config.policy, margin_years, leave_after_ms=config.tracker.max_missing_ms)
        threshold_age = config.policy.threshold_age
        show = config.output.display and display_available()
        if config.output.display and not show:
            log.info("no display available: running headless")
        window = stack.enter_context(contextlib.closing(Window())) if show else None
        video = None
        if outputs.video:
            video = stack.enter_context(contextlib.closing(VideoWriter(outputs.video, source.fps)))
        all_sinks: list[EventSink] = [LogSink(), *(sinks or [])]
        if outputs.events:
            all_sinks.append(stack.enter_context(contextlib.closing(JsonlSink(
                outputs.events, config.output.events_max_bytes, config.output.events_backups))))
        summary = Summary(source=config.source.source, video_fps=source.fps, threshold_age=threshold_age,
                          margin_years=round(margin_years, 2), model=Path(config.age_model.model_path).name)
        events = EventRouter(all_sinks, summary, source.live)
        started, last_ms, recent = time.monotonic(), 0, RecentRate()
        light, refusals, conditions = quality.LightMeter(), quality.RefusalMeter(), ConditionLog()
        log.info("running on %s: threshold %g + margin %.2f years", config.source.source, threshold_age, margin_years)
        tradeoff = tradeoff_summary(age_model.card, threshold_age, margin_years)
        if tradeoff:
            log.info("%s", tradeoff)
        try:
            for frame in source.frames():
                frame_started = time.monotonic()
                faces = detector.detect(frame.rgb, timestamp_ms=frame.timestamp_ms)
                faces = tracker.update(faces, frame.timestamp_ms)
                due = tracker.due_for_estimate(faces, frame.timestamp_ms)
                faces, due, views = quality.gate(
                    frame.rgb, faces, due, age_model.input_size, age_model.card.crop, config.quality
                )
                ages, age_seconds = _timed(age_model.predict_views, views)
                if hooks.on_estimates is not None:
                    hooks.on_estimates(faces.tracker_id[due], ages, frame.timestamp_ms)
                faces = tracker.add_estimates(faces, due, ages, frame.timestamp_ms)
                new_alerts = events.send(policy.update(faces, frame.timestamp_ms))

                last_ms = frame.timestamp_ms
                summary.frames += 1
                summary.detections = detector.detections
                summary.faces += len(faces)
                summary.age_estimates += len(views)
                refused = refusals.add(faces)
                summary.faces_refused += sum(refused.values())
                for reason, count in refused.items():
                    summary.faces_refused_by_reason[reason] += count
                dark, bright = light.add(views[:, 0])
                notices = {FACES_REFUSED: refusals.notice(), POOR_LIGHT: light.notice()}
                events.send(conditions.update(notices, frame.timestamp_ms))
                notice = "; ".join(filter(None, notices.values())) or None
                summary.age_estimates_too_dark += dark
                summary.age_estimates_too_bright += bright
                summary.processing_fps = summary.frames / max(time.monotonic() - started, 1e-9)
                summary.camera_reconnects = source.reconnects
                recent_fps = recent.tick()
                if video is not None or window is not None:
                    annotated = draw(frame.image, faces, policy.decisions(faces), threshold_age, margin_years,
                                     fps=recent_fps, notice=notice)
                    if video is not None:
                        video.write(annotated)
                    command = window.show(annotated) if window is not None else None
                    if command == QUIT:
                        break
                    if command == ACKNOWLEDGE:
                        events.send(policy.acknowledge(frame.timestamp_ms))
                if hooks.on_frame is not None:
                    hooks.on_frame(summary, FrameStats(len(faces), len(views), new_alerts, refused, dark, bright,
                                                       notice, conditions.active, age_seconds,
                                                       time.monotonic() - frame_started, recent_fps))
                if hooks.should_stop():
                    break
                if hooks.should_reload():
                    summary.reload_requested = True
                    break
        finally:
            events.send([*policy.finish(last_ms), *conditions.finish(last_ms)])
            summary.condition_seconds = dict(conditions.seconds)
    # After the with block: the video writer has flushed, and that time counts too.
    summary.duration_s = round(time.monotonic() - started, 2)
    summary.processing_fps = round(summary.frames / max(summary.duration_s, 1e-9), 2)
    summary.peak_rss_mb = round(peak_rss_mb(), 1)
    if outputs.summary:
        outputs.summary.parent.mkdir(parents=True, exist_ok=True)
        outputs.summary.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    log.info("done: %d frames, %d faces, %d tracks, %d alerts, %.1f fps",
             summary.frames, summary.faces, summary.tracks, summary.alerts, summary.processing_fps)
    warnings = (quality.refusal_warning(summary.faces, summary.faces_refused_by_reason, config.quality),
                quality.light_warning(summary.age_estimates, summary.age_estimates_too_dark,
                                      summary.age_estimates_too_bright))
    for warning in filter(None, warnings):
        log.warning("%s", warning)
    return summary
