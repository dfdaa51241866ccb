"""systemd integration: sd_notify readiness, status, watchdog and stopping (standard library only)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Notifier:
    """Talks to systemd over ``$NOTIFY_SOCKET``; does nothing when that is unset.

    ``WATCHDOG=1`` is sent from `frame_done`, so it only goes out while the frame loop really
    makes progress: a hung loop stops the pings and systemd restarts the service. While a
    lost camera is being reopened, `waiting` pings too, since that wait is bounded by
    ``give_up_after_s``.
    """

    def __init__(self, environ: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None
        watchdog_usec = int(environ.get("WATCHDOG_USEC", "0") or 0)
        self.watchdog_interval_s = watchdog_usec / 2e6 if watchdog_usec > 0 else None
        self._clock = clock
        self._last_watchdog = -float("inf")
        self._last_status = -float("inf")
        self.ready_sent = False

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening."""
        return self._socket is not None

    def send(self, message: str) -> None:
        """One datagram; errors are logged, never raised (the app must run without systemd)."""
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            log.warning("sd_notify %r failed: %s", message.split("\n")[0], error)

    def ready(self) -> None:
        """Camera gives frames and models are loaded."""
        if not self.ready_sent:
            self.send("READY=1")
            self.ready_sent = True

    def reloading(self) -> None:
        """The config is being reloaded (SIGHUP); `ready` follows when frames flow again."""
        self.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        self.ready_sent = False

    def _watchdog_due(self) -> bool:
        return self.watchdog_interval_s is not None and self._clock() - self._last_watchdog >= self.watchdog_interval_s

    def frame_done(self, status: str, status_every_s: float = 5.0) -> None:
        """Call after each processed frame: readiness, watchdog, and a STATUS line now and then."""
        self.ready()
        if self._watchdog_due():
            self.send("WATCHDOG=1")
            self._last_watchdog = self._clock()
        if self._clock() - self._last_status >= status_every_s:
            self.send(f"STATUS={status}")
            self._last_status = self._clock()

    def waiting(self, status: str) -> None:
        """Call while reopening a lost camera: keeps the watchdog fed and says why."""
        if self._watchdog_due():
            self.send("WATCHDOG=1")
            self._last_watchdog = self._clock()
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Shutting down."""
        self.send("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def run_service(load_config: Callable[[], object], events_path=None, metrics_port: int | None = None) -> None:
    """`agecheck run`: the pipeline under systemd's eye, until SIGTERM/SIGINT.

    - SIGTERM/SIGINT finish the current frame, flush events, release the camera; exit 0.
    - SIGHUP re-reads the config; a bad one is refused with a log line and the old one kept.
    - sd_notify READY/STATUS/WATCHDOG/STOPPING when ``$NOTIFY_SOCKET`` is set.
    - Prometheus metrics on 127.0.0.1 when ``metrics_port`` is given.

    Args:
        load_config: builds the `AppConfig` (file + flags); called at start and on SIGHUP.
        events_path: JSON-lines events file (rotated by size), or None.
        metrics_port: port for the metrics endpoint, or None for none.
    """
    import signal
    import threading
    from pathlib import Path

    from edge_app.conditions import CONDITIONS
    from edge_app.errors import AgecheckError
    from edge_app.pipeline import Hooks, Outputs
    from edge_app.pipeline import run as run_pipeline

    config = load_config()
    stop, hangup = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hangup.set())
    notifier = Notifier()
    metrics = None
    if metrics_port is not None:
        from edge_app.metrics import Metrics

        metrics = Metrics(metrics_port)
        log.info("metrics on http://127.0.0.1:%d/metrics", metrics.port)
    pending: list = []

    def should_reload() -> bool:
        if not hangup.is_set():
            return False
        hangup.clear()
        try:
            pending.append(load_config())
        except AgecheckError as error:
            log.error("config reload refused, keeping the running config: %s", error)
            return False
        log.info("config reloaded; restarting the pipeline")
        notifier.reloading()
        return True

    reconnects_seen = [0]

    def on_frame(summary, stats) -> None:
        status = f"{stats.recent_fps:.1f} fps, {stats.faces} faces in view, {summary.tracks} customers, " \
                 f"{summary.alerts} alerts"
        if stats.notice:
            status += f", {stats.notice}"
        if metrics is not None:  # before the STATUS line: a scrape after it sees this frame
            metrics.frames.inc()
            metrics.faces.inc(stats.faces)
            metrics.alerts.inc(stats.new_alerts)
            metrics.poor_light.labels("dark").inc(stats.too_dark)
            metrics.poor_light.labels("bright").inc(stats.too_bright)
            for reason, count in stats.refused.items():
                metrics.refused.labels(reason).inc(count)
            metrics.reconnects.inc(summary.camera_reconnects - reconnects_seen[0])
            reconnects_seen[0] = summary.camera_reconnects
            metrics.fps.set(stats.recent_fps)
            for condition in CONDITIONS:
                metrics.condition.labels(condition).set(condition in stats.conditions)
            metrics.frame_latency.observe(stats.frame_seconds)
            if stats.estimates:
                metrics.age_latency.observe(stats.age_seconds)
        notifier.frame_done(status)

    hooks = Hooks(
        on_frame=on_frame,
        on_camera_wait=lambda: notifier.waiting("camera lost; reopening"),
        should_stop=stop.is_set,
        should_reload=should_reload,
    )
    outputs = Outputs(events=Path(events_path) if events_path else None)
    try:
        while True:
            reconnects_seen[0] = 0
            summary = run_pipeline(config, outputs, hooks=hooks)
            if not summary.reload_requested or stop.is_set():
                break
            config = pending.pop()
    finally:
        notifier.stopping()
        notifier.close()
        if metrics is not None:
            metrics.close()
