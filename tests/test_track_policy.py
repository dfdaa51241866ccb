import math

import numpy as np
import pytest

from edge_app.config import PolicyConfig, TrackerConfig
from edge_app.faces import NOT_REFUSED, REFUSALS, Faces
from edge_app.overlay import AMBER, HINTS, RED, draw
from edge_app.policy import (
    ACKNOWLEDGED,
    ALERT,
    CHECKED,
    CLEARED,
    FLAGGED,
    PENDING,
    TRACK_END,
    TRACK_START,
    AgePolicy,
)
from edge_app.track import FaceTracker, box_iou
from tests.conftest import make_faces

FRAME_MS = 40  # 25 fps


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[0, 0, 10, 10]], [[0, 0, 10, 10]], 1.0),
        ([[0, 0, 10, 10]], [[5, 0, 15, 10]], 50 / 150),
        ([[0, 0, 10, 10]], [[20, 20, 30, 30]], 0.0),
        ([[0, 0, 0, 0]], [[0, 0, 0, 0]], 0.0),
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou(np.array(a), np.array(b))[0, 0] == pytest.approx(expected)


def step(tracker, faces, t, age_for=lambda track_id: 30.0):
    """One frame of the app's loop: track, estimate the due faces, return faces with ages."""
    faces = tracker.update(faces, t)
    due = tracker.due_for_estimate(faces, t)
    ages = np.array([age_for(int(i)) for i in faces.tracker_id[due]], np.float32)
    return tracker.add_estimates(faces, due, ages, t), due


def test_tracker_follows_a_moving_face_and_starts_new_tracks():
    tracker = FaceTracker(TrackerConfig())
    ids = []
    for frame in range(10):
        x = 100 + 3 * frame  # walking right, 3 px per frame
        faces, _ = step(tracker, make_faces([[x, 50, x + 40, 90]]), frame * FRAME_MS)
        ids.append(int(faces.tracker_id[0]))
    assert ids == [ids[0]] * 10
    faces, _ = step(tracker, make_faces([[130, 50, 170, 90], [300, 50, 340, 90]]), 10 * FRAME_MS)
    assert faces.tracker_id[0] == ids[0] and faces.tracker_id[1] not in ids
    assert len(tracker) == 2


def test_tracker_does_not_give_one_track_to_two_faces():
    tracker = FaceTracker(TrackerConfig(iou_threshold=0.1))
    step(tracker, make_faces([[0, 0, 40, 40]]), 0)
    faces, _ = step(tracker, make_faces([[0, 0, 40, 40], [5, 5, 45, 45]]), FRAME_MS)
    assert len(set(faces.tracker_id.tolist())) == 2


def test_age_is_reported_after_min_estimates_then_throttled():
    config = TrackerConfig(min_estimates=3, estimate_interval_ms=200, window=5)
    tracker = FaceTracker(config)
    box = make_faces([[0, 0, 40, 40]])
    dues, ages = [], []
    for frame in range(12):
        faces, due = step(tracker, box, frame * FRAME_MS, age_for=lambda _, f=frame: 20.0 + f)
        dues.append(bool(due[0]))
        ages.append(float(faces.age_years[0]))
    # Every frame until 3 estimates (0, 40, 80 ms), then once per 200 ms (280, 480 ms).
    assert dues == [True, True, True, False, False, False, False, True, False, False, False, False]
    assert math.isnan(ages[0]) and math.isnan(ages[1])
    assert ages[2] == pytest.approx(21.0)  # median of 20, 21, 22
    assert ages[7] == pytest.approx(21.5)  # median of 20, 21, 22, 27


def test_median_ignores_a_wild_estimate():
    tracker = FaceTracker(TrackerConfig(min_estimates=3, estimate_interval_ms=0, window=5))
    estimates = iter([30.0, 31.0, 95.0, 29.0, 30.0])
    for frame in range(5):
        faces, _ = step(tracker, make_faces([[0, 0, 40, 40]]), frame * FRAME_MS, age_for=lambda _: next(estimates))
    assert faces.age_years[0] == pytest.approx(30.0)
    assert faces.age_spread_years[0] == pytest.approx(31.0 - 30.0)  # IQR of 29, 30, 30, 31, 95


def test_spread_is_unknown_until_the_age_is_reported():
    tracker = FaceTracker(TrackerConfig(min_estimates=3, estimate_interval_ms=0, window=5))
    estimates = iter([10.0, 50.0, 20.0, 60.0])
    spreads = []
    for frame in range(4):
        faces, _ = step(tracker, make_faces([[0, 0, 40, 40]]), frame * FRAME_MS, age_for=lambda _: next(estimates))
        spreads.append(float(faces.age_spread_years[0]))
    assert math.isnan(spreads[0]) and math.isnan(spreads[1])
    assert spreads[2] == pytest.approx(np.subtract(*np.percentile([10, 50, 20], [75, 25])))
    assert spreads[3] == pytest.approx(np.subtract(*np.percentile([10, 50, 20, 60], [75, 25])))


