"""The kiosk service: sd_notify, signals, reload, metrics, JSON logs, camera recovery."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from edge_app.alerts import JsonlSink
from edge_app.capture import VideoSource
from edge_app.config import DEFAULT_SAMPLE_CLIP, SourceConfig
from edge_app.errors import AgecheckError
from edge_app.rate import RecentRate
from edge_app.service import Notifier


class Run:
    """`agecheck run` on the looping clip as a real subprocess, its stderr read line by line."""

    def __init__(self, model, *args, group_args=(), env=None):
        command = [sys.executable, "-m", "edge_app", *group_args, "run", "--source", str(DEFAULT_SAMPLE_CLIP),
                   "--loop", "--no-display", "--model", str(model), *args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout_s=30):
        """The first new stderr line containing ``text``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} in {timeout_s} s; last lines: {self.seen[-5:]}") from None
            if line is None:
                raise AssertionError(f"process ended before {text!r}: {self.seen[-5:]}")
            self.seen.append(line)
            if text in line:
                return line

    def stop(self, timeout_s=30):
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def receive_until(sock, predicate, timeout_s):
    messages, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if predicate(messages):
            break
    return messages


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    yield sock, path
    sock.close()


def test_run_talks_to_systemd_and_stops_cleanly(tmp_path, brightness_tflite, notify_socket):
    sock, path = notify_socket
    events = tmp_path / "events.jsonl"
    run = Run(brightness_tflite, "--events", str(events), env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
    try:
        messages = receive_until(sock, lambda m: "READY=1" in m, 30)
        assert "READY=1" in messages, messages
        started = time.monotonic()
        messages += receive_until(sock, lambda m: m.count("WATCHDOG=1") >= 5, 10)
        assert messages.count("WATCHDOG=1") >= 5 and time.monotonic() - started < 5  # about every 0.5 s
        assert any(m.startswith("STATUS=") and "fps" in m and "alerts" in m for m in messages), messages
    finally:
        code = run.stop()
    assert code == 0, run.seen[-5:]
    assert "STOPPING=1" in receive_until(sock, lambda m: "STOPPING=1" in m, 5)
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert {"track_start", "track_end"} <= {r["type"] for r in records}  # flushed and closed on SIGTERM


def metric_values(port):
    """The metrics endpoint's samples, ``{'name{labels}': value}``."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in body.splitlines() if line and line[0] != "#"}


def metrics_port(run):
    return int(run.wait_for("metrics on http://127.0.0.1:").split("127.0.0.1:")[1].split("/")[0])


def test_metrics_endpoint_is_scraped_over_loopback(brightness_tflite):
    run = Run(brightness_tflite, "--metrics-port", "0")
    try:
        port = metrics_port(run)
        run.wait_for("running on")
        time.sleep(2)
        values = metric_values(port)
    finally:
        code = run.stop()
    assert code == 0
    assert values["agecheck_frames_total"] > 5 and values["agecheck_faces_total"] > 5
    assert values["agecheck_fps"] > 0 and values["agecheck_frame_seconds_count"] == values["agecheck_frames_total"]
    assert values["agecheck_age_inference_seconds_count"] > 0 and "agecheck_camera_reconnects_total" in values
    # the clip's light is fine and its faces clear: the counters exist, at 0
    assert values['agecheck_age_estimates_poor_light_total{light="dark"}'] == 0
    assert values['agecheck_age_estimates_poor_light_total{light="bright"}'] == 0
    assert values['agecheck_faces_refused_total{reason="too_small"}'] == 0
    assert values['agecheck_till_condition{condition="poor_light"}'] == 0
    assert values['agecheck_till_condition{condition="faces_refused"}'] == 0


def status_until(model, notify_socket, text, *args):
    """`agecheck run` with metrics until a STATUS line holds ``text``: (STATUS lines, metric values)."""
    sock, path = notify_socket
    run = Run(model, "--metrics-port", "0", *args, env={"NOTIFY_SOCKET": str(path)})
    try:
        port = metrics_port(run)
        messages = receive_until(sock, lambda m: any(text in x for x in m), 30)
        values = metric_values(port)
    finally:
        code = run.stop()
    assert code == 0
    return [m for m in messages if m.startswith("STATUS=")], values


def test_the_gates_refusals_reach_the_status_line_and_the_metrics(tmp_path, brightness_tflite, notify_socket):
    config = tmp_path / "config.toml"
    config.write_text("[quality]\nmin_eye_distance_px = 500\n")  # every face too small
    events = tmp_path / "events.jsonl"
    statuses, values = status_until(brightness_tflite, notify_socket, "of recent faces refused",
                                    "--config", str(config), "--events", str(events))
    assert any("100% of recent faces refused, mostly too small" in m for m in statuses), statuses
    # the events file says when the camera began refusing faces, and that it did until the service stopped
    conditions = [(r["type"], r["condition"], r["notice"]) for r in map(json.loads, events.read_text().splitlines())
                  if r["type"].startswith("condition_")]
    refused = "100% of recent faces refused, mostly too small"
    assert conditions == [("condition_began", "faces_refused", refused), ("condition_ended", "faces_refused", refused)]
    assert values['agecheck_faces_refused_total{reason="too_small"}'] == values["agecheck_faces_total"] > 5
    assert values['agecheck_faces_refused_total{reason="turned"}'] == 0
    assert values['agecheck_faces_refused_total{reason="blurred"}'] == 0
    assert values['agecheck_till_condition{condition="faces_refused"}'] == 1  # for an alert on a fleet of tills
    assert values['agecheck_till_condition{condition="poor_light"}'] == 0


def test_poor_light_reaches_the_status_line_and_the_metrics(brightness_tflite, glare_clip, notify_socket):
    statuses, values = status_until(brightness_tflite, notify_socket, "poor light on", "--source", str(glare_clip))
    assert any("poor light on" in m and "of recent faces" in m for m in statuses), statuses
    assert values['agecheck_age_estimates_poor_light_total{light="bright"}'] > 0
    assert values['agecheck_age_estimates_poor_light_total{light="dark"}'] == 0
    assert values['agecheck_till_condition{condition="poor_light"}'] == 1


def test_sighup_reloads_a_good_config_and_refuses_a_bad_one(tmp_path, brightness_tflite):
    config, events = tmp_path / "config.toml", tmp_path / "events.jsonl"
    config.write_text("[policy]\nthreshold_age = 18\n")
    run = Run(brightness_tflite, "--config", str(config), "--events", str(events), group_args=["--log-format", "json"])
    try:
        run.wait_for("running on")
        config.write_text("[policy]\nthreshold_age = 21\n")
        run.process.send_signal(signal.SIGHUP)
        run.wait_for("config reloaded")
        assert "threshold 21" in run.wait_for("running on")
        config.write_text('[policy]\nthreshold_age = "eighteen"\n')
        run.process.send_signal(signal.SIGHUP)
        refused = json.loads(run.wait_for("config reload refused"))
        assert refused["level"] == "error" and "policy.threshold_age = 'eighteen'" in refused["message"]
        time.sleep(1)
        assert run.process.poll() is None  # still running, on the old config
    finally:
        code = run.stop()
    assert code == 0
    # Every line agecheck logs is one JSON object. (LiteRT's and MediaPipe's native code print a
    # few plain start-up lines straight to fd 2; Python logging cannot reformat those.)
    ours = [json.loads(line) for line in run.seen if line.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in ours)
    assert sum("running on" in e["message"] for e in ours) == 2 and any("config reloaded" in e["message"] for e in ours)
    assert not [line for line in run.seen if "edge_app" in line and not line.startswith("{")]
    thresholds = {json.loads(line)["threshold_age"] for line in events.read_text().splitlines()}
    assert thresholds == {18, 21}


def test_notifier_is_silent_without_systemd_and_paces_the_watchdog(notify_socket):
    Notifier(environ={}).frame_done("x")  # no socket, nothing breaks
    sock, path = notify_socket
    now = [0.0]
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}, clock=lambda: now[0])
    sent = []
    for _ in range(30):  # 3 s of frames at 10 fps
        notifier.frame_done("ok", status_every_s=1.0)
        now[0] += 0.1
    sock.settimeout(0.5)
    try:
        while True:
            sent.append(sock.recv(1024).decode())
    except TimeoutError:
        pass
    assert sent[0] == "READY=1" and sent.count("READY=1") == 1
    assert sent.count("WATCHDOG=1") == 3  # at 0, 1 and 2 s: every half of WATCHDOG_USEC
    assert sent.count("STATUS=ok") == 3


class FlakyCamera:
    """A camera that gives frames, goes dark for a while (unplugged), then comes back."""

    def __init__(self, plan):
        self.plan = plan  # shared list of booleans: True = a frame, False = a failed read
        self.opened = True

    def isOpened(self):  # noqa: N802  (cv2's name)
        return self.opened

    def read(self):
        ok = self.plan.pop(0) if self.plan else False
        return ok, (np.zeros((4, 4, 3), np.uint8) if ok else None)

    def get(self, prop):
        return 0.0

    def release(self):
        self.opened = False


def test_recent_rate_follows_a_slowdown_that_the_lifetime_average_hides():
    now = [0.0]
    rate = RecentRate(window_s=10.0, clock=lambda: now[0])
    for _ in range(600):  # 10 s at 60 fps...
        now[0] += 1 / 60
        fps = rate.tick()
    assert fps == pytest.approx(60, rel=0.01)
    for _ in range(300):  # ...then a minute at 5 fps
        now[0] += 1 / 5
        fps = rate.tick()
    lifetime = 900 / now[0]
    assert fps == pytest.approx(5, rel=0.05) and lifetime > 12  # the whole-run average still says 13


def test_lost_camera_is_reopened_with_backoff_and_recovers():
    plan = [True] * 3 + [False] * 4 + [True] * 3  # 3 frames, dark for 4 reads, back
    now, opens, waits = [0.0], [], []

    def sleep(seconds):
        now[0] += seconds

    def open_capture(_):
        opens.append(round(now[0], 6))
        return FlakyCamera(plan)

    config = SourceConfig(source="0", reopen_backoff_ms=100, reopen_backoff_max_ms=400, give_up_after_s=60)
    with VideoSource(config, sleep=sleep, clock=lambda: now[0], on_wait=lambda: waits.append(now[0]),
                     open_capture=open_capture) as source:
        frames = list(zip(range(6), source.frames(), strict=False))
        assert source.reconnects == 1
    assert len(frames) == 6  # all frames before and after the gap, without a restart
    # Reopened after waits of 0.1, 0.2, 0.4 and 0.4 s: doubling, capped.
    assert opens == [0.0, 0.1, 0.3, 0.7, 1.1]
    # The watchdog is fed at least every WAIT_SLICE_S while waiting, however long the backoff.
    assert max(b - a for a, b in zip(waits, waits[1:], strict=False)) <= 0.25 + 1e-9
    timestamps = [f.timestamp_ms for _, f in frames]
    assert timestamps == sorted(set(timestamps))


def test_camera_that_never_comes_back_gives_up():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    config = SourceConfig(source="0", reopen_backoff_ms=1000, reopen_backoff_max_ms=5000, give_up_after_s=30)
    plan = [True]  # one frame, then never again, however often it is reopened
    source = VideoSource(config, sleep=sleep, clock=lambda: now[0], open_capture=lambda _: FlakyCamera(plan))
    with pytest.raises(AgecheckError, match="gave no frame for 30 s; giving up"):
        list(source.frames())
    assert 30 <= now[0] <= 40


def test_events_file_rotates_by_size_and_keeps_backups(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, max_bytes=200, backups=2)
    for i in range(40):
        sink.send({"type": "alert", "track_id": i})
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["track_id"] == 39  # the newest event is in the live file


def test_watchdog_gaps_stay_within_half_its_period_across_loop_restarts(tmp_path, brightness_tflite, notify_socket):
    """WATCHDOG_USEC=2 s: WATCHDOG=1 at least every 1 s plus one frame (80 ms at 12.5 fps), restarts included."""
    sock, path = notify_socket
    run = Run(brightness_tflite, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
    arrivals = []
    try:
        receive_until(sock, lambda m: "READY=1" in m, 30)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                if "WATCHDOG=1" in sock.recv(4096).decode():
                    arrivals.append(time.monotonic())
            except TimeoutError:
                break
    finally:
        code = run.stop()
        for _ in range(200):  # drain stderr up to the run's last line
            line = run.lines.get(timeout=10)
            if line is None:
                break
            run.seen.append(line)
    assert code == 0
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) >= 4 and max(gaps) <= 1.0 + 0.08, gaps
    done = [line for line in run.seen if "done:" in line]
    frames = int(done[-1].split("done: ")[1].split(" frames")[0])
    assert frames > 3 * 41  # the 41-frame clip restarted at least twice while the watchdog was timed
