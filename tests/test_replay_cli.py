import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge_app.capture import VideoSource
from edge_app.cli import main
from edge_app.config import DEFAULT_AGE_MODEL, DEFAULT_SAMPLE_CLIP, PROJECT_ROOT, SourceConfig
from edge_app.model_card import ModelCard
from tests.conftest import write_clip


def reader_threads():
    return [t for t in threading.enumerate() if t.name == "video-reader"]


def test_a_file_is_read_ahead_every_frame_in_order_and_the_reader_stops_on_close():
    capture = cv2.VideoCapture(str(DEFAULT_SAMPLE_CLIP))
    direct = []
    while (read := capture.read())[0]:
        direct.append(read[1])
    capture.release()
    with VideoSource(SourceConfig(source=str(DEFAULT_SAMPLE_CLIP))) as source:
        frames = list(source.frames())
    assert len(frames) == len(direct) == 41
    assert all(np.array_equal(f.image, d) for f, d in zip(frames, direct, strict=True))
    assert all(np.array_equal(f.rgb, f.image[..., ::-1]) for f in frames)
    assert [f.index for f in frames] == list(range(41))
    assert all(b.timestamp_ms > a.timestamp_ms for a, b in zip(frames, frames[1:], strict=False))
    # A looping file never ends: leaving the loop early must still stop its reader thread.
    with VideoSource(SourceConfig(source=str(DEFAULT_SAMPLE_CLIP), loop=True)) as source:
        for frame in source.frames():
            if frame.index == 60:
                break
        assert len(reader_threads()) == 1
    assert reader_threads() == []


class BreakingDecoder:
    """A file capture whose decoder fails on its third frame."""

    def __init__(self):
        self.reads = 0

    def isOpened(self):  # noqa: N802  (cv2's name)
        return True

    def read(self):
        self.reads += 1
        if self.reads == 3:
            raise cv2.error("decoder broke")
        return True, np.zeros((4, 4, 3), np.uint8)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_a_decoder_error_on_the_reader_thread_reaches_the_loop():
    config = SourceConfig(source=str(DEFAULT_SAMPLE_CLIP))
    with VideoSource(config, open_capture=lambda _: BreakingDecoder()) as source:
        frames = []
        with pytest.raises(cv2.error, match="decoder broke"):
            for frame in source.frames():
                frames.append(frame)
    assert len(frames) == 2 and reader_threads() == []


def replay(args, brightness_tflite):
    return CliRunner().invoke(main, ["replay", *args, "--model", str(brightness_tflite)])