def test_tracker_evicts_tracks_that_left():
    tracker = FaceTracker(TrackerConfig(max_missing_ms=200))
    first, _ = step(tracker, make_faces([[0, 0, 40, 40]]), 0)
    step(tracker, Faces.empty(), 100)
    assert len(tracker) == 1  # briefly lost: kept
    again, _ = step(tracker, make_faces([[0, 0, 40, 40]]), 180)
    assert again.tracker_id[0] == first.tracker_id[0]
    step(tracker, Faces.empty(), 400)
    assert len(tracker) == 0  # gone: evicted with its ages
    back, _ = step(tracker, make_faces([[0, 0, 40, 40]]), 440)
    assert back.tracker_id[0] != first.tracker_id[0] and back.estimates[0] == 1


def test_tracker_state_stays_bounded_over_many_customers():
    tracker = FaceTracker(TrackerConfig(max_missing_ms=100))
    for customer in range(500):  # each customer visible for 5 frames, then gone
        for frame in range(5):
            t = (customer * 10 + frame) * FRAME_MS
            step(tracker, make_faces([[customer % 7 * 50, 0, customer % 7 * 50 + 40, 40]]), t)
        step(tracker, Faces.empty(), (customer * 10 + 8) * FRAME_MS)
    assert len(tracker) <= 1


def tracked(track_ids, ages, spreads=None):
    faces = make_faces([[i * 50, 0, i * 50 + 40, 40] for i in track_ids], tracker_id=track_ids,
                       age_years=np.array(ages, np.float32))
    if spreads is None:  # a known age comes with a small spread, as from a steady face
        spreads = [math.nan if math.isnan(a) else 1.0 for a in ages]
    return faces.with_ages(faces.age_years, faces.estimates, np.array(spreads, np.float32))


def policy(threshold=18, margin=5.0, leave_ms=300, unclear_after_s=0.0, max_spread_years=0.0):
    config = PolicyConfig(threshold_age=threshold, unclear_after_s=unclear_after_s, max_spread_years=max_spread_years)
    return AgePolicy(config, margin, leave_ms)


def run_timeline(gate, timeline, start_ms=0):
    types, flagged = [], []
    for frame, (ids, ages) in enumerate(timeline):
        events = gate.update(tracked(ids, ages), start_ms + frame * FRAME_MS)
        types.append([e.type for e in events])
        flagged.append(1 in gate.flagged_ids)
    return types, flagged


def test_a_flag_is_sticky_whatever_later_estimates_say():
    gate = policy()  # limit 23
    timeline = [
        ([1], [math.nan]),  # appears, no age yet
        ([1], [math.nan]),
        ([1], [19.0]),  # flagged
        ([1], [26.0]),  # an older-looking estimate: still flagged (the cashier was told)
        ([1], [40.0]),
        ([1], [22.0]),  # no second alert event
        ([], []),
    ]
    types, flagged = run_timeline(gate, timeline)
    assert types == [[TRACK_START], [], [ALERT], [], [], [], []]
    assert flagged == [False, False, True, True, True, True, True]
    events = gate.update(Faces.empty(), 20 * FRAME_MS)  # 560 ms after last seen > 300
    assert [(e.type, e.track_id, e.flagged, e.estimated_age, e.reason) for e in events] == [
        (TRACK_END, 1, True, 22.0, "age")]
    assert len(gate) == 0



def test_the_lowest_age_says_what_any_margin_would_have_decided():
    ages = [math.nan, 30.0, 27.25, 29.0, 35.0, math.nan]  # the track's aggregate age, frame by frame
    for margin in [5.0, 9.25, 9.26, 12.0]:  # limits 23, 27.25, 27.26, 30
        gate = policy(threshold=18, margin=margin)
        types, flagged = run_timeline(gate, [([1], [age]) for age in ages])
        (end,) = gate.finish(len(ages) * FRAME_MS)
        assert end.lowest_age == 27.25 and end.estimated_age == 35.0
        assert end.flagged == (27.25 < 18 + margin), margin  # sticky: flagged iff the lowest age fell under the limit
        assert end.to_dict(18, margin)["lowest_estimated_age"] == 27.25
    quiet = policy()
    quiet.update(tracked([2], [math.nan]), 0)
    (end,) = quiet.finish(FRAME_MS)
    assert end.lowest_age is None and end.to_dict(18, 5.0)["lowest_estimated_age"] is None

