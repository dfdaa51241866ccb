import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_app.age_model import AgeRegressor
from edge_app.config import MODELS_DIR, AgeModelConfig, DetectorConfig
from edge_app.detect import FaceDetector
from edge_app.errors import AgecheckError
from edge_app.model_card import ModelCard, card_path_for
from edge_app.track import box_iou


def rgb(frame):
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def test_full_range_detector_finds_the_three_customers(clip_frames):
    with FaceDetector(DetectorConfig()) as detector:
        counts = [len(detector.detect(rgb(f), timestamp_ms=i * 80)) for i, f in enumerate(clip_frames)]
        faces = detector.detect(rgb(clip_frames[-1]), timestamp_ms=len(clip_frames) * 80)
    assert counts[20:] == [3] * 21  # all three people once they are close enough
    assert len(faces) == 3 and (faces.confidence >= 0.5).all()
    centres_x = sorted(((faces.xyxy[:, 0] + faces.xyxy[:, 2]) / 2).tolist())
    assert centres_x == pytest.approx([77, 227, 375], abs=15)
    sides = faces.xyxy[:, 2] - faces.xyxy[:, 0]
    assert ((sides > 40) & (sides < 80)).all()


def test_short_range_detector_misses_distant_faces(clip_frames):
    # Why the full-range model is the default: on this clip the short-range one misses most faces.
    short = DetectorConfig(model_path=str(MODELS_DIR / "face_detection_short_range.tflite"))
    with FaceDetector(short) as detector:
        found = sum(len(detector.detect(rgb(f), timestamp_ms=i * 80)) for i, f in enumerate(clip_frames))
    assert found < 41 * 3 / 2


def test_detector_shrinks_noisy_frames_before_blazeface_and_answers_in_frame_pixels(clip_frames):
    """A 720p frame with camera noise: BlazeFace misses faces unless the frame is first averaged down."""
    big = cv2.resize(rgb(clip_frames[-1]), (1280, 720), interpolation=cv2.INTER_CUBIC)
    noisy = np.clip(big + np.random.default_rng(0).normal(0, 20, big.shape), 0, 255).astype(np.uint8)
    with FaceDetector(DetectorConfig(max_input_side_px=0), video=False) as detector:
        reference = detector.detect(big)  # the clean frame as it is
        unshrunk = detector.detect(noisy)
    with FaceDetector(DetectorConfig(), video=False) as detector:  # the default: 480 px, so 3 x 3 blocks here
        shrunk = detector.detect(noisy)
        clean = detector.detect(big)
    assert len(reference) == 3 and len(unshrunk) < 3  # why the setting exists
    assert len(shrunk) == 3
    # on the clean frame the shrunk detection puts the eyes where the whole frame's does
    order = np.argsort(reference.xyxy[:, 0]), np.argsort(clean.xyxy[:, 0])
    eyes, clean_eyes = reference.keypoints[order[0], :2], clean.keypoints[order[1], :2]
    eye_distance = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=1)
    assert (np.linalg.norm(clean_eyes - eyes, axis=2).max(axis=1) < 0.15 * eye_distance).all()
    # boxes and keypoints in the 1280x720 frame's pixels, where the clean frame has its faces
    assert (box_iou(reference.xyxy, shrunk.xyxy).max(axis=1) > 0.5).all()
    inside = ((shrunk.keypoints >= shrunk.xyxy[:, None, :2]) & (shrunk.keypoints <= shrunk.xyxy[:, None, 2:])).all(-1)
    assert inside[:, :3].all()  # eyes and nose tip


def test_detector_finds_nothing_in_a_blank_frame():
    with FaceDetector(DetectorConfig(), video=False) as detector:
        assert len(detector.detect(np.full((270, 480, 3), 128, np.uint8))) == 0


@pytest.mark.parametrize("timestamps", [(100, 100), (100, 50)])
def test_detector_rejects_timestamps_that_do_not_increase(clip_frames, timestamps):
    with FaceDetector(DetectorConfig()) as detector:
        detector.detect(rgb(clip_frames[0]), timestamp_ms=timestamps[0])
        with pytest.raises(ValueError, match="timestamp_ms must increase"):
            detector.detect(rgb(clip_frames[1]), timestamp_ms=timestamps[1])


def test_detector_reuses_its_last_faces_within_min_interval(clip_frames):
    blank = np.full_like(rgb(clip_frames[-1]), 128)
    with FaceDetector(DetectorConfig(min_interval_ms=25)) as detector:
        found = detector.detect(rgb(clip_frames[-1]), timestamp_ms=1000)
        carried = detector.detect(blank, timestamp_ms=1017)  # 17 ms later: BlazeFace does not run
        fresh = detector.detect(blank, timestamp_ms=1034)  # 34 ms after the last detection: it does
    assert len(found) == 3 and carried is found
    assert len(fresh) == 0 and detector.detections == 2


