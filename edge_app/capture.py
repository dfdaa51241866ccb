"""Frames from a camera, device, file or stream, with timestamps that always increase."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import SourceConfig
from edge_app.errors import AgecheckError
from edge_app.logs import native_stderr_held

log = logging.getLogger(__name__)
WAIT_SLICE_S = 0.25  # longest sleep between two on_wait calls while a camera is reopened
READ_AHEAD_FRAMES = 4  # frames a file source decodes ahead of the loop
_END = object()


@dataclass(frozen=True)
class Frame:
    """One video frame.

    Attributes:
        image: (H, W, 3) uint8 BGR, as OpenCV decodes it (drawn on, shown and written).
        rgb: the same pixels in RGB (detected and cropped); a file's reader thread converts
            it off the loop's thread.
        index: frames delivered so far, from 0 (keeps counting across loops and reopens).
        timestamp_ms: video time for files (position in the file, continuing across loops),
            monotonic wall time since start for live sources; strictly increasing.
    """

    image: np.ndarray
    rgb: np.ndarray
    index: int
    timestamp_ms: int


def is_live(source: str) -> bool:
    """Camera indices, device paths and stream URLs are live; anything else is a file."""
    return source.isdigit() or source.startswith("/dev/") or "://" in source


class _ReadAhead:
    """Runs a frame iterator on a thread, up to ``depth`` frames ahead of its consumer.

    Decoding a 720p frame takes a few milliseconds in which OpenCV releases the GIL, so the
    second core decodes the next frames while the loop detects on this one. Every frame is
    delivered, in order; an error in the reader is raised in the consumer.
    """

    def __init__(self, frames: Iterator[Frame], depth: int) -> None:
        self._frames = frames
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="video-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self._frames:
                if not self._put(frame):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001  # raised again on the consumer's thread
            self._put(error)

    def _put(self, item: object) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator[Frame]:
        while (item := self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """Stop reading and wait for the reader thread to end."""
        self._stopping.set()
        self._thread.join()


class VideoSource:
    """OpenCV capture as a context manager; ``frames()`` yields `Frame`s.

    Live sources that stop giving frames are reopened with capped exponential backoff;
    after ``give_up_after_s`` without a frame the iterator raises `AgecheckError`. Files end
    at their last readable frame (a truncated file ends early, cleanly), or loop; they are
    decoded on a reader thread, `READ_AHEAD_FRAMES` ahead of the loop.

    Args:
        config: source, loop and reconnect settings.
        sleep: waits between reopen attempts (tests pass a fake clock's).
        clock: monotonic seconds, for live timestamps and giving up.
        on_wait: called before each reopen attempt (feeds the systemd watchdog).
        open_capture: makes the capture; ``cv2.VideoCapture`` unless a test replaces the camera.
    """

    def __init__(
        self,
        config: SourceConfig,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[], None] | None = None,
        open_capture: Callable[[int | str], cv2.VideoCapture] = cv2.VideoCapture,
    ) -> None:
        self.config = config
        self._open_capture = open_capture
        self.live = is_live(config.source)
        self._sleep, self._clock, self._on_wait = sleep, clock, on_wait
        if not self.live:
            path = Path(config.source)
            if not path.exists():
                raise AgecheckError(f"video file {path} does not exist")
            if path.is_dir():
                raise AgecheckError(f"video source {path} is a directory; expected a video file")
        self._capture = self._open()
        if self._capture is None:
            kind = "camera" if self.live else "video file"
            raise AgecheckError(
                f"could not open {kind} {config.source!r}: expected a camera index, device, URL "
                "or a file OpenCV can read (mp4, avi, gif, ...)"
            )
        self._first = self._capture.read()
        if not self._first[0] and not self.live:
            raise AgecheckError(f"{config.source} holds no video frames OpenCV can decode")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < self.fps < 1000):
            self.fps = 30.0 if self.live else 25.0
        self.resolution_wh = (
            int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self.reconnects = 0
        self._read_ahead: _ReadAhead | None = None

    def _open(self, hold_native_output: bool = True) -> cv2.VideoCapture | None:
        source = self.config.source
        held = native_stderr_held() if hold_native_output else contextlib.nullcontext()
        with held:  # OpenCV's backends list every one they tried
            capture = self._open_capture(int(source) if source.isdigit() else source)
        if not capture.isOpened():
            capture.release()
            return None
        return capture

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the file ends (unless looping) or the live source gives up."""
        if self.live:
            yield from self._read_frames()
            return
        if self._read_ahead is not None:  # one reader per capture: two would race for its frames
            self._read_ahead.stop()
        self._read_ahead = _ReadAhead(self._read_frames(), READ_AHEAD_FRAMES)
        yield from self._read_ahead

    def _read_frames(self) -> Iterator[Frame]:
        index, offset_ms, last_ms = 0, 0.0, -1
        started = self._clock()
        ok, image = self._first
        while True:
            if not ok:
                if self.live:
                    ok, image = self._reconnect()
                    continue
                if not self.config.loop or index == 0:
                    return
                offset_ms = last_ms + 1000.0 / self.fps
                self._capture.release()
                # On the reader thread: holding stderr here would swallow the loop's own log
                # lines meanwhile, and a file that opened once lists no backends.
                self._capture = self._open(hold_native_output=False)
                if self._capture is None:
                    return
                ok, image = self._capture.read()
                if not ok:
                    return
            if self.live:
                timestamp_ms = int((self._clock() - started) * 1000)
            else:
                position = self._capture.get(cv2.CAP_PROP_POS_MSEC)
                timestamp_ms = int(offset_ms + position)
            timestamp_ms = max(timestamp_ms, last_ms + 1)  # detectors need strictly increasing time
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            yield Frame(image=image, rgb=rgb, index=index, timestamp_ms=timestamp_ms)
            index, last_ms = index + 1, timestamp_ms
            ok, image = self._capture.read()

    def _reconnect(self) -> tuple[bool, np.ndarray | None]:
        """Reopen a live source with capped backoff; raise after ``give_up_after_s``."""
        lost_at = self._clock()
        delay_ms = self.config.reopen_backoff_ms
        log.warning("camera %s gave no frame; reopening", self.config.source)
        while True:
            if self._clock() - lost_at > self.config.give_up_after_s:
                raise AgecheckError(
                    f"camera {self.config.source} gave no frame for {self.config.give_up_after_s:g} s; giving up"
                )
            self._wait(delay_ms / 1000)
            if self._capture is not None:
                self._capture.release()
            self._capture = self._open()
            if self._capture is not None:
                ok, image = self._capture.read()
                if ok:
                    self.reconnects += 1
                    log.info("camera %s is back after %.1f s", self.config.source, self._clock() - lost_at)
                    return ok, image
            delay_ms = min(delay_ms * 2, self.config.reopen_backoff_max_ms)

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices of at most `WAIT_SLICE_S`, calling ``on_wait`` before each.

        The service feeds systemd's watchdog from ``on_wait``; one long backoff sleep (up to
        ``reopen_backoff_max_ms``, 10 s by default) would starve a 10 s watchdog.
        """
        while seconds > 1e-9:
            if self._on_wait is not None:
                self._on_wait()
            step = min(seconds, WAIT_SLICE_S)
            self._sleep(step)
            seconds -= step

    def close(self) -> None:
        """Stop the reader thread, if any, and release the capture."""
        if self._read_ahead is not None:
            self._read_ahead.stop()
            self._read_ahead = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