def test_asked_below_counts_an_acknowledged_customer_and_every_fail_safe_flag():
    from edge_app.margins import asked_below

    gate = policy()  # limit 23
    gate.update(tracked([1], [19.0]), 0)
    gate.acknowledge(FRAME_MS)
    (end,) = gate.finish(2 * FRAME_MS)
    record = end.to_dict(18, 5.0)
    assert record["flagged"] is False and record["reason"] == "age"  # the cashier checked: still one who was asked
    assert asked_below(record["reason"], record["lowest_estimated_age"]) == 19.0
    assert asked_below("face_unclear", None) == asked_below("uncertain", 40.0) == -math.inf  # asked at any limit
    assert asked_below(None, 30.0) == 30.0 and asked_below("", None) == math.inf  # never estimated: never asked


def test_acknowledgement_clears_the_flag_for_good():
    gate = policy()
    gate.update(tracked([1, 2, 3], [19.0, 20.0, 40.0]), 0)
    assert gate.flagged_ids == {1, 2}
    events = gate.acknowledge(FRAME_MS, track_ids=[1, 3])  # 3 was never flagged: nothing to acknowledge
    assert [(e.type, e.track_id, e.flagged, e.reason) for e in events] == [(ACKNOWLEDGED, 1, False, "age")]
    assert gate.update(tracked([1, 2, 3], [15.0, 20.0, 40.0]), 2 * FRAME_MS) == []  # 1 is not flagged again
    np.testing.assert_array_equal(gate.decisions(tracked([1, 2, 3], [15.0, 20.0, 40.0])), [CHECKED, FLAGGED, CLEARED])
    assert [e.track_id for e in gate.acknowledge(3 * FRAME_MS)] == [2]  # default: every flagged customer
    assert gate.flagged_ids == set() and gate.acknowledge(4 * FRAME_MS) == []
    record = events[0].to_dict(18, 5.0)
    assert record["type"] == "acknowledged" and record["reason"] == "age"


def test_a_face_never_judged_is_flagged_unclear_after_the_configured_time():
    gate = policy(unclear_after_s=2.0)
    pending = [([1, 2], [math.nan, math.nan])] * 49  # 48 * 40 ms = 1.92 s
    types, flagged = run_timeline(gate, pending)
    assert not any(flagged)
    events = gate.update(tracked([1, 2], [math.nan, 30.0]), 50 * FRAME_MS)  # 2.0 s: 2 got an age in time
    assert [(e.type, e.track_id, e.reason) for e in events] == [(ALERT, 1, "face_unclear")]
    assert events[0].estimated_age is None
    # A customer who had an age once and then is not re-estimated is not "unclear".
    later = policy(unclear_after_s=2.0)
    later.update(tracked([1], [30.0]), 0)
    assert later.update(tracked([1], [math.nan]), 5000) == []


def test_an_unclear_customer_says_why_the_gate_last_refused_the_face():
    gate = policy(unclear_after_s=0.1)
    code = {reason: 1 + i for i, reason in enumerate(REFUSALS)}
    gate.update(tracked([1, 2], [math.nan, math.nan]).with_quality(np.array([code["too_small"], NOT_REFUSED])), 0)
    events = gate.update(tracked([1, 2], [math.nan, math.nan]).with_quality(np.array([code["blurred"], NOT_REFUSED])),
                         100)
    assert [(e.track_id, e.reason, e.refused_as) for e in events] == [(1, "face_unclear", "blurred"),
                                                                       (2, "face_unclear", None)]
    assert events[0].to_dict(18, 5.0)["refused_as"] == "blurred"
    by_age = policy()
    (alert,) = [e for e in by_age.update(tracked([3], [12.0]).with_quality(np.array([code["turned"]])), 0)
                if e.type == ALERT]
    assert alert.reason == "age" and alert.refused_as is None  # only an unclear face needs the why
    ended = gate.finish(500)
    assert [(e.type, e.refused_as) for e in ended] == [(TRACK_END, "blurred"), (TRACK_END, None)]


def test_estimates_that_disagree_flag_the_customer_as_uncertain():
    gate = policy(max_spread_years=10.0)
    assert gate.update(tracked([1, 2], [40.0, 40.0], spreads=[4.0, 10.0]), 0)[2:] == []  # 10 is not above 10
    events = gate.update(tracked([1, 2], [40.0, 41.0], spreads=[4.0, 10.5]), FRAME_MS)
    assert [(e.type, e.track_id, e.reason, e.age_spread_years) for e in events] == [(ALERT, 2, "uncertain", 10.5)]
    off = policy(max_spread_years=0.0)
    off.update(tracked([1], [40.0], spreads=[30.0]), 0)
    assert off.flagged_ids == set()


def test_policy_config_rejects_bad_fail_safe_values():
    with pytest.raises(ValueError, match="policy.unclear_after_s = -1"):
        PolicyConfig(unclear_after_s=-1)
    with pytest.raises(ValueError, match="policy.max_spread_years"):
        PolicyConfig(max_spread_years="wide")