def test_detector_with_no_interval_detects_every_frame(clip_frames):
    blank = np.full_like(rgb(clip_frames[-1]), 128)
    with FaceDetector(DetectorConfig(min_interval_ms=0)) as detector:
        assert len(detector.detect(rgb(clip_frames[-1]), timestamp_ms=1000)) == 3
        assert len(detector.detect(blank, timestamp_ms=1001)) == 0
    assert detector.detections == 2


def test_native_lines_of_the_first_detections_are_held_back(clip_frames, capfd):
    """MediaPipe's start-up chatter, and now and then a LiteRT note on the second detection,
    stay off the cashier's console; what native code prints later is shown."""
    from edge_app.detect import WARM_UP_DETECTIONS
    from edge_app.logs import show_native_logs

    show_native_logs(False)  # the default, whatever an earlier in-process command set
    frame = rgb(clip_frames[-1])
    with FaceDetector(DetectorConfig(min_interval_ms=0)) as detector:
        real = detector._detector.detect_for_video

        def noisy(image, timestamp_ms):  # the real graph, plus one native line of our own
            os.write(2, f"native line of detection {detector.detections + 1}\n".encode())
            return real(image, timestamp_ms)

        detector._detector.detect_for_video = noisy
        capfd.readouterr()
        found = [len(detector.detect(frame, timestamp_ms=t)) for t in range(1, WARM_UP_DETECTIONS + 3)]
    assert found == [3] * (WARM_UP_DETECTIONS + 2)
    shown = [line for line in capfd.readouterr().err.splitlines() if line.startswith("native line")]
    assert WARM_UP_DETECTIONS >= 2
    assert shown == [f"native line of detection {n}" for n in (WARM_UP_DETECTIONS + 1, WARM_UP_DETECTIONS + 2)]


def test_detector_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(AgecheckError, match="does not exist"):
        FaceDetector(DetectorConfig(model_path=str(tmp_path / "nope.tflite")))


def test_edge_app_never_imports_tensorflow():
    code = "import sys, edge_app.cli, edge_app.pipeline; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def grey_crops(levels, size=32):
    return np.stack([np.full((size, size, 3), level, np.uint8) for level in levels])


def test_age_model_predicts_known_ages_in_batches(brightness_tflite):
    regressor = AgeRegressor(AgeModelConfig(model_path=str(brightness_tflite), max_batch=4))
    levels = [0, 51, 102, 153, 204, 255, 128]
    expected = np.array(levels) * 100 / 255
    batched = regressor.predict(grey_crops(levels))  # 7 crops: batches of 4 and 3
    single = np.concatenate([regressor.predict(grey_crops([level])) for level in levels])
    assert batched.shape == (7,) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, expected, atol=2.0)  # int8 quantisation error
    np.testing.assert_allclose(batched, single, atol=1e-4)  # batching changes nothing
    assert regressor.predict(np.empty((0, 32, 32, 3), np.uint8)).shape == (0,)
    assert regressor.card.mae_years == 5.0 and regressor.input_size == 32


def test_age_model_rejects_wrong_crops(brightness_tflite):
    regressor = AgeRegressor(AgeModelConfig(model_path=str(brightness_tflite)))
    with pytest.raises(ValueError, match="crops must be \\(n, 32, 32, 3\\) uint8"):
        regressor.predict(np.zeros((1, 64, 64, 3), np.uint8))