def read_events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_writes_consistent_video_events_and_summary(tmp_path):
    from tests.models import brightness_model

    # at the 64 px the quality gate measures sharpness at, as the shipped model's input: a smaller
    # input's crops, scaled up to be measured, read softer than the face is
    model = brightness_model(tmp_path / "bright64.tflite", input_size=64)
    out = tmp_path / "out"
    result = replay([str(DEFAULT_SAMPLE_CLIP), "--output", str(out / "a.mp4"), "--events", str(out / "e.jsonl"),
                     "--summary", str(out / "s.json"), "--threshold-age", "60", "--margin-years", "0"],
                    model)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "s.json").read_text())
    events = read_events(out / "e.jsonl")
    assert summary["frames"] == 41 and summary["video_fps"] == pytest.approx(12.5)
    assert summary["peak_rss_mb"] > 0  # in-process here; bench/stages.py measures the app alone
    assert summary["faces"] >= 3 * 35  # three people in (nearly) every frame
    assert summary["tracks"] == 3  # one track per customer: no id switches on this clip
    assert summary["age_estimates"] < summary["faces"] / 2  # estimates are throttled per track
    assert summary["faces_refused"] < summary["faces"] / 10  # the quality gate lets these clear faces through
    assert sum(summary["faces_refused_by_reason"].values()) == summary["faces_refused"]
    assert "quality gate refused" not in result.output
    assert summary["age_estimates_too_dark"] == summary["age_estimates_too_bright"] == 0  # the clip's light is fine
    by_type = {t: [e for e in events if e["type"] == t] for t in ("track_start", "alert", "track_end")}
    assert {e["type"] for e in events} == set(by_type)  # no condition of the till began: light and faces are fine
    assert summary["condition_seconds"] == {"poor_light": 0.0, "faces_refused": 0.0}
    assert len(by_type["track_start"]) == len(by_type["track_end"]) == summary["tracks"]
    # The brightness model gives everybody an "age" under 60: each customer is flagged once.
    assert len(by_type["alert"]) == summary["alerts"] == 3
    for event in events:
        assert {"type", "track_id", "estimated_age", "threshold_age", "margin_years", "video_time_s"} <= event.keys()
        assert event["threshold_age"] == 60 and event["margin_years"] == 0
    for alert in by_type["alert"]:  # flagged by age: the lowest age so far is the one under the limit
        assert alert["reason"] == "age" and alert["lowest_estimated_age"] < 60
    for end in by_type["track_end"]:  # the lowest of a customer's ages is at most the last one
        assert end["lowest_estimated_age"] <= end["estimated_age"] + 0.05
    # The first alert comes within 0.5 s of video time after the customer appears.
    assert max(summary["first_alert_after_track_start_s"]) <= 0.5
    video = cv2.VideoCapture(str(out / "a.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 41
    video.release()


def test_replay_estimates_each_face_from_every_view_the_card_names(tmp_path, brightness_tflite):
    def replay_with(crop: dict, name: str):
        model = tmp_path / name / "m.tflite"
        model.parent.mkdir()
        model.write_bytes(brightness_tflite.read_bytes())
        card = json.loads(brightness_tflite.with_suffix(".json").read_text())
        model.with_suffix(".json").write_text(json.dumps(card | {"crop": crop}))
        out = tmp_path / name
        result = replay([str(DEFAULT_SAMPLE_CLIP), "--events", str(out / "e.jsonl"), "--summary", str(out / "s.json"),
                         "--threshold-age", "1", "--margin-years", "0"], model)
        assert result.exit_code == 0, result.output
        ends = {e["track_id"]: e["estimated_age"] for e in read_events(out / "e.jsonl") if e["type"] == "track_end"}
        return ends, json.loads((out / "s.json").read_text())["age_estimates"]

    one, one_count = replay_with({"margin": 0.1, "pad": "edge"}, "one")
    three, three_count = replay_with({"margin": 0.1, "pad": "edge", "view_margins": [0.6, 1.2]}, "three")
    assert three_count == one_count > 0  # one estimate per face, whatever the views
    assert one.keys() == three.keys() and len(one) == 3
    # the wide views take in the room around each face, of another brightness: each customer's "age" moves
    assert all(abs(three[track] - one[track]) > 1 for track in one)


def test_the_lowest_age_of_one_replay_gives_any_higher_limits_decisions(tmp_path, brightness_tflite):
    """The events' lowest estimate read at a limit is what a replay at that limit decides (a flag is sticky)."""
    def replay_at(limit_years, name):
        events_path = tmp_path / f"{name}.jsonl"
        result = replay([str(DEFAULT_SAMPLE_CLIP), "--events", str(events_path), "--threshold-age", str(limit_years),
                         "--margin-years", "0"], brightness_tflite)
        assert result.exit_code == 0, result.output
        return [e for e in read_events(events_path) if e["type"] == "track_end"]

    lowest = {e["track_id"]: e["lowest_estimated_age"] for e in replay_at(1, "low")}  # no "age" is under 1
    assert len(lowest) == 3 and None not in lowest.values()
    ordered = sorted(lowest.values())
    assert ordered[0] < ordered[-1]  # customers of different brightness: the limit below splits them
    limit = round((ordered[0] + ordered[-1]) / 2, 2)
    flagged = {e["track_id"] for e in replay_at(limit, "split") if e["flagged"]}
    assert flagged == {track for track, age in lowest.items() if age < limit} and 0 < len(flagged) < 3

    # `agecheck margins` reads the same from the first replay's events, beside the shipped card's table
    shown = CliRunner().invoke(main, ["margins", str(tmp_path / "low.jsonl"), "--threshold-age", str(limit - 10),
                                      "--margin-years", "10"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "3 customers (tracks), recorded at estimate below 1: 0 asked for ID, 0 never estimated"
    # a legal age the card's table has no column for: its under-18s, and a line that says so
    assert ("| margin | estimate below | your customers asked | under 18 asked (card) | 13-17 asked (card) "
            "| 18-24 asked (card) | 25+ asked (card) |") in lines
    (bold,) = [line for line in lines if "**" in line]
    assert bold.startswith(f"| **10** | **{limit:g}** | **{len(flagged) / 3:.0%} ({len(flagged)})** |")
    assert lines[-3].startswith("| 20 |") and f"| **{limit:g}** |" not in lines[-3]
    assert lines[-1].startswith(f"(this card's table has no column for customers under {limit - 10:g}, the legal")
    # at 21 the card's own under-21 column, the same shares `agecheck card` shows there
    at_21 = CliRunner().invoke(main, ["margins", str(tmp_path / "low.jsonl"), "--threshold-age", "21",
                                      "--margin-years", "5"])
    assert at_21.exit_code == 0, at_21.output
    lines = at_21.output.splitlines()
    assert ("| margin | estimate below | your customers asked | under 21 asked (card) | 13-17 asked (card) "
            "| 18-24 asked (card) | 25+ asked (card) |") in lines
    assert "no column" not in at_21.output and lines[-1].startswith("| 20 | 41 |")
    card = ModelCard.load(DEFAULT_AGE_MODEL)
    (bold,) = [line for line in lines if "**" in line]
    shares = [f"**{card.tradeoff_at(26)[key]:.0%}**" for key in ("under_21", "age_13_17", "age_18_24", "age_25_plus")]
    assert bold.split(" | ")[3:] == [*shares[:-1], shares[-1] + " |"]


def test_margins_refuses_what_is_not_a_tills_events_with_one_line(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text('{"type": "track_start", "track_id": 1}\n{"type": "track_end", "track_id": 1, "reason": null}\n')
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text('{"type": "track_start", "track_id": 1}\nnot json\n')
    wordy = tmp_path / "wordy.jsonl"
    wordy.write_text('{"type": "track_end", "track_id": 1, "lowest_estimated_age": "young", "threshold_age": 18, '
                     '"margin_years": 5}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"type": "track_start", "track_id": 1, "threshold_age": 18, "margin_years": 5}\n')
    endless = tmp_path / "endless.jsonl"
    endless.write_text('{"type": "condition_ended", "condition": "poor_light", "duration_s": null}\n')
    for path, expected in [(tmp_path / "none.jsonl", "none.jsonl: no such file; expected an events file"),
                           (old, "old.jsonl:2: a track_end without lowest_estimated_age; expected events written"),
                           (garbled, "garbled.jsonl:2: not an event; expected one JSON event per line"),
                           (wordy, "wordy.jsonl:1: a track_end without numeric lowest_estimated_age"),
                           (empty, "no customer in empty.jsonl (no track_end event)"),
                           (endless, "endless.jsonl:1: a condition_ended without condition and numeric duration_s")]:
        result = CliRunner().invoke(main, ["margins", str(path)])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert expected in lines[0], lines[0]


def test_window_corner_and_status_show_the_recent_rate_not_the_lifetime_average(tmp_path, brightness_tflite,
                                                                               monkeypatch):
    from functools import partial

    from edge_app import pipeline
    from edge_app.config import load_config
    from edge_app.rate import RecentRate

    config = load_config(None).override("source", source=str(DEFAULT_SAMPLE_CLIP), loop=False)
    config = config.override("age_model", model_path=str(brightness_tflite))
    monkeypatch.setattr(pipeline, "RecentRate", partial(RecentRate, window_s=0.5))  # a short clip, a short window
    drawn, seen = [], []

    def draw(*args, fps=None, **kwargs):
        drawn.append(fps)
        return overlay_draw(*args, fps=fps, **kwargs)

    def on_frame(summary, stats):
        seen.append((summary.processing_fps, stats.recent_fps))
        if len(seen) > 20:
            time.sleep(0.1)  # the till's machine slows down half way: under 10 fps from here on

    overlay_draw = pipeline.draw
    monkeypatch.setattr(pipeline, "draw", draw)
    pipeline.run(config, pipeline.Outputs(video=tmp_path / "a.mp4"), hooks=pipeline.Hooks(on_frame=on_frame))
    assert len(seen) == len(drawn) == 41
    assert drawn == [recent for _, recent in seen]  # the corner shows what the STATUS line reports
    lifetime, recent = seen[-1]
    assert recent < 10 and lifetime > 1.3 * recent  # the whole-run average would hide the slowdown


def test_replay_of_adults_only_raises_no_alert(tmp_path, brightness_tflite):
    events = tmp_path / "e.jsonl"
    result = replay([str(DEFAULT_SAMPLE_CLIP), "--events", str(events), "--threshold-age", "1", "--margin-years", "0"],
                    brightness_tflite)
    assert result.exit_code == 0, result.output
    assert not [e for e in read_events(events) if e["type"] == "alert"]
    assert "0 alerts" in result.output


def test_replay_without_video_uses_the_bundled_clip(tmp_path, brightness_tflite, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = replay([], brightness_tflite)
    assert result.exit_code == 0, result.output
    folders = list(tmp_path.glob("agecheck-output-*"))
    assert len(folders) == 1 and f"outputs in {folders[0].name}/" in result.output
    assert {p.name for p in folders[0].iterdir()} == {"annotated.mp4", "events.jsonl", "summary.json"}


def test_replay_writes_no_images_unless_asked(tmp_path, brightness_tflite):
    result = replay([str(DEFAULT_SAMPLE_CLIP), "--events", str(tmp_path / "e.jsonl")], brightness_tflite)
    assert result.exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["e.jsonl"]


def one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("make_source", "match"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "could not open|no video frames"),
        (lambda d: (d / "notes.mp4").write_text("hello " * 100) or d / "notes.mp4", "could not open|no video frames"),
    ],
)
def test_replay_bad_video_is_one_clear_error(tmp_path, brightness_tflite, make_source, match):
    import re

    line = one_error_line(replay([str(make_source(tmp_path))], brightness_tflite))
    assert re.search(match, line), line


def test_bad_model_and_config_are_one_clear_error(tmp_path, brightness_tflite):
    missing_model = ["replay", str(DEFAULT_SAMPLE_CLIP), "--model", str(tmp_path / "x.tflite")]
    line = one_error_line(CliRunner().invoke(main, missing_model))
    assert "age model" in line and "does not exist" in line
    config = tmp_path / "c.toml"
    config.write_text('[policy]\nthreshold_age = "eighteen"\n')
    line = one_error_line(replay([str(DEFAULT_SAMPLE_CLIP), "--config", str(config)], brightness_tflite))
    assert "policy.threshold_age = 'eighteen'" in line


def test_camera_that_cannot_be_opened_is_one_clear_error(brightness_tflite):
    args = ["run", "--source", "/dev/video99", "--no-display", "--model", str(brightness_tflite)]
    result = CliRunner().invoke(main, args)
    assert "could not open camera '/dev/video99'" in one_error_line(result)


def test_truncated_file_ends_cleanly_with_a_summary(tmp_path, brightness_tflite, clip_frames):
    video = write_clip(tmp_path / "clip.avi", clip_frames)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # a download that broke half-way
    summary = tmp_path / "s.json"
    result = replay([str(video), "--summary", str(summary)], brightness_tflite)
    assert result.exit_code == 0, result.output
    frames = json.loads(summary.read_text())["frames"]
    assert 5 < frames < 41


def test_a_till_in_glare_is_counted_and_the_operator_warned(tmp_path, brightness_tflite, glare_clip):
    """Real detector on the clip's frames under a window's glare: the faces are estimated, counted, reported."""
    summary, events = tmp_path / "s.json", tmp_path / "e.jsonl"
    result = replay([str(glare_clip), "--summary", str(summary), "--events", str(events)], brightness_tflite)
    assert result.exit_code == 0, result.output
    run = json.loads(summary.read_text())
    assert run["age_estimates"] > 10 and run["age_estimates_too_dark"] == 0
    assert run["age_estimates_too_bright"] >= run["age_estimates"] / 2
    warning = [line for line in result.output.splitlines() if "poor light at the till" in line]
    assert len(warning) == 1 and "of faces too bright" in warning[0]
    # The day's events say when the light was poor: it began once enough faces were seen, and
    # the clip ended (3.3 s) before the meter had been silent long enough to end it.
    records = read_events(events)
    conditions = [e for e in records if e["type"].startswith("condition_")]
    assert [(e["type"], e["condition"]) for e in conditions] == [
        ("condition_began", "poor_light"), ("condition_ended", "poor_light")]
    began, ended = conditions
    assert began["notice"].startswith("poor light on") and began["duration_s"] is None
    assert 0 < began["video_time_s"] < ended["video_time_s"] == max(e["video_time_s"] for e in records)
    assert 0 < ended["duration_s"] <= ended["video_time_s"] - began["video_time_s"]
    assert run["condition_seconds"] == {"poor_light": ended["duration_s"], "faces_refused": 0.0}
    logged = [line for line in result.output.splitlines() if '"condition_began"' in line]
    assert len(logged) == 1 and '"poor_light"' in logged[0]  # the kiosk's journal has it too
    # `agecheck margins` says the day's figures came partly in poor light
    shown = CliRunner().invoke(main, ["margins", str(events), str(events), "--model", str(brightness_tflite)])
    assert shown.exit_code == 0, shown.output
    assert f"; poor light 2 times, {2 * ended['duration_s']:.0f} s in all" in shown.output.splitlines()[0]


def test_run_loops_a_file_until_sigterm(tmp_path, brightness_tflite):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_app", "run", "--source", str(DEFAULT_SAMPLE_CLIP), "--loop", "--no-display",
         "--model", str(brightness_tflite)],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    time.sleep(8)  # start-up plus more than one pass over the 41-frame clip
    assert process.poll() is None, "run --loop ended by itself"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr[-2000:]
    done = [line for line in stderr.splitlines() if "done:" in line]
    assert done, stderr[-2000:]
    frames = int(done[-1].split("done: ")[1].split(" frames")[0])
    assert frames > 41  # it went past the end of the clip and looped


def _replay_lines(tmp_path, *flags):
    process = subprocess.run(
        [sys.executable, "-m", "edge_app", *flags, "replay", "--output", str(tmp_path / "a.mp4"),
         "--events", str(tmp_path / "e.jsonl")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    return (process.stdout + process.stderr).splitlines()


def test_demo_prints_only_the_apps_own_lines_unless_verbose(tmp_path):
    """`make demo` is `agecheck replay` with the shipped model: ten lines at most, none native."""
    quiet = _replay_lines(tmp_path)
    assert len(quiet) <= 10, "\n".join(quiet)
    native = [line for line in quiet if line.startswith(("INFO: [", "WARNING: [", "W0000", "I0000"))]
    assert native == [], native
    assert any("frames" in line and "tracks" in line for line in quiet)
    verbose = _replay_lines(tmp_path, "-v")
    assert any("Sparsity tensors" in line or "XNNPACK" in line for line in verbose)  # shown with --verbose


def test_held_back_native_output_is_shown_when_loading_fails(tmp_path, capfd):
    from edge_app.logs import native_stderr_held, show_native_logs

    show_native_logs(False)  # the default, whatever an earlier in-process command set
    with pytest.raises(RuntimeError), native_stderr_held():
        os.write(2, b"native: the reason it failed\n")
        raise RuntimeError("load failed")
    with native_stderr_held():
        os.write(2, b"native: chatter\n")
    err = capfd.readouterr().err
    assert "the reason it failed" in err and "chatter" not in err


def test_two_threads_holding_native_output_leave_stderr_as_it_was(capfd):
    """A looping file reopens on its reader thread while the loop's thread may hold stderr too."""
    from edge_app.logs import native_stderr_held, show_native_logs

    show_native_logs(False)

    def hold_often():
        for _ in range(300):
            with native_stderr_held():
                os.write(2, b"native: chatter\n")

    threads = [threading.Thread(target=hold_often) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.write(2, b"the app's next line\n")  # without one hold at a time, lost in a deleted file
    err = capfd.readouterr().err
    assert "the app's next line" in err and "chatter" not in err


def test_faces_the_gate_refuses_get_no_estimate_and_fail_safe_as_unclear(tmp_path, brightness_tflite):
    """Real detector, real frames: with every face 'too small', nobody is estimated and all are asked for ID."""
    config = tmp_path / "c.toml"
    config.write_text("[quality]\nmin_eye_distance_px = 500\n\n[policy]\nunclear_after_s = 1.0\n")
    events, summary, video = tmp_path / "e.jsonl", tmp_path / "s.json", tmp_path / "a.mp4"
    result = replay([str(DEFAULT_SAMPLE_CLIP), "--config", str(config), "--events", str(events),
                     "--summary", str(summary), "--output", str(video), "--threshold-age", "1"], brightness_tflite)
    assert result.exit_code == 0, result.output
    run = json.loads(summary.read_text())
    assert run["age_estimates"] == 0 and run["faces_refused"] == run["faces"] > 100
    assert run["faces_refused_by_reason"] == {"too_small": run["faces"], "turned": 0, "blurred": 0}
    warning = [line for line in result.output.splitlines() if "the quality gate refused 100%" in line]
    assert len(warning) == 1 and "mostly too small" in warning[0] and "500 px between the eyes" in warning[0], \
        result.output
    alerts = [e for e in read_events(events) if e["type"] == "alert"]
    assert len(alerts) == 3 and {(e["reason"], e["refused_as"]) for e in alerts} == {("face_unclear", "too_small")}
    assert all(e["estimated_age"] is None and e["video_time_s"] >= 1.0 for e in alerts)
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 5)  # before the 1 s fail-safe: amber boxes, no banner
    ok, frame = capture.read()
    capture.release()
    amber = (frame[..., 2] > 200) & (frame[..., 1] > 120) & (frame[..., 1] < 200) & (frame[..., 0] < 60)
    assert ok and amber.sum() > 200


def test_card_shows_whom_each_margin_asks_with_the_gate_in_force_in_bold(tmp_path, brightness_tflite):
    """bench/card_tradeoff.py puts the table into a card (real subprocess); `agecheck card` shows it."""
    from edge_app.model_card import TRADEOFF_GROUPS, ModelCard, card_path_for, tradeoff_summary
    from tests.test_augment_imbalance import TILL_ESTIMATES, TILL_TRUE

    model = tmp_path / "m.tflite"
    model.write_bytes(brightness_tflite.read_bytes())
    card_path_for(model).write_text(card_path_for(brightness_tflite).read_text())
    predictions = tmp_path / "predictions_val_int8_camera.csv"
    predictions.write_text("source,file_name,real_age,predicted_age\n" + "".join(
        f"till,{i}.jpg,{true},{estimate}\n" for i, (true, estimate) in enumerate(zip(TILL_TRUE, TILL_ESTIMATES,
                                                                                     strict=True))))
    script = str(PROJECT_ROOT / "bench" / "card_tradeoff.py")
    added = subprocess.run([sys.executable, script, str(predictions), "--model", str(model)],
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    card = json.loads(card_path_for(model).read_text())
    assert card["calibration"]["tradeoff_from"]["predictions"] == predictions.name
    assert [row["limit_years"] for row in card["calibration"]["tradeoff"]] == list(range(16, 46))

    shown = CliRunner().invoke(main, ["card", "--model", str(model), "--margin-years", "2"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "gate in force: ask for ID when the estimate is below 18 + 2.00 = 20.00" in lines
    assert "| **20** | **2** | **50%** | **33%** | **0%** | **0%** |" in lines  # the gate in force, in bold
    assert "| 25 | 7 | 75% | 67% | 0% | 33% |" in lines
    between = CliRunner().invoke(main, ["card", "--model", str(model), "--margin-years", "4.5"])
    # halfway between the rows of 22 (2 of 4 under 18, 1 of 3 13-17s) and 23 (3 of 4, 2 of 3)
    assert "| **22.5** | **4.5** | **62%** | **50%** | **0%** | **33%** |" in between.output.splitlines()
    # at a legal age of 21 the first column is the under-21s: at 25, 3 of 5 (the 20-year-old's 26 is not below)
    at_21 = CliRunner().invoke(main, ["card", "--model", str(model), "--threshold-age", "21", "--margin-years", "4"])
    lines = at_21.output.splitlines()
    assert "| estimate below | margin | under 21 asked | 13-17 asked | 18-24 asked | 25+ asked |" in lines
    assert "| **25** | **4** | **60%** | **67%** | **0%** | **33%** |" in lines
    assert "60% of under 21" in tradeoff_summary(ModelCard.load(model), 21, 4)  # the run's log line at start
    # a table from before 2026-11-28 counts only the under-18s: shown as such, and the operator told
    older = json.loads(card_path_for(model).read_text())
    older["calibration"]["tradeoff"] = [{key: row[key] for key in ("limit_years", *TRADEOFF_GROUPS)}
                                        for row in older["calibration"]["tradeoff"]]
    card_path_for(model).write_text(json.dumps(older))
    lines = CliRunner().invoke(main, ["card", "--model", str(model), "--threshold-age", "21",
                                      "--margin-years", "4"]).output.splitlines()
    assert "| **25** | **4** | **75%** | **67%** | **0%** | **33%** |" in lines
    assert any(line.startswith("(this card's table has no column for customers under 21") for line in lines)
    assert not any("no column" in line for line in CliRunner().invoke(main, ["card", "--model", str(model)]).output
                   .splitlines())  # at 18 the old table is whole

    missing = CliRunner().invoke(main, ["card", "--model", str(tmp_path / "none.tflite")])
    assert missing.exit_code == 1 and missing.output.strip().splitlines() == [
        f"Error: age model {tmp_path / 'none.tflite'} does not exist; expected a .tflite with its .json card beside it"]
    bad = subprocess.run([sys.executable, script, str(tmp_path / "none.csv"), "--model", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.csv'}: no such file; expected an `agecheck evaluate --predictions` CSV"]
