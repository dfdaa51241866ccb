"""Optional Prometheus metrics on localhost (``pip install 'agecheck[metrics]'``)."""

from __future__ import annotations

from edge_app.conditions import CONDITIONS
from edge_app.errors import AgecheckError
from edge_app.faces import REFUSALS


class Metrics:
    """Counters, gauges and histograms in a registry of their own, served on ``host:port``.

    Args:
        port: TCP port; 0 picks a free one (see ``port`` after start).
        host: bind address; loopback by default, so only the kiosk itself can scrape it.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
        except ImportError:
            raise AgecheckError("--metrics-port needs prometheus-client: pip install 'agecheck[metrics]'") from None
        self.registry = CollectorRegistry()
        self.frames = Counter("agecheck_frames", "Frames processed", registry=self.registry)
        self.faces = Counter("agecheck_faces", "Face detections, summed over frames", registry=self.registry)
        self.alerts = Counter("agecheck_alerts", "Check-ID alerts raised", registry=self.registry)
        self.reconnects = Counter("agecheck_camera_reconnects", "Camera reopened after a failure",
                                  registry=self.registry)
        self.poor_light = Counter(
            "agecheck_age_estimates_poor_light", "Age estimates of faces too dark or too bright for the model's "
            "usual error (edge_app.quality.LightMeter)", ["light"], registry=self.registry)
        for light in ("dark", "bright"):
            self.poor_light.labels(light)
        self.refused = Counter(
            "agecheck_faces_refused", "Face detections the quality gate refused, by reason (edge_app.quality)",
            ["reason"], registry=self.registry)
        for reason in REFUSALS:
            self.refused.labels(reason)
        self.condition = Gauge(
            "agecheck_till_condition", "1 while a condition of the till is on, as the events' condition_began and "
            "condition_ended say (edge_app.conditions)", ["condition"], registry=self.registry)
        for condition in CONDITIONS:
            self.condition.labels(condition)
        self.fps = Gauge("agecheck_fps", "Frames processed per second, over the last 10 s", registry=self.registry)
        self.age_latency = Histogram(
            "agecheck_age_inference_seconds", "Age model time per batched inference call", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.frame_latency = Histogram(
            "agecheck_frame_seconds", "Time from frame read to decision", registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            raise AgecheckError(f"metrics endpoint could not listen on {host}:{port}: {error}") from None
        self.port = self._server.server_port

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
