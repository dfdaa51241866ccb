from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from edge_app.crop import CropSettings, crop_face_views, crop_faces, square_boxes
from edge_app.faces import UNTRACKED, Faces
from tests.conftest import make_faces


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        ({"xyxy": [[0, 0, 10, 10]], "confidence": [0.9]}, does_not_raise()),
        ({"xyxy": np.empty((0, 4)), "confidence": np.empty(0)}, does_not_raise()),
        ({"xyxy": [[0, 0, 10, 10]], "confidence": [0.9, 0.8]}, pytest.raises(ValueError, match="confidence")),
        ({"xyxy": [[10, 0, 0, 10]], "confidence": [0.9]}, pytest.raises(ValueError, match="x_max >= x_min")),
        ({"xyxy": [[0, 0, 10, 10]], "confidence": [0.9], "tracker_id": [1, 2]},
         pytest.raises(ValueError, match="tracker_id")),
        ({"xyxy": [[0, 0, 10, 10]], "confidence": [0.9], "age_years": [[30.0]]},
         pytest.raises(ValueError, match="age_years")),
        ({"xyxy": [[0, 0, 10, 10]], "confidence": [0.9], "refusal": [True]},
         pytest.raises(ValueError, match="reason codes")),  # not quality_ok's booleans, which mean the opposite
        ({"xyxy": [[0, 0, 10, 10]], "confidence": [0.9], "refusal": [4]},
         pytest.raises(ValueError, match=r"refusal codes must be in \[0, 3\]")),
    ],
)
def test_faces_validation(kwargs, expectation):
    with expectation:
        Faces(**kwargs)


def test_faces_defaults_mask_and_copies():
    faces = make_faces([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], confidence=[0.9, 0.3, 0.6])
    assert len(faces) == 3 and (faces.tracker_id == UNTRACKED).all() and np.isnan(faces.age_years).all()
    confident = faces[faces.confidence > 0.5]
    assert len(confident) == 2
    np.testing.assert_array_equal(confident.xyxy[1], [1, 1, 2, 2])
    aged = confident.with_ages(np.array([17.0, 40.0]), np.array([3, 4]))
    assert aged.age_years.tolist() == [17.0, 40.0] and aged.estimates.tolist() == [3, 4]
    assert np.isnan(confident.age_years).all()  # copies, not views
    assert len(Faces.empty()) == 0 and len(faces[1]) == 1
    judged = faces.with_quality(np.array([0, 1, 3]))
    assert judged.quality_ok.tolist() == [True, False, False] and faces.quality_ok.all()
    assert judged[judged.confidence > 0.5].refusal.tolist() == [0, 3]


@pytest.mark.parametrize(
    ("xyxy", "margin", "expected"),
    [
        ([[10, 10, 30, 30]], 0.0, [[10, 10, 30, 30]]),  # already square
        ([[10, 10, 30, 50]], 0.0, [[0, 10, 40, 50]]),  # tall box squared around its centre
        ([[10, 10, 30, 30]], 0.5, [[0, 0, 40, 40]]),  # half a side added on each side
        ([[0, 0, 0, 0]], 0.0, [[-0.5, -0.5, 0.5, 0.5]]),  # degenerate boxes keep a 1 px side
    ],
)
def test_square_boxes(xyxy, margin, expected):
    np.testing.assert_allclose(square_boxes(np.array(xyxy), margin), expected)


def test_crop_faces_pads_at_edges_by_setting():
    image = np.full((40, 60, 3), 200, np.uint8)
    box = np.array([[-10, -10, 10, 10]], np.float32)  # three quarters outside the frame
    black = crop_faces(image, box, 20, CropSettings(margin=0.0, pad="constant"))
    edge = crop_faces(image, box, 20, CropSettings(margin=0.0, pad="edge"))
    assert black.shape == (1, 20, 20, 3) and black.dtype == np.uint8
    assert black[0, 0, 0, 0] == 0 and black[0, -1, -1, 0] == 200
    assert (edge == 200).all()


def test_crop_faces_resizes_real_content():
    image = np.zeros((100, 100, 3), np.uint8)
    image[40:60, 40:60] = 255  # a bright square "face"
    crops = crop_faces(image, np.array([[40, 40, 60, 60]]), 32, CropSettings(margin=0.0))
    assert crops.shape == (1, 32, 32, 3) and crops.mean() > 250
    wider = crop_faces(image, np.array([[40, 40, 60, 60]]), 32, CropSettings(margin=0.5))
    assert wider.mean() == pytest.approx(255 / 4, abs=2)  # side doubled: the square fills a quarter


def test_crop_faces_box_entirely_outside_and_empty():
    image = np.full((20, 20, 3), 9, np.uint8)
    assert (crop_faces(image, np.array([[100, 100, 120, 120]]), 8) == 0).all()
    assert crop_faces(image, np.empty((0, 4)), 8).shape == (0, 8, 8, 3)


@pytest.mark.parametrize(
    ("image", "size", "match"),
    [
        (np.zeros((10, 10), np.uint8), 8, "must be \\(H, W, 3\\) uint8"),
        (np.zeros((10, 10, 3), np.float32), 8, "must be \\(H, W, 3\\) uint8"),
        (np.zeros((10, 10, 3), np.uint8), 0, "size must be >= 1"),
    ],
)
def test_crop_faces_rejects_bad_input(image, size, match):
    with pytest.raises(ValueError, match=match):
        crop_faces(image, np.array([[0, 0, 5, 5]]), size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"margin": -0.1}, "margin must be in"), ({"pad": "mirror"}, "pad must be"),
     ({"view_margins": [0.05, 2.5]}, "view_margins must each be in"),
     ({"view_margins": ["wide"]}, "view_margins must be a list of numbers")],
)
def test_crop_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CropSettings(**kwargs)


