"""Each named corruption: seeded per photo, changes the image, keeps its shape and dtype."""

import cv2
import numpy as np
import pytest

from training.degrade import DEGRADATIONS, degrade

REQUIRED = {"downscale", "blur", "motion_blur", "jpeg", "noise", "grey", "colour_cast", "low_light",
            "overexposed", "old_print", "rotate", "camera"}


@pytest.fixture(scope="module")
def photo(clip_frames):
    """A 200x200 close-up of a real face from the bundled clip, as RGB."""
    frame = cv2.cvtColor(clip_frames[30], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(frame[40:200, 0:160], (200, 200)))


def test_every_corruption_the_product_needs_is_there():
    assert REQUIRED <= set(DEGRADATIONS)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_corruption_is_seeded_changes_the_image_and_keeps_its_type(photo, name):
    out = degrade(photo, name, seed=3, key="a.jpg")
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - photo.astype(int)).mean() > 1.0  # visibly changed
    np.testing.assert_array_equal(out, degrade(photo, name, seed=3, key="a.jpg"))  # same seed, same pixels
    assert photo.flags.writeable and not np.shares_memory(out, photo)  # the input is left alone


@pytest.mark.parametrize("name", sorted(set(DEGRADATIONS) - {"grey"}))
def test_each_photo_draws_its_own_strength(photo, name):
    by_key = [degrade(photo, name, seed=3, key=f"{k}.jpg") for k in "abcde"]
    by_seed = [degrade(photo, name, seed=s, key="a.jpg") for s in range(5)]
    for draws in (by_key, by_seed):  # discrete draws (JPEG quality) may repeat, but not all five
        assert any(not np.array_equal(draws[0], other) for other in draws[1:])


def test_degradations_do_what_their_names_say(photo):
    grey = degrade(photo, "grey", 0, "x")
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    sharpness = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    for softer in ("blur", "downscale", "motion_blur"):
        assert sharpness(degrade(photo, softer, 0, "x")) < 0.7 * sharpness(photo), softer
    assert degrade(photo, "low_light", 0, "x").mean() < 0.7 * photo.mean()
    assert degrade(photo, "overexposed", 0, "x").mean() > 1.2 * photo.mean()
    noisy = degrade(photo, "noise", 0, "x").astype(float) - photo
    assert 6 < noisy.std() < 25
    # Texture up, light kept: the two probes of "texture read as age" (docs/MODEL.md).
    for harder in ("sharpen", "local_contrast"):
        out = degrade(photo, harder, 0, "x")
        assert sharpness(out) > 1.3 * sharpness(photo), harder
        assert abs(out.mean() - photo.mean()) < 0.2 * photo.mean(), harder  # CLAHE evens each tile's light a little


def test_film_grain_is_clumped_brightness_noise_with_the_light_kept(photo):
    grain = degrade(photo, "film_grain", 0, "x").astype(float) - photo
    unclipped = ((photo > 30) & (photo < 225)).all(axis=2)
    assert np.abs(grain[..., 0] - grain[..., 2])[unclipped].max() <= 1  # the same in every channel: no colour
    assert 2 < grain[unclipped].std() < 12 and abs(grain[unclipped].mean()) < 1
    # clumped over neighbouring pixels, unlike sensor noise
    luma = grain[..., 1]
    neighbours = lambda x: np.corrcoef(x[:, :-1][unclipped[:, :-1]], x[:, 1:][unclipped[:, :-1]])[0, 1]  # noqa: E731
    assert neighbours(luma) > 0.4
    sensor = degrade(photo, "noise", 0, "x").astype(float)[..., 1] - photo[..., 1]
    assert neighbours(sensor) < 0.1


def test_bad_name_and_bad_image_are_refused(photo):
    with pytest.raises(ValueError, match="unknown degradation 'fog'; expected one of downscale"):
        degrade(photo, "fog", 0, "x")
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\) uint8"):
        degrade(photo[..., 0], "blur", 0, "x")