def test_policy_adults_are_never_flagged_and_decisions_per_face():
    gate = policy(threshold=18, margin=6.0)
    events = gate.update(tracked([1, 2, 3], [40.0, 20.0, math.nan]), 0)
    assert [e.type for e in events] == [TRACK_START, TRACK_START, ALERT, TRACK_START]
    assert events[2].track_id == 2
    np.testing.assert_array_equal(gate.decisions(tracked([1, 2, 3], [40.0, 20.0, math.nan])),
                                  [CLEARED, FLAGGED, PENDING])


def test_policy_threshold_21_and_finish_ends_every_track():
    gate = policy(threshold=21, margin=0.0)
    events = gate.update(tracked([1, 2], [20.5, 21.5]), 0)
    assert [e.track_id for e in events if e.type == ALERT] == [1]
    ends = gate.finish(FRAME_MS)
    assert sorted(e.track_id for e in ends) == [1, 2] and all(e.type == TRACK_END for e in ends)
    assert len(gate) == 0


def test_policy_evicts_state_for_vanished_tracks():
    gate = policy(leave_ms=100)
    for customer in range(1, 300):
        gate.update(tracked([customer], [30.0]), customer * 1000)
    assert len(gate) == 1


def test_first_decision_needs_k_good_estimates_and_refused_frames_do_not_count():
    """The loop's order: quality gate, then due faces only among the good ones (K = min_estimates = 3)."""
    tracker = FaceTracker(TrackerConfig(min_estimates=3, estimate_interval_ms=0))
    gate = policy(unclear_after_s=0.0)
    good_frames = [True, False, True, False, False, True, True]
    decided_at = None
    for frame, good in enumerate(good_frames):
        refusal = np.array([NOT_REFUSED if good else 1 + REFUSALS.index("blurred")])
        faces = tracker.update(make_faces([[0, 0, 40, 40]]), frame * FRAME_MS).with_quality(refusal)
        due = tracker.due_for_estimate(faces, frame * FRAME_MS) & faces.quality_ok
        faces = tracker.add_estimates(faces, due, np.full(int(due.sum()), 15.0, np.float32), frame * FRAME_MS)
        if any(e.type == ALERT for e in gate.update(faces, frame * FRAME_MS)) and decided_at is None:
            decided_at = frame
        assert faces.estimates[0] == sum(good_frames[: frame + 1])
    assert decided_at == 5  # the third good frame, not the third frame


def test_draw_annotates_the_frame_in_place_with_a_banner_only_when_flagged():
    frame = np.zeros((360, 640, 3), np.uint8)
    faces = make_faces([[100, 100, 200, 220]], age_years=[15.0])
    annotated = draw(frame, faces, np.array([FLAGGED], np.int8), 18, 6.0)
    assert annotated is frame  # no copy of the frame: the loop owns it
    assert tuple(frame[5, 320]) == RED  # the CHECK ID banner
    calm = np.zeros((360, 640, 3), np.uint8)
    draw(calm, faces, np.array([CLEARED], np.int8), 18, 6.0)
    assert not calm[:40].any()  # no banner; the box and label sit lower
    assert not calm[-20:, -100:].any()  # no notice
    draw(calm, faces, np.array([CLEARED], np.int8), 18, 6.0, notice="poor light on 80% of recent faces")
    assert tuple(calm[-3, -3]) == AMBER and not calm[:40].any()  # the notice's corner, amber; still no banner


@pytest.mark.parametrize("reason", REFUSALS)
def test_a_refused_face_is_amber_with_what_would_help(reason):
    """The label says what the cashier can ask for: its amber box is as wide as that text."""
    import cv2

    frame = np.zeros((360, 640, 3), np.uint8)
    faces = make_faces([[100, 100, 200, 220]]).with_tracker_ids(np.array([7]))
    faces = faces.with_quality(np.array([1 + REFUSALS.index(reason)]))
    draw(frame, faces, np.array([PENDING], np.int8), 18, 6.0)
    above_box = (frame[:100] == AMBER).all(axis=-1)  # the label sits above the box's top edge (y 100)
    columns = np.flatnonzero(above_box.any(axis=0))
    hint = HINTS[1 + REFUSALS.index(reason)]
    (text_width, _), _ = cv2.getTextSize(f"#7 {hint}", cv2.FONT_HERSHEY_SIMPLEX, 0.6 * 0.5, 1)  # at 360 px: scale 0.5
    assert columns.size and columns[0] == 100 and columns[-1] - columns[0] == text_width + 6
    cleared = np.zeros((360, 640, 3), np.uint8)
    draw(cleared, faces.with_quality(np.array([NOT_REFUSED])), np.array([PENDING], np.int8), 18, 6.0)
    assert not (cleared == AMBER).all(axis=-1).any()  # a face not refused is grey while it waits