def test_crop_face_views_cut_each_face_at_every_margin_of_the_card():
    image = np.zeros((100, 100, 3), np.uint8)
    image[40:60, 40:60] = 255  # a bright square "face"
    boxes = np.array([[40, 40, 60, 60], [40, 40, 60, 60]])
    settings = CropSettings(margin=0.0, view_margins=[0.5, 0.25])  # as a card's JSON list
    assert settings.view_margins == (0.5, 0.25)
    assert [view.margin for view in settings.views] == [0.0, 0.5, 0.25]
    views = crop_face_views(image, boxes, 32, settings)
    assert views.shape == (2, 3, 32, 32, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[:, 0], crop_faces(image, boxes, 32, settings))  # view 0: the card's framing
    fill = views.mean(axis=(2, 3, 4))[0]  # the square's share of each view: 1, 1/4 (side doubled), 1/2.25
    np.testing.assert_allclose(fill, [255, 255 / 4, 255 / 2.25], atol=3)
    assert crop_face_views(image, np.empty((0, 4)), 32, settings).shape == (0, 3, 32, 32, 3)
    assert crop_face_views(image, boxes, 32, CropSettings()).shape == (2, 1, 32, 32, 3)  # no views: one


def test_crop_settings_record_views_only_where_there_are_any():
    assert CropSettings().to_dict() == {"margin": 0.1, "pad": "edge", "align": False}  # as cards before views
    settings = CropSettings(view_margins=(0.05, 0.15))
    assert settings.to_dict()["view_margins"] == [0.05, 0.15]
    assert CropSettings(**settings.to_dict()) == settings


def _two_dots(angle_deg, size=200, centre=(100, 100), half_gap=30):
    """A grey image with two bright 'eyes' on a line at ``angle_deg`` through ``centre``, and their keypoints."""
    import cv2

    image = np.full((size, size, 3), 60, np.uint8)
    rad = np.radians(angle_deg)
    offset = np.array([np.cos(rad), np.sin(rad)]) * half_gap
    eyes = np.array([np.array(centre) - offset, np.array(centre) + offset])
    for x, y in eyes:
        cv2.circle(image, (int(round(x)), int(round(y))), 5, (255, 255, 255), -1)
    keypoints = np.full((1, 6, 2), np.nan, np.float32)
    keypoints[0, :2] = eyes
    return image, keypoints


def _dot_rows(crop):
    """Row (y) of the brightness centroid of the left and right halves of a crop."""
    grey = crop.astype(float).mean(axis=2)
    rows = []
    for half in (grey[:, : grey.shape[1] // 2], grey[:, grey.shape[1] // 2 :]):
        weight = np.clip(half - 128, 0, None)
        rows.append((weight.sum(axis=1) * np.arange(len(weight))).sum() / weight.sum())
    return rows


@pytest.mark.parametrize("angle", [-25.0, -10.0, 15.0, 25.0])
def test_aligned_crop_levels_the_eyes(angle):
    from edge_app.crop import eye_angles_deg

    image, keypoints = _two_dots(angle)
    box = np.array([[60, 60, 140, 140]], np.float32)
    assert eye_angles_deg(keypoints)[0] == pytest.approx(angle, abs=0.01)
    level = crop_faces(image, box, 64, CropSettings(margin=0.2, align=True), keypoints)[0]
    tilted = crop_faces(image, box, 64, CropSettings(margin=0.2, align=False), keypoints)[0]
    left, right = _dot_rows(level)
    assert abs(left - right) < 1.0  # level within a pixel
    tl, tr = _dot_rows(tilted)
    expected = 2 * 30 * abs(np.sin(np.radians(angle))) * 64 / 112  # the eyes' height gap, in crop pixels
    assert abs(abs(tl - tr) - expected) < 1.5  # without alignment the tilt stays
    assert abs((left + right) / 2 - 31.5) < 1.5  # rotated about the box centre: the eyes stay in the middle


def test_aligned_crop_without_keypoints_or_with_level_eyes_is_the_plain_crop():
    image, keypoints = _two_dots(0.0)
    box = np.array([[60, 60, 140, 140]], np.float32)
    plain = crop_faces(image, box, 64, CropSettings())
    np.testing.assert_array_equal(crop_faces(image, box, 64, CropSettings(align=True)), plain)
    np.testing.assert_array_equal(crop_faces(image, box, 64, CropSettings(align=True), keypoints), plain)
    unknown = np.full((1, 6, 2), np.nan, np.float32)
    np.testing.assert_array_equal(crop_faces(image, box, 64, CropSettings(align=True), unknown), plain)


def test_eye_order_swapped_by_the_detector_never_turns_a_face_upside_down():
    from edge_app.crop import eye_angles_deg

    _, keypoints = _two_dots(10.0)
    swapped = keypoints[:, [1, 0, 2, 3, 4, 5]]
    assert eye_angles_deg(swapped)[0] == pytest.approx(10.0, abs=0.01)
