"""The face-quality gate on synthetic faces: small, blurred, turned and fine."""

import cv2
import numpy as np
import pytest

from edge_app.conditions import CONDITION_BEGAN, CONDITION_ENDED, FACES_REFUSED, POOR_LIGHT, ConditionLog
from edge_app.config import QualityConfig
from edge_app.crop import crop_faces
from edge_app.faces import NOT_REFUSED, REFUSALS
from edge_app.quality import (
    BRIGHT_FACE_BRIGHTNESS,
    DARK_FACE_BRIGHTNESS,
    SHARPNESS_SMOOTHING_PX,
    FaceMeasures,
    LightMeter,
    RefusalMeter,
    brightness,
    geometry,
    light_warning,
    measure,
    passes,
    refusal_counts,
    refusal_warning,
    refusals,
    sharpness,
)
from tests.conftest import make_faces


def faces_with_eyes(eye_gap_px, nose_offset_px=0.0, n=1):
    faces = make_faces([[0, 0, 100, 100]] * n)
    keypoints = np.full((n, 6, 2), np.nan, np.float32)
    keypoints[:, 0] = (50 - eye_gap_px / 2, 40)
    keypoints[:, 1] = (50 + eye_gap_px / 2, 40)
    keypoints[:, 2] = (50 + nose_offset_px, 55)
    faces.keypoints = keypoints
    return faces