def test_age_model_averages_each_faces_views(brightness_tflite):
    regressor = AgeRegressor(AgeModelConfig(model_path=str(brightness_tflite), max_batch=4))
    views = np.stack([grey_crops([0, 102, 255]), grey_crops([51, 153, 255])], axis=0)  # 2 faces, 3 views each
    ages = regressor.predict_views(views)  # 6 crops: batches of 4 and 2
    each = regressor.predict(views.reshape(-1, 32, 32, 3)).reshape(2, 3)
    assert ages.shape == (2,) and ages.dtype == np.float32
    np.testing.assert_allclose(ages, each.mean(axis=1), atol=1e-4)
    np.testing.assert_allclose(ages, [(0 + 102 + 255) / 2.55 / 3, (51 + 153 + 255) / 2.55 / 3], atol=2.0)
    assert regressor.predict_views(np.empty((0, 3, 32, 32, 3), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match="views must be \\(n, views, S, S, 3\\)"):
        regressor.predict_views(grey_crops([0]))


def copy_model(brightness_tflite, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(brightness_tflite.read_bytes())
    card_path_for(model).write_text(card_path_for(brightness_tflite).read_text())
    return model


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda m, c: c.unlink(), "model card .* not found"),
        (lambda m, c: c.write_text("{not json"), "not valid JSON"),
        (lambda m, c: c.write_text(json.dumps({"architecture": "x"})), "key 'input_size' must be int"),
        (lambda m, c: m.write_bytes(m.read_bytes()[:-10] + b"0123456789"), "describes another model"),
        (lambda m, c: c.write_text(c.read_text().replace('"input_size": 32', '"input_size": 64')),
         "takes input .* but its card says"),
        (lambda m, c: c.write_text(c.read_text().replace('"pad": "edge"', '"pad": "wrap"')), "bad 'crop'"),
        (lambda m, c: c.write_text(c.read_text().replace('"pad": "edge"', '"pad": "edge", "view_margins": 0.2')),
         "bad 'crop' settings: crop view_margins must be a list of numbers"),
        (lambda m, c: m.unlink(), "does not exist"),
        (lambda m, c: c.write_text(json.dumps(json.loads(c.read_text()) | {"calibration": {"tradeoff": [
            {"limit_years": 20, "under_18": 0.5, "age_13_17": 0.3, "age_18_24": 0.1, "age_25_plus": 0.0},
            {"limit_years": 19, "under_18": 0.4, "age_13_17": 0.2, "age_18_24": 0.1, "age_25_plus": 0.0}]}})),
         "'calibration.tradeoff' must be .* rising limit_years"),
        (lambda m, c: c.write_text(json.dumps(json.loads(c.read_text()) | {"calibration": {"tradeoff": [
            {"limit_years": 19, "under_18": 0.4, "age_13_17": 0.2, "age_18_24": 0.1, "age_25_plus": 0.0,
             "under_21": 0.3},
            {"limit_years": 20, "under_18": 0.5, "age_13_17": 0.3, "age_18_24": 0.1, "age_25_plus": 0.0}]}})),
         r"each row alike, under_N for N in 16-21"),
    ],
)
def test_age_model_refuses_bad_model_or_card(brightness_tflite, tmp_path, damage, match):
    model = copy_model(brightness_tflite, tmp_path)
    damage(model, card_path_for(model))
    with pytest.raises(AgecheckError, match=match):
        AgeRegressor(AgeModelConfig(model_path=str(model)))


def test_corrupt_tflite_with_matching_card_is_a_clear_error(brightness_tflite, tmp_path):
    model = copy_model(brightness_tflite, tmp_path)
    model.write_bytes(b"not a flatbuffer at all" * 10)
    card = json.loads(card_path_for(model).read_text())
    from edge_app.model_card import sha256_of

    card["tflite_sha256"] = sha256_of(model)
    card_path_for(model).write_text(json.dumps(card))
    with pytest.raises(AgecheckError, match="could not be loaded"):
        AgeRegressor(AgeModelConfig(model_path=str(model)))
    assert ModelCard.load(model).mae_years == 5.0
    assert ModelCard.load(model).validation_split == (0.2, 42)  # a card without a validation entry


@pytest.mark.parametrize("angle", [-20.0, 20.0])
def test_app_and_training_crops_level_a_rotated_real_face(clip_frames, angle):
    """A real face rotated by 20 degrees comes out level from the app's crop and from training's."""
    from edge_app.crop import CropSettings, crop_faces, eye_angles_deg
    from tests.conftest import face_photos
    from training.data import detect_in_photo

    photo = cv2.cvtColor(face_photos(clip_frames, 3, size=160)[1], cv2.COLOR_BGR2RGB)
    matrix = cv2.getRotationMatrix2D((79.5, 79.5), angle, 1.0)
    rotated = cv2.warpAffine(photo, matrix, (160, 160), borderMode=cv2.BORDER_REPLICATE)
    config = DetectorConfig(model_path=str(MODELS_DIR / "face_detection_full_range_sparse.tflite"))
    with FaceDetector(config, video=True) as app_detector, FaceDetector(config, video=False) as photo_detector:
        app_faces = app_detector.detect(rotated, timestamp_ms=0)  # the app: a camera frame
        photo_faces = detect_in_photo(photo_detector, rotated, canvas=3.0)  # training: a photo in a canvas
        for faces in (app_faces, photo_faces):
            assert len(faces) >= 1
            best = faces[int(np.argmax(faces.confidence))]
            assert abs(eye_angles_deg(best.keypoints)[0] + angle) < 10  # the detector sees the tilt
            measured = {}
            for align in (True, False):
                crop = crop_faces(rotated, best.xyxy, 128, CropSettings(margin=0.3, align=align), best.keypoints)[0]
                again = detect_in_photo(photo_detector, crop, canvas=3.0)  # measure the crop's eye line
                assert len(again) == 1
                measured[align] = abs(eye_angles_deg(again.keypoints)[0])
            # BlazeFace's eye keypoints on a small GIF face wobble by a few degrees either way.
            assert measured[True] < 8 and measured[False] > 12 and measured[True] < measured[False] / 2