def textured_crop(seed=0, size=64):
    """A crop with fine detail, like skin, eyes and hair at 64 px."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), (size, size),
                      interpolation=cv2.INTER_LINEAR)


def test_geometry_measures_eye_distance_and_turn():
    distance, turn = geometry(faces_with_eyes(20, 0.0))
    assert distance[0] == pytest.approx(20) and turn[0] == pytest.approx(0)
    _, turned = geometry(faces_with_eyes(20, 8.0))
    assert turned[0] == pytest.approx(0.4)
    _, other_way = geometry(faces_with_eyes(20, -8.0))
    assert other_way[0] == pytest.approx(0.4)


def test_blur_lowers_sharpness():
    crop = textured_crop()
    blurred = cv2.GaussianBlur(crop, (0, 0), sigmaX=2.0)
    sharp, soft = sharpness(np.stack([crop, blurred]))
    assert soft < sharp / 5


def test_sharpness_does_not_depend_on_the_model_input_side():
    """A 96 px model must not see the same face as blurrier than a 64 px one did."""
    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8), (1280, 720), interpolation=cv2.INTER_LINEAR)
    frame = cv2.GaussianBlur(frame, (0, 0), 1.0)
    box = np.array([[560, 260, 720, 420]], np.float32)
    by_side = {side: sharpness(crop_faces(frame, box, side))[0] for side in (64, 96, 128)}
    grey_96 = cv2.cvtColor(crop_faces(frame, box, 96)[0], cv2.COLOR_RGB2GRAY).astype(np.float32)
    raw_96 = cv2.Laplacian(cv2.GaussianBlur(grey_96, (0, 0), SHARPNESS_SMOOTHING_PX), cv2.CV_32F).var()
    assert raw_96 < by_side[64] / 2  # what the measure would be without its fixed side
    for side in (96, 128):
        assert 0.8 < by_side[side] / by_side[64] < 1.25, by_side
    config = QualityConfig(min_eye_distance_px=0, min_smoothed_sharpness=float(by_side[64] / 2), max_turn=0)
    crops = [crop_faces(frame, box, side) for side in (64, 96, 128)]
    assert [passes(measure(faces_with_eyes(30), c), config)[0] for c in crops] == [True, True, True]


@pytest.mark.parametrize(("gap", "nose", "blur", "ok"), [
    (30, 0.0, 0.0, True),   # fine
    (6, 0.0, 0.0, False),   # too small
    (30, 15.0, 0.0, False),  # turned (0.5 eye distances: a profile)
    (30, 0.0, 3.0, False),  # blurred
])
def test_gate_refuses_small_blurred_and_turned_faces(gap, nose, blur, ok):
    crop = textured_crop()
    if blur:
        crop = cv2.GaussianBlur(crop, (0, 0), sigmaX=blur)
    config = QualityConfig(min_eye_distance_px=10, min_smoothed_sharpness=4, max_turn=0.35)
    assert passes(measure(faces_with_eyes(gap, nose), crop[None]), config).tolist() == [ok]


def test_refusals_name_the_first_check_each_face_fails():
    config = QualityConfig(min_eye_distance_px=10, min_smoothed_sharpness=4, max_turn=0.35)
    code = {reason: 1 + i for i, reason in enumerate(REFUSALS)}
    measures = FaceMeasures(  # fine; small; turned; blurred; small, turned and blurred; unmeasured
        eye_distance_px=np.array([30, 6, 30, 30, 6, np.nan], np.float32),
        turn=np.array([0.0, 0.0, 0.5, 0.0, 0.5, np.nan], np.float32),
        sharpness=np.array([50, 50, 50, 1, 1, np.nan], np.float32))
    assert refusals(measures, config).tolist() == [NOT_REFUSED, code["too_small"], code["turned"], code["blurred"],
                                                   code["too_small"], NOT_REFUSED]
    off = QualityConfig(min_eye_distance_px=0, min_smoothed_sharpness=4, max_turn=0.35)
    assert refusals(measures, off)[4] == code["turned"]  # with the size check off, the next check names it


def test_refusal_counts_and_the_operators_warning():
    faces = make_faces([[0, 0, 10, 10]] * 4).with_quality(np.array([0, 1, 1, 3]))
    assert refusal_counts(faces) == {"too_small": 2, "turned": 0, "blurred": 1}
    config = QualityConfig(min_eye_distance_px=12)
    assert refusal_warning(100, {"too_small": 30, "turned": 10, "blurred": 9}, config) is None  # 49%: quiet
    line = refusal_warning(100, {"too_small": 30, "turned": 10, "blurred": 10}, config)
    assert line.startswith("the quality gate refused 50% of the faces seen (30% too small, 10% turned, 10% blurred)")
    assert "mostly too small" in line and "needs 12 px between the eyes" in line
    assert "mostly blurred: focus the camera" in refusal_warning(10, {"too_small": 1, "turned": 0, "blurred": 8},
                                                                  config)
    assert refusal_warning(0, dict.fromkeys(REFUSALS, 0), config) is None


def test_refusal_meter_speaks_while_most_recent_faces_are_refused():
    def frame(*codes):
        return make_faces([[0, 0, 10, 10]] * len(codes)).with_quality(np.array(codes))

    meter = RefusalMeter(window=20, min_sightings=10)
    assert meter.add(frame(3, 3, 0, 1)) == {"too_small": 1, "turned": 0, "blurred": 2}
    assert meter.notice() is None  # 4 sightings: too few
    for _ in range(3):
        meter.add(frame(3, 0))
    assert meter.notice() == "60% of recent faces refused, mostly blurred"  # 6 of 10
    for _ in range(5):
        meter.add(frame(0, 0))
    assert meter.notice() is None  # 6 of 20
    for _ in range(5):
        meter.add(frame(2, 2))
    assert meter.notice() == "50% of recent faces refused, mostly turned"  # the first frames have left the window
    assert meter.add(frame()) == dict.fromkeys(REFUSALS, 0)  # a frame without faces
    with pytest.raises(ValueError, match="min_sightings"):
        RefusalMeter(window=5, min_sightings=6)


def test_camera_noise_does_not_make_a_blurred_real_face_pass(clip_frames):
    """Noise is all edges to a bare Laplacian: the gate must still refuse a blurred face under it.

    The clip's frame is brought to the till camera's 720p (faces ~150 px wide), blurred, and
    given sensor noise of a sigma a shop camera shows in dim light.
    """
    from edge_app.config import DetectorConfig
    from edge_app.detect import FaceDetector

    rgb = cv2.resize(cv2.cvtColor(clip_frames[35], cv2.COLOR_BGR2RGB), (1280, 720), interpolation=cv2.INTER_CUBIC)
    with FaceDetector(DetectorConfig(), video=False) as detector:
        faces = detector.detect(rgb)
    assert len(faces) == 3
    rng = np.random.default_rng(0)

    def judged(image, noise_sigma=0.0):
        if noise_sigma:
            image = np.clip(image + rng.normal(0, noise_sigma, image.shape), 0, 255).astype(np.uint8)
        measures = measure(faces, crop_faces(image, faces.xyxy, 64, keypoints=faces.keypoints))
        return measures.sharpness, passes(measures, QualityConfig())

    blurred = cv2.GaussianBlur(rgb, (0, 0), 6.0)
    clean_sharpness, clean_ok = judged(rgb)
    blurred_sharpness, blurred_ok = judged(blurred)
    assert clean_ok.all() and not blurred_ok.any()
    for sigma in (6, 12):
        assert judged(rgb, sigma)[1].all(), sigma
        noisy_sharpness, noisy_ok = judged(blurred, sigma)
        assert not noisy_ok.any(), (sigma, noisy_sharpness)
        # what the noise adds is small beside what the blur took away
        assert np.all(noisy_sharpness - blurred_sharpness < 0.25 * (clean_sharpness - blurred_sharpness)), sigma


def test_unknown_measures_pass_and_zero_turns_a_check_off():
    no_keypoints = make_faces([[0, 0, 10, 10]])  # a detector without keypoints
    assert passes(measure(no_keypoints), QualityConfig()).tolist() == [True]
    tiny = faces_with_eyes(3)
    assert passes(measure(tiny), QualityConfig(min_eye_distance_px=0)).tolist() == [True]


def test_quality_config_rejects_bad_values():
    with pytest.raises(ValueError, match="quality.max_turn = -0.1"):
        QualityConfig(max_turn=-0.1)


def test_gate_on_real_faces_crops_only_the_good_due_faces(clip_frames):
    from edge_app.config import DetectorConfig
    from edge_app.crop import CropSettings
    from edge_app.detect import FaceDetector
    from edge_app.quality import gate

    rgb = cv2.cvtColor(clip_frames[35], cv2.COLOR_BGR2RGB)
    with FaceDetector(DetectorConfig(), video=False) as detector:
        faces = detector.detect(rgb)
    assert len(faces) == 3
    due = np.array([True, True, False])
    kept, kept_due, crops = gate(rgb, faces, due, 64, CropSettings(align=True), QualityConfig())
    assert kept_due.tolist() == [True, True, False] and crops.shape == (2, 1, 64, 64, 3)
    assert kept.quality_ok.all()
    strict = QualityConfig(min_smoothed_sharpness=1e5)  # nothing is that sharp: due faces refused on their crops
    refused, refused_due, none = gate(rgb, faces, due, 64, CropSettings(align=True), strict)
    assert not refused_due.any() and none.shape == (0, 1, 64, 64, 3)
    assert refused.quality_ok.tolist() == [False, False, True]  # the face not due was not cropped nor judged
    assert refusal_counts(refused) == {"too_small": 0, "turned": 0, "blurred": 2}
    views = CropSettings(align=True, view_margins=(0.05, 0.2))  # the card's test-time views: all cut, view 0 judged
    _, views_due, viewed = gate(rgb, faces, due, 64, views, QualityConfig())
    assert views_due.tolist() == [True, True, False] and viewed.shape == (2, 3, 64, 64, 3)
    np.testing.assert_array_equal(viewed[:, 0], crops[:, 0])
    tiny = QualityConfig(min_eye_distance_px=500)  # refused on geometry before any crop
    small, small_due, _ = gate(rgb, faces, due, 64, CropSettings(align=True), tiny)
    assert not small_due.any() and not small.quality_ok.any()
    assert refusal_counts(small) == {"too_small": 3, "turned": 0, "blurred": 0}  # the face not due too


def test_brightness_reads_the_face_in_the_middle_not_its_framing():
    crops = np.full((3, 64, 64, 3), 250, np.uint8)  # a glaring window around each face
    crops[:, 13:51, 13:51] = np.array([[120, 120, 120], [10, 10, 10], [200, 100, 50]])[:, None, None]
    level = brightness(crops)
    assert level[0] == pytest.approx(120, abs=0.5) and level[1] == pytest.approx(10, abs=0.5)
    assert level[2] == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50, abs=0.5)  # luma, as cv2's grey
    assert brightness(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0,)


def test_poor_light_is_counted_and_the_operator_told_past_a_share():
    dark, fine, bright = (np.full((1, 64, 64, 3), level, np.uint8) for level in (
        DARK_FACE_BRIGHTNESS - 5, 128, BRIGHT_FACE_BRIGHTNESS + 5))
    meter = LightMeter(window=40, min_estimates=10)
    assert meter.add(np.concatenate([dark, fine, fine, bright, bright])) == (1, 2)
    assert meter.notice() is None  # 5 estimates: too few to speak of the light
    for _ in range(5):
        meter.add(bright)
    assert meter.notice() == "poor light on 80% of recent faces"  # 8 of 10
    for _ in range(30):
        meter.add(fine)
    assert meter.notice() == "poor light on 20% of recent faces"  # 8 of 40: the share it takes
    for _ in range(5):
        meter.add(fine)
    assert meter.notice() is None  # 5 of the last 40: the first five have left the window
    assert meter.add(fine[:0]) == (0, 0)  # a frame without estimates
    assert light_warning(100, 5, 10) is None  # 15% in poor light: under the 20% it takes
    assert light_warning(0, 0, 0) is None
    line = light_warning(100, 0, 30)
    assert "30% of age estimates were of faces too bright" in line and "dark" not in line
    both = light_warning(100, 15, 10)
    assert "15% of age estimates were of faces too dark" in both and "10%" in both and "bright" in both


def test_condition_log_writes_a_beginning_and_an_end_not_an_event_per_frame():
    log = ConditionLog(quiet_ms=1000)
    light = ["poor light on 20% of recent faces", "poor light on 25% of recent faces"]
    assert log.update({POOR_LIGHT: None, FACES_REFUSED: None}, 0) == []
    began = log.update({POOR_LIGHT: light[0], FACES_REFUSED: None}, 100)
    assert [(e.type, e.condition, e.timestamp_ms, e.notice, e.duration_s) for e in began] == [
        (CONDITION_BEGAN, POOR_LIGHT, 100, light[0], None)]
    # the share hovers at its limit: silent 900 ms, then speaking again, is the same condition
    assert log.update({POOR_LIGHT: None}, 200) == log.update({POOR_LIGHT: None}, 1099) == []
    assert log.update({POOR_LIGHT: light[1]}, 1100) == []
    assert log.update({POOR_LIGHT: None}, 2000) == []
    ended = log.update({POOR_LIGHT: None}, 2100)  # 1000 ms silent since its last notice
    assert [(e.type, e.condition, e.timestamp_ms, e.notice, e.duration_s) for e in ended] == [
        (CONDITION_ENDED, POOR_LIGHT, 2100, light[1], 1.0)]
    assert log.update({POOR_LIGHT: None}, 5000) == []  # ended once
    assert log.seconds == {POOR_LIGHT: 1.0, FACES_REFUSED: 0.0}

    # each condition on its own; the run's end ends those still on, the later notice as said last
    refused = "60% of recent faces refused, mostly blurred"
    assert [e.condition for e in log.update({POOR_LIGHT: light[0], FACES_REFUSED: refused}, 6000)] == [
        POOR_LIGHT, FACES_REFUSED]
    ended = log.update({POOR_LIGHT: None, FACES_REFUSED: refused}, 7500)  # one frame of poor light: 0 s
    assert [(e.type, e.condition, e.timestamp_ms, e.duration_s) for e in ended] == [
        (CONDITION_ENDED, POOR_LIGHT, 7500, 0.0)]
    finished = log.finish(8000)
    assert [(e.type, e.condition, e.timestamp_ms, e.duration_s) for e in finished] == [
        (CONDITION_ENDED, FACES_REFUSED, 8000, 1.5)]
    assert log.finish(9000) == []
    assert log.seconds == {POOR_LIGHT: 1.0, FACES_REFUSED: 1.5}
    record = finished[0].to_dict(18, 6.789)
    assert record == {"type": "condition_ended", "condition": "faces_refused", "notice": refused,
                      "duration_s": 1.5, "threshold_age": 18, "margin_years": 6.79}
    with pytest.raises(ValueError, match="quiet_ms must be >= 0, got -1"):
        ConditionLog(quiet_ms=-1)
