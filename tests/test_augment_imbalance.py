"""Camera augmentation layer, age and source weights, crop packs, and the key figure."""

import numpy as np
import pytest

from training.imbalance import lds_weights, source_weights
from training.metrics import gate_tradeoff, key_figure, paired_change
from training.pack import CropPack, load_pack, save_pack


def test_lds_weights_lift_rare_ages_and_average_one():
    ages = np.array([30] * 40 + [31] * 40 + [15] * 4 + [70] * 1, np.float32)
    w = lds_weights(ages, sigma_years=2.0)
    assert w.mean() == pytest.approx(1.0, abs=1e-5) and w.shape == ages.shape
    assert w[ages == 15][0] > 2 * w[ages == 30][0]  # rare teenagers weigh more
    assert w[ages == 30][0] == pytest.approx(w[ages == 31][0], rel=0.05)  # neighbours share a density
    assert w.max() / w.min() <= 10.0 + 1e-5  # capped
    raw = lds_weights(ages, sigma_years=0, power=1.0, max_ratio=1000)
    assert raw[ages == 15][0] / raw[ages == 30][0] == pytest.approx(10.0)  # 40 / 4: plain inverse frequency


def test_sample_weights_follow_the_runs_lds_power():
    from training.fit import sample_weights

    ages = np.array([30] * 40 + [15] * 4, np.float32)
    pack = CropPack(np.zeros((len(ages), 4, 4, 3), np.uint8), ages, *(np.array(["x"] * len(ages)) for _ in range(5)))
    config = {"lds_sigma_years": 0.0001, "source_weight_power": 0.0}
    teen_to_adult = {}
    for power in (0.5, 1.0, None):  # None: a run configured before lds_power existed
        weights = sample_weights(pack, config | ({} if power is None else {"lds_power": power}))
        assert weights.mean() == pytest.approx(1.0, abs=1e-5)
        teen_to_adult[power] = weights[-1] / weights[0]
    assert teen_to_adult[1.0] == pytest.approx(10.0, rel=1e-3)  # 40 / 4
    assert teen_to_adult[0.5] == pytest.approx(10.0 ** 0.5, rel=1e-3) == teen_to_adult[None]


def test_lds_weights_reject_bad_ages():
    with pytest.raises(ValueError, match="ages must be in 0-120"):
        lds_weights(np.array([10, 130]))
    with pytest.raises(ValueError, match="at least one age"):
        lds_weights(np.array([]))


def test_source_weights_lift_small_sources():
    w = source_weights(np.array(["big"] * 16 + ["small"] * 4))
    assert w.mean() == pytest.approx(1.0) and w[-1] / w[0] == pytest.approx(2.0)  # sqrt(16 / 4)


def test_key_figure_counts_teens_below_the_adults_ten_percent_cut():
    true = np.array([14, 15, 16, 17] + [30] * 10)
    predicted = np.array([20, 25, 40, 60] + [22, 30, 31, 32, 33, 34, 35, 36, 37, 38], np.float64)
    k = key_figure(true, predicted)
    assert k["cut_years"] == 22 and k["age_13_17_flagged"] == pytest.approx(1 / 4)  # only 20 < 22
    # AUC: teen 20 beats all 10 adults, 25 beats 9, 40 and 60 beat none -> 19 / 40
    assert k["auc_13_17_vs_25_plus"] == pytest.approx(19 / 40)
    assert key_figure(np.array([30.0]), np.array([30.0]))["age_13_17_flagged"] is None


TILL_TRUE = [15, 15, 16, 30, 30, 40, 10, 20]
TILL_ESTIMATES = [17, 22, 30, 21, 35, 50, 12, 26]


def test_gate_tradeoff_counts_whom_each_limit_asks():
    rows = gate_tradeoff(np.array(TILL_TRUE, float), np.array(TILL_ESTIMATES, float), limits_years=(20, 25))
    assert rows == [
        {"limit_years": 20.0, "under_18": 0.5, "age_13_17": 0.3333, "age_18_24": 0.0, "age_25_plus": 0.0,
         "under_16": 0.6667, "under_17": 0.5, "under_19": 0.5, "under_20": 0.5, "under_21": 0.4},
        {"limit_years": 25.0, "under_18": 0.75, "age_13_17": 0.6667, "age_18_24": 0.0, "age_25_plus": 0.3333,
         "under_16": 1.0, "under_17": 0.75, "under_19": 0.75, "under_20": 0.75, "under_21": 0.6},
    ]  # e.g. at 25: 17, 22 and 12 of the four under 18; 21 of the three adults 25+; the 20-year-old's 26 of under 21
    (adults_only,) = gate_tradeoff(np.array([30.0]), np.array([20.0]), limits_years=(25,))
    assert adults_only["under_18"] is None and adults_only["age_25_plus"] == 1.0


def test_key_figure_interval_holds_the_figure_and_narrows_with_more_faces():
    rng = np.random.default_rng(3)

    def sample(teens, adults):
        true = np.r_[rng.integers(13, 18, teens), rng.integers(25, 70, adults)].astype(np.float64)
        return true, true + rng.normal(0, 7, true.size)

    small = key_figure(*sample(40, 400))
    large = key_figure(*sample(640, 6400))
    for k in (small, large):
        low, high = k["age_13_17_flagged_ci95"]
        assert low <= k["age_13_17_flagged"] <= high
    assert np.diff(large["age_13_17_flagged_ci95"]) < np.diff(small["age_13_17_flagged_ci95"]) / 2.5
    true, predicted = sample(40, 400)
    assert key_figure(true, predicted) == key_figure(true, predicted)  # seeded: reports reproduce


def test_pack_round_trip_keeps_labels_and_pixels(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (5, 5, 5, 3), dtype=np.uint8)
    smooth = np.stack([cv2.resize(c, (40, 40), interpolation=cv2.INTER_LINEAR) for c in coarse])
    pack = CropPack(smooth, np.array([1, 20, 30, 40, 90], np.float32), np.array(["a", "a", "b", "b", "b"]),
                    np.array(["train", "val", "train", "val", "train"]), np.full(5, -1), np.arange(5),
                    np.array([f"{i}.jpg" for i in range(5)]), meta={"size": 40, "context": 1.25})
    for codec in ("jpg", "webp"):
        back = load_pack(save_pack(tmp_path / f"p-{codec}.npz", pack, codec=codec, quality=95))
        assert back.images.shape == pack.images.shape and back.meta["context"] == 1.25
        assert back.meta["codec"] == codec
        assert np.abs(back.images.astype(int) - pack.images).mean() < 6
        for field in ("age_years", "source", "split", "race", "file_name"):
            np.testing.assert_array_equal(getattr(back, field), getattr(pack, field))
    assert len(pack.subset(pack.split == "val")) == 2
    with pytest.raises(FileNotFoundError, match="no crop pack"):
        load_pack(tmp_path / "missing.npz")


def test_a_pack_split_for_transfer_joins_back_byte_for_byte_or_says_what_is_missing(tmp_path):
    """The GPU path for a pack over one call's 64 MiB: parts travel in separate calls to a stash."""
    import importlib.util
    import shutil
    import subprocess
    import sys

    from edge_app.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("device_weights", PROJECT_ROOT / "bench" / "device_weights.py")
    device_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_weights)
    rng = np.random.default_rng(1)
    n = 40
    pack = CropPack(rng.integers(0, 255, (n, 40, 40, 3), dtype=np.uint8), rng.uniform(1, 90, n).astype(np.float32),
                    np.full(n, "a"), np.full(n, "train"), np.full(n, -1), np.full(n, -1),
                    np.array([f"{i}.jpg" for i in range(n)]), meta={"size": 40, "context": 1.25})
    run, parts, stash = tmp_path / "run", tmp_path / "parts", tmp_path / "stash"
    original = save_pack(run / "crops.npz", pack).read_bytes()
    device_weights.split_pack(run, parts, part_bytes=len(original) // 3 + 1)
    assert not (run / "crops.npz").exists() and sorted(p.name for p in parts.iterdir()) == ["00", "01", "02"]
    stash.mkdir()
    for folder in sorted(parts.iterdir())[:2]:  # two calls have copied their part so far
        shutil.copy(next(folder.iterdir()), stash)
    join = ["bash", str(PROJECT_ROOT / "bench" / "join_pack.sh"), str(run), str(stash)]
    early = subprocess.run(join, capture_output=True, text=True, timeout=60)
    assert early.returncode == 1 and early.stderr.strip() == (
        f"error: 2 parts in {stash} do not make the pack of {run}/crops.npz.sha256; expected every part, once")
    assert sorted(p.name for p in run.iterdir()) == ["crops.npz.sha256"]  # nothing half-joined is left
    shutil.copy(parts / "02" / "crops.npz.part02", stash)  # the last call
    joined = subprocess.run(join, capture_output=True, text=True, timeout=60)
    assert joined.returncode == 0, joined.stderr
    assert (run / "crops.npz").read_bytes() == original
    np.testing.assert_array_equal(load_pack(run / "crops.npz").file_name, pack.file_name)
    empty = subprocess.run(["bash", str(PROJECT_ROOT / "bench" / "join_pack.sh"), str(tmp_path / "nothing")],
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 1 and "expected a pack or a split pack's checksum" in empty.stderr
    missing = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "device_weights.py"), "split-pack",
                              str(tmp_path / "nothing"), str(parts)], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.strip() == (
        f"error: {tmp_path / 'nothing' / 'crops.npz'}: no such file; "
        "expected the inputs named at the top of bench/device_weights.py")


@pytest.fixture(scope="module")
def faces80(clip_frames):
    """Three real 80 px face crops with context (the stored crops of a pack)."""
    import cv2

    from edge_app.crop import CropSettings, crop_faces

    rgb = cv2.cvtColor(clip_frames[30], cv2.COLOR_BGR2RGB)
    boxes = np.array([[50, 90, 100, 150], [200, 80, 250, 140], [350, 110, 400, 170]], np.float32)
    return crop_faces(rgb, boxes, 80, CropSettings(margin=0.25)).astype(np.float32)


def test_camera_augment_is_the_centre_at_inference(faces80):
    from training.augment import CameraAugment

    layer = CameraAugment(64, context=1.25, seed=0)
    out = np.asarray(layer(faces80, training=False))
    assert out.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(out, faces80[:, 8:72, 8:72])  # exactly the card's framing


def test_camera_augment_corrupts_while_training_within_range(faces80):
    from training.augment import CameraAugment

    layer = CameraAugment(64, context=1.25, seed=1)
    batch = np.repeat(faces80, 8, axis=0)
    first = np.asarray(layer(batch, training=True))
    second = np.asarray(layer(batch, training=True))
    assert first.shape == (24, 64, 64, 3) and first.min() >= 0 and first.max() <= 255
    assert not np.allclose(first, second)  # a new draw each call
    centre = np.repeat(faces80[:, 8:72, 8:72], 8, axis=0)
    change = np.abs(first - centre).mean(axis=(1, 2, 3))
    assert (change > 3).mean() > 0.5  # most samples visibly corrupted or moved
    assert np.abs(first.mean() - centre.mean()) < 40  # but still faces of similar brightness overall
    off = np.asarray(CameraAugment(64, context=1.25, strength=0.0)(batch, training=True))
    np.testing.assert_array_equal(off, centre)


@pytest.mark.parametrize("half_px", [4, 8])
def test_camera_augment_rank_equalise_spreads_flat_skin_over_the_range_as_clahe_does(faces80, half_px):
    import cv2

    from training.augment import RANK_HALF_WINDOWS_PX, CameraAugment

    assert half_px in RANK_HALF_WINDOWS_PX
    layer = CameraAugment(64, context=1.25, seed=0)
    faces = faces80[:, 8:72, 8:72].astype(np.float32)
    np.testing.assert_allclose(np.asarray(layer._rank_equalise(faces, half_px, 0.0)), faces, atol=1e-3)
    out = np.asarray(layer._rank_equalise(faces, half_px, 0.5))
    # colour kept: every channel moves by the same amount
    assert (out.max(axis=-1) - out.min(axis=-1) - (faces.max(axis=-1) - faces.min(axis=-1))).std() < 1e-3

    def spread(x):
        luma = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        return np.sqrt(cv2.GaussianBlur((luma - cv2.GaussianBlur(luma, (0, 0), 2.0)) ** 2, (0, 0), 2.0))

    for before, after in zip(faces, out, strict=True):
        s0, s1 = spread(before)[8:-8, 8:-8], spread(after)[8:-8, 8:-8]
        flat = s0 < np.quantile(s0, 0.25)
        assert np.median(s1[flat] / s0[flat]) > 2  # a narrow histogram spread wide, as CLAHE's tiles do
        # and what CLAHE does to the same crop, this does more like than unlike
        lab = cv2.cvtColor(before.astype(np.uint8), cv2.COLOR_RGB2LAB)
        lab[..., 0] = cv2.createCLAHE(3.0, (64 // (2 * half_px), 64 // (2 * half_px))).apply(lab[..., 0].copy())
        clahe = cv2.cvtColor(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), cv2.COLOR_RGB2GRAY).astype(np.float32)
        luma0, luma1 = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (before, after))
        assert np.corrcoef((clahe - luma0).ravel(), (luma1 - luma0).ravel())[0, 1] > 0.3


@pytest.mark.parametrize("scale_px", [1.2, 2.0, 4.0])
def test_camera_augment_equalise_raises_flat_areas_texture_most(faces80, scale_px):
    import cv2

    from training.augment import EQUALISE_SCALES_PX, CameraAugment

    assert scale_px in EQUALISE_SCALES_PX  # CLAHE's tiles come in many sizes: each is drawn in training
    layer = CameraAugment(64, context=1.25, seed=0)
    faces = faces80[:, 8:72, 8:72]
    out = np.asarray(layer._equalise(faces, 20.0, 3.0, scale_px))

    def spread(x):  # local standard deviation of lightness, as the layer measures it
        luma = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY)
        mean = cv2.GaussianBlur(luma, (0, 0), scale_px)
        return np.sqrt(cv2.GaussianBlur((luma - mean) ** 2, (0, 0), scale_px))

    for before, after in zip(faces, out, strict=True):
        s0, s1 = spread(before)[8:-8, 8:-8], spread(after)[8:-8, 8:-8]
        flat, busy = s0 < np.quantile(s0, 0.25), s0 > np.quantile(s0, 0.75)
        assert np.median(s1[flat] / s0[flat]) > 1.8  # flat skin: its texture raised (up to 3x)
        assert np.median(s1[busy] / s0[busy]) < np.median(s1[flat] / s0[flat])  # edges less so
        assert abs(after.mean() - before.mean()) < 3  # light kept
        assert (after.max(axis=-1) - after.min(axis=-1) - (before.max(axis=-1) - before.min(axis=-1))).std() < 1e-3


def drawn_on_every_face(layer, faces80, margin):
    """(the 12 crops, the same with ``layer`` drawn on each while training, (12, 80, 80) changed pixels)."""
    batch = np.repeat(faces80, 4, axis=0)
    out = np.asarray(layer(1.0, context=1.25, margin=margin, seed=0)(batch, training=True))
    return batch, out, np.abs(out - batch).max(axis=-1) > 1


@pytest.mark.parametrize("name", ["SyntheticGlasses", "SyntheticMask"])
@pytest.mark.parametrize("margin", [0.1, 0.25])
def test_drawn_accessories_change_only_training_crops_within_range_and_are_seeded(faces80, name, margin):
    from training import augment

    layer = getattr(augment, name)
    batch, out, _ = drawn_on_every_face(layer, faces80, margin)
    np.testing.assert_array_equal(np.asarray(layer(1.0, seed=0)(batch, training=False)), batch)
    np.testing.assert_array_equal(np.asarray(layer(0.0, seed=0)(batch, training=True)), batch)
    assert out.shape == batch.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    again = np.asarray(layer(1.0, context=1.25, margin=margin, seed=0)(batch, training=True))
    np.testing.assert_array_equal(out, again)  # seeded


@pytest.mark.parametrize("margin", [0.1, 0.25])
def test_synthetic_glasses_sit_on_the_eyes_and_nowhere_else(faces80, margin):
    from training.augment import EYES_IN_BOX, SyntheticGlasses

    _, _, changed = drawn_on_every_face(SyntheticGlasses, faces80, margin)
    box_sides = (1 + 2 * margin) * 1.25  # the stored crop's side
    eye_row = int(round((0.5 + EYES_IN_BOX[0][1] / box_sides) * 80))  # row 31 (margin 0.1), 33 (0.25)
    rows = changed.any(axis=2).mean(axis=0)  # share of samples changed in each row
    assert rows[eye_row - 6 : eye_row + 6].max() == 1.0  # every sample has glasses at eye height
    below = int(round((0.5 + 0.1 / box_sides) * 80))  # a tenth of a box side below its centre: the nose
    above = int(round((0.5 - 0.42 / box_sides) * 80))  # above the brows
    assert rows[below:].max() == 0.0 and rows[:above].max() == 0.0  # nothing on mouth, chin or hair
    columns = changed.any(axis=1).mean(axis=0)
    reach = int(round((0.5 + 0.6 / box_sides) * 80))  # the arms end about at the ears
    assert columns[reach:].max() == 0.0 and columns[: 80 - reach].max() == 0.0


@pytest.mark.parametrize("margin", [0.1, 0.25])
def test_synthetic_mask_covers_mouth_and_chin_and_leaves_the_eyes(faces80, margin):
    from training.augment import EYES_IN_BOX, SyntheticMask

    _, out, changed = drawn_on_every_face(SyntheticMask, faces80, margin)
    box_sides = (1 + 2 * margin) * 1.25  # the stored crop's side
    (right_u, eye_v), (left_u, _) = EYES_IN_BOX
    eye_distance = (left_u - right_u) / box_sides * 80  # pixels: 21 (margin 0.1), 18 (0.25)
    eye_row = (0.5 + eye_v / box_sides) * 80
    rows = changed.any(axis=2).mean(axis=0)  # share of samples changed in each row
    assert rows[: int(eye_row + 0.4 * eye_distance)].max() == 0.0  # eyes, brows and hair untouched
    mouth = int(round(eye_row + 1.2 * eye_distance))
    assert changed[:, mouth].mean(axis=1).min() > 0.3  # every sample's mouth row is mostly covered
    middle = int(round((0.5 + (left_u + right_u) / 2 / box_sides) * 80))
    side = int(np.ceil(1.25 * eye_distance))  # no wider than the cheeks
    columns = changed.any(axis=1).mean(axis=0)
    assert columns[middle + side :].max() == 0.0 and columns[: middle - side].max() == 0.0
    cover = changed[:, mouth, middle - 4 : middle + 4]
    colours = out[:, mouth, middle]  # each sample drew its own mask colour
    assert cover.all() and len({tuple(np.round(c)) for c in colours}) > 6


def test_two_view_loss_counts_each_views_error_and_their_gap():
    from training.model import age_loss

    y_true = np.array([12.0, 30.0], np.float32)
    y_pred = np.array([[10.0, 14.0], [30.0, 30.0]], np.float32)
    # view errors 4 and 4 (mean 4), gap 16; a sample whose views agree on the truth costs 0
    np.testing.assert_allclose(np.asarray(age_loss(0.5)(y_true, y_pred)), [4 + 0.5 * 16, 0.0])
    assert age_loss(0.0) == "mse"  # the notebooks' recipe, untouched


def test_rank_term_costs_each_teen_adult_pair_read_less_than_7_years_apart():
    from training.model import age_loss, key_rank_term

    # a 15 read 20 against adults read 25 (2 years short of 7 apart: 4) and 40 (far enough: 0);
    # the 10-year-old and the 20-year-old are in neither group
    true = np.array([15.0, 30.0, 40.0, 10.0, 20.0], np.float32)
    estimate = np.array([20.0, 25.0, 40.0, 30.0, 5.0], np.float32)
    term = np.asarray(key_rank_term(true, estimate))
    np.testing.assert_allclose(term, [5 * 4 / 4, 5 * 4 / 4, 0.0, 0.0, 0.0])
    assert term.mean() == 4 / 2  # the mean cost per pair
    per_sample = np.asarray(age_loss(0.0, 0.5)(true[:, None], estimate[:, None]))
    np.testing.assert_allclose(per_sample, (estimate - true) ** 2 + 0.5 * term)
    adults_only = np.asarray(key_rank_term(np.array([30.0, 40.0], np.float32), np.array([9.0, 1.0], np.float32)))
    np.testing.assert_array_equal(adults_only, 0.0)


def test_rank_weight_turns_the_step_of_teens_read_too_close_to_adults():
    import keras

    from training.model import compile_model

    true = np.array([16.0, 16.0, 30.0, 30.0, 50.0, 8.0], np.float32)[:, None]
    # teen 0 reads 15, under its age but within 7 years of an adult read 18; adult 3 reads 31,
    # over its age but within 7 years of teen 1 read 29; the 50 and the 8 are read right
    start = np.array([15.0, 29.0, 18.0, 31.0, 50.0, 8.0], np.float32)

    def one_step(rank_weight):
        # each sample's estimate is its own weight, and Adam's first step moves each weight by
        # the rate against its gradient's sign: the sign of each sample's pull
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, use_bias=False)])
        model.layers[0].kernel.assign(start[:, None])
        compile_model(model, 0.5, rank_weight=rank_weight)
        model.fit(np.eye(6, dtype=np.float32), true, batch_size=6, epochs=1, verbose=0)
        return model.layers[0].kernel.numpy()[:, 0] - start

    plain, ranked = one_step(0.0), one_step(1.0)
    assert plain[0] > 0 > ranked[0]  # the squared error lifts teen 0 to 16; the pair holds it down
    assert plain[3] < 0 < ranked[3]  # and lowers adult 3 to 30; the pair lifts it
    np.testing.assert_allclose(ranked[[1, 2, 4, 5]], plain[[1, 2, 4, 5]], atol=1e-6)  # both pulls agree, or none


def test_weight_decay_shrinks_kernels_apart_from_the_gradient_and_spares_norm_and_bias():
    import keras

    from training.model import compile_model

    def trained(weight_decay):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        # A branch the loss weighs by exactly 0: its kernel, bias and the norm's scale get a
        # gradient of exactly 0, so whatever moves them is the decay.
        side = keras.layers.BatchNormalization(name="norm")(
            keras.layers.Dense(3, bias_initializer="ones", name="first")(inputs))
        head = keras.layers.Dense(1)(inputs)
        out = keras.layers.Lambda(lambda t: t[0] + 0.0 * keras.ops.sum(t[1], axis=-1, keepdims=True))([head, side])
        model = keras.Model(inputs, out)
        compile_model(model, 0.1, weight_decay=weight_decay)
        before = model.get_layer("first").kernel.numpy().copy()
        x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
        model.fit(x, np.ones((8, 1), np.float32), batch_size=8, epochs=3, verbose=0)
        return before, model

    before, model = trained(0.5)
    np.testing.assert_allclose(model.get_layer("first").kernel.numpy(), before * (1 - 0.1 * 0.5) ** 3, rtol=1e-5)
    np.testing.assert_array_equal(model.get_layer("first").bias.numpy(), 1.0)
    np.testing.assert_array_equal(model.get_layer("norm").gamma.numpy(), 1.0)
    before, model = trained(0.0)  # plain Adam: the notebooks' recipe
    np.testing.assert_array_equal(model.get_layer("first").kernel.numpy(), before)


def test_consistency_trains_on_two_independent_views_and_predicts_the_framing():
    from training.augment import CameraAugment
    from training.fit import build_state, build_training_model

    config = {"image_size": 32, "weights": "none", "augment": True, "augment_strength": 1.0, "seed": 0,
              "glasses_share": 0.25, "consistency": 1.0}
    regressor, trainer = build_training_model(config, 1.25, 1e-3, 30.0)
    names = [layer.name for layer in trainer.layers]
    assert {"camera_augment", "camera_augment_2", "glasses", "glasses_2"} <= set(names)
    crops = np.random.default_rng(0).uniform(0, 255, (8, 40, 40, 3)).astype(np.float32)
    views = np.asarray(trainer(crops, training=True))
    assert views.shape == (8, 2) and np.abs(views[:, 0] - views[:, 1]).max() > 1e-3  # corrupted apart
    framed = np.asarray(trainer(crops, training=False))
    np.testing.assert_allclose(framed[:, 0], framed[:, 1])  # at inference both are the framing
    np.testing.assert_allclose(framed[:, :1], np.asarray(regressor(CameraAugment(32, 1.25)(crops))), rtol=1e-5)
    ages = np.linspace(10, 60, 8, dtype=np.float32)[:, None]  # (N, 1), as training.fit passes them
    build_state(trainer, crops, ages, 4)  # as training.fit does
    history = trainer.fit(crops, ages, sample_weight=np.ones(8, np.float32), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["mae"][0])
    _, one_view = build_training_model(config | {"consistency": 0.0}, 1.25, 1e-3, 30.0)
    assert "camera_augment_2" not in [layer.name for layer in one_view.layers]
    assert one_view.loss == "mse"  # the notebooks' recipe unless the run asks for more
    _, ranked = build_training_model(config | {"consistency": 0.0, "rank_weight": 1.0}, 1.25, 1e-3, 30.0)
    assert callable(ranked.loss) and ranked.loss.__qualname__.startswith("age_loss")


def test_glasses_and_mask_shares_put_their_layers_before_camera_augment():
    from training.fit import build_training_model

    config = {"image_size": 32, "weights": "none", "augment": True, "augment_strength": 1.0, "seed": 0,
              "glasses_share": 0.2, "mask_share": 0.5}
    _, trainer = build_training_model(config, 1.25, 1e-3, 30.0)
    names = [layer.name for layer in trainer.layers]
    assert names.index("glasses") < names.index("camera_augment") > names.index("mask")
    batch = np.full((64, 40, 40, 3), 128.0, np.float32)
    with_mask = np.abs(np.asarray(trainer.get_layer("mask")(batch, training=True)) - 128).max(axis=(1, 2, 3)) > 1
    assert 16 < with_mask.sum() < 48  # about the share of the faces
    _, plain = build_training_model(config | {"glasses_share": 0.0, "mask_share": 0.0}, 1.25, 1e-3, 30.0)
    assert not {"glasses", "mask"} & {layer.name for layer in plain.layers}


def test_camera_augment_jpeg_blocks_are_a_real_dct_quantiser():
    from training.augment import dct_matrix, jpeg_tables

    d = dct_matrix()
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-5)  # orthonormal: the inverse is the transpose
    tables = jpeg_tables(np.array([10.0, 50.0, 90.0]))
    assert tables.shape == (3, 3, 8, 8) and tables[1, 0, 0, 0] == 16  # quality 50: the standard table
    assert (tables[0] >= tables[1]).all() and (tables[1] >= tables[2]).all()  # lower quality, coarser steps


@pytest.mark.parametrize(("kwargs", "match"), [({"output_size": 60}, "multiple of 8"),
                                               ({"output_size": 64, "context": 3.0}, "context"),
                                               ({"output_size": 64, "strength": -1.0}, "strength")])
def test_camera_augment_rejects_bad_settings(kwargs, match):
    from training.augment import CameraAugment, SyntheticGlasses, SyntheticMask

    with pytest.raises(ValueError, match=match):
        CameraAugment(**kwargs)
    with pytest.raises(ValueError, match="glasses share"):
        SyntheticGlasses(1.5)
    with pytest.raises(ValueError, match="mask share"):
        SyntheticMask(-0.1)


def test_paired_change_sees_a_small_gain_that_the_models_own_intervals_hide():
    rng = np.random.default_rng(5)
    true = np.r_[rng.integers(13, 18, 60), rng.integers(25, 40, 600)].astype(np.float64)
    before = true + rng.normal(0, 10, true.size)
    after = before.copy()
    after[:60] -= 3.0  # the candidate reads every teenager 3 years younger, adults the same
    change = paired_change(true, before, after)
    k_before, k_after = key_figure(true, before), key_figure(true, after)
    assert change["key_before"] == k_before["age_13_17_flagged"] and change["key_after"] == k_after["age_13_17_flagged"]
    assert change["key_change"] > 0 and change["key_change_ci95"][0] > 0  # paired: the gain is clear
    assert k_after["age_13_17_flagged_ci95"][0] < k_before["age_13_17_flagged_ci95"][1]  # apart: they overlap
    same = paired_change(true, before, before)
    assert same["key_change"] == 0 and same["key_change_ci95"] == [0, 0] and same["mae_change_ci95"] == [0, 0]
    assert same == paired_change(true, before, before)  # seeded
    with pytest.raises(ValueError, match="equal-length"):
        paired_change(true, before, after[:-1])


def test_compare_models_pairs_two_replays_of_the_same_customers(tmp_path):
    """`bench/per_customer.py --customers` files: the app's decisions compared one by one."""
    import json
    import subprocess
    import sys

    from edge_app.config import PROJECT_ROOT

    rng = np.random.default_rng(2)
    ages = np.r_[rng.integers(5, 13, 40), rng.integers(13, 18, 40), rng.integers(18, 25, 40), rng.integers(25, 60, 200)]
    header = "source,file_name,real_age,predicted_age,seen,flagged,reason\n"
    files = {}
    for name, shift in (("before", 6.0), ("after", 2.0)):  # the candidate reads everyone 4 years younger
        lines = []
        for i, age in enumerate(ages):
            estimate = "" if i % 50 == 7 else f"{age + shift + (i % 5):.1f}"  # 7 customers never estimated
            flagged = int(estimate == "" or float(estimate) < 18 + 6)
            lines.append(f"{'abc'[i % 3]},{i}.jpg,{age},{estimate},{int(estimate != '')},{flagged},"
                         f"{'face_unclear' if estimate == '' else ('age' if flagged else '')}\n")
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_text(header + "".join(lines))
    out = tmp_path / "paired_margin6.92"  # a dot in the name: the outputs keep all of it
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "compare_models.py"), str(files["before"]),
                           str(files["after"]), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("paired*")) == ["paired_margin6.92.json", "paired_margin6.92.md"]
    results = json.loads((tmp_path / "paired_margin6.92.json").read_text())
    assert results["all"]["not_estimated"] == 7 and results["all"]["mae_change"] < 0
    by_band = {d["band"]: d for d in results["all"]["decisions"]}
    for d in by_band.values():  # reading younger only ever adds flags
        assert d["lost"] == 0 and d["flagged_after"] == d["flagged_before"] + d["gained"]
    assert by_band["13–17"]["customers"] == 40 and by_band["13–17"]["gained"] > 0
    assert by_band["25+"] == {"band": "25+", "customers": 200, "flagged_before": 4, "flagged_after": 4,
                              "lost": 0, "gained": 0}  # only the 4 never estimated (fail-safe), both times
    assert "changed sides" in (tmp_path / "paired_margin6.92.md").read_text()


def test_compare_models_reads_the_tills_decisions_at_any_margin_from_the_lowest_medians(tmp_path, capsys):
    from bench.compare_models import compare, main, markdown, read_predictions

    header = "source,file_name,real_age,predicted_age,seen,flagged,reason,lowest_age\n"
    # (age, before: flagged, reason, lowest; after: the same), replayed at margin 0 (limit 18)
    customers = [(15, (0, "", 22.0), (0, "", 25.5)), (16, (1, "face_unclear", ""), (1, "face_unclear", "")),
                 (14, (0, "", 24.5), (0, "", 26.2)), (17, (1, "age", 17.0), (0, "", 19.0)),
                 (30, (0, "", 24.0), (0, "", 26.0)), (40, (1, "uncertain", 41.0), (0, "", 45.0)),
                 (50, (0, "", ""), (0, "", ""))]  # the last: seen by neither, never asked
    files = {}
    for side in (1, 2):
        files[side] = tmp_path / f"{side}.csv"
        rows = [f"a,{i}.jpg,{c[0]},{c[side][2]},1,{c[side][0]},{c[side][1]},{c[side][2]}\n"
                for i, c in enumerate(customers)]
        files[side].write_text(header + "".join(rows))
    results = compare(read_predictions(files[1]), read_predictions(files[2]), (6.92, 6.92))
    # at limit 24.92 before: 22.0, unclear, 24.5, 17.0 (minors) and 24.0, uncertain (adults); after: unclear, 19.0
    by_band = {d["band"]: d for d in results["all"]["decisions"]}
    assert (by_band["under 18"]["flagged_before"], by_band["under 18"]["flagged_after"]) == (4, 2)
    assert (by_band["25+"]["flagged_before"], by_band["25+"]["flagged_after"]) == (2, 0)
    # the candidate asks all 4 minors again from the first 0.1 step above its 4th lowest, 26.2
    assert results["all"]["till_matched"] == {"margin_after": 8.3, "minors": 4, "minors_before": 4, "minors_after": 4,
                                              "adults": 3, "adults_before": 2, "adults_after": 1}
    # the till's key figure: before, the adults' 10% cut is the uncertain one (asked at any limit): no teen
    # under it; after, the cut is 26.0, and 25.5, 19.0 and the unclear teen are under it
    till_key = results["all"]["till_key"]
    assert (till_key["key_before"], till_key["key_after"]) == (0.0, 0.75)
    # by age alone: the unclear teen, the uncertain adult and the adult never estimated are left out
    assert till_key["by_age_customers"] == 4 and till_key["by_age"]["key_after"] == 2 / 3
    text = markdown(results, "1.csv", "2.csv")
    assert "(before read at margin 6.92, after read at margin 6.92;" in text
    assert "from margin 8.3 the candidate's till" in text
    assert "The till's own key figure" in text and "0.0% → 75.0%" in text
    # where the law says 21: the same limits (21 + 3.92) ask the same customers, minors are those under 21,
    # and the candidate's matched margin is 3 years narrower for the same limit, 26.3
    at_21 = compare(read_predictions(files[1]), read_predictions(files[2]), (3.92, 3.92), threshold_age=21)
    by_band_21 = {d["band"]: d for d in at_21["all"]["decisions"]}
    assert list(by_band_21)[0] == "under 21" and by_band_21["under 21"] == by_band["under 18"] | {"band": "under 21"}
    assert at_21["all"]["till_matched"] == results["all"]["till_matched"] | {"margin_after": 5.3}
    # per estimate: the three teens both models estimated (the unclear one has none)
    assert at_21["all"]["gate"]["minors"] == 3 and "Minors (under 21) each model's gate flags" in markdown(
        at_21, "1.csv", "2.csv")
    assert main([str(files[1]), str(files[2]), "--threshold-age", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --threshold-age 0: expected a legal age in years, 1 to 120"
    as_replayed = compare(read_predictions(files[1]), read_predictions(files[2]))  # no margins: the replays' flags
    assert {d["band"]: d["flagged_before"] for d in as_replayed["all"]["decisions"]}["under 18"] == 2
    assert "till_matched" not in as_replayed["all"]
    assert as_replayed["all"]["decisions_at"] == {"before": "as replayed", "after": "as replayed"}
    # a file without the lowest medians (as written before them) is taken as replayed beside one read at a margin
    files[1].write_text("\n".join(",".join(line.split(",")[:7]) for line in files[1].read_text().splitlines()) + "\n")
    mixed = compare(read_predictions(files[1]), read_predictions(files[2]), (6.92, 6.92))
    assert mixed["all"]["decisions_at"] == {"before": "as replayed", "after": "read at margin 6.92"}
    assert {d["band"]: d["flagged_before"] for d in mixed["all"]["decisions"]}["under 18"] == 2
    assert "till_key" not in mixed["all"] and "till_matched" not in mixed["all"]


def test_compare_models_splits_utkface_by_its_labelled_groups_per_photo_and_at_the_till(tmp_path):
    from bench.compare_models import compare, markdown, read_predictions

    header = "source,file_name,real_age,predicted_age,seen,flagged,reason,lowest_age\n"
    # (source, file name: AGE_GENDER_RACE_..., age, lowest median before, after); read at margin 6 (limit 24)
    customers = [("utkface", "15_0_1_a.jpg", 15, 20.0, 26.0),  # a black boy: asked before, not after
                 ("utkface", "16_1_1_b.jpg", 16, 23.0, 22.0),  # a black girl: asked both times
                 ("utkface", "30_1_0_c.jpg", 30, 30.0, 21.0),  # a white woman: asked after only
                 ("utkface", "14_0_0_d.jpg", 14, 25.0, 23.0),  # a white boy: asked after only
                 ("aaf", "000001.jpg", 15, 20.0, 30.0)]  # no labels: in no group
    files = {}
    for side in (3, 4):
        files[side] = tmp_path / f"{side}.csv"
        files[side].write_text(header + "".join(f"{c[0]},{c[1]},{c[2]},{c[side]},1,0,,{c[side]}\n"
                                                for c in customers))
    results = compare(read_predictions(files[3]), read_predictions(files[4]), (6.0, 6.0))
    for key in ("by_group", "till_by_group"):  # per last estimate, and the till's decisions from the lowest medians
        rows = {r["group"]: r for r in results["all"][key]}
        assert list(rows) == ["white", "black", "male", "female"], key  # groups present among the photos
        assert rows["black"]["minors"] == {"count": 2, "before": 2, "after": 1, "lost": 1, "gained": 0}
        assert rows["white"]["minors"] == {"count": 1, "before": 0, "after": 1, "lost": 0, "gained": 1}
        assert rows["white"]["adults_25_plus"] == {"count": 1, "before": 0, "after": 1, "lost": 0, "gained": 1}
        assert rows["male"]["minors"]["count"] == 2 and rows["female"]["adults_25_plus"]["after"] == 1
    text = markdown(results, "3.csv", "4.csv")
    assert "| black | 2 → 1 of 2 (1 lost, 0 gained) | 0 → 0 of 0 (0 lost, 0 gained) |" in text
    assert "At the till (before read at margin 6, after read at margin 6)" in text
    from training.data import utkface_labels

    assert utkface_labels("15_0_12_x.jpg") == (0, -1) and utkface_labels("15_1.jpg") == (-1, -1)  # no such race


def test_matched_margin_widens_the_candidates_gate_until_it_asks_as_many_minors():
    from bench.compare_models import matched_margin

    true = np.array([10, 15, 16, 17, 30, 40, 50.0])
    before = np.array([20, 24, 30, 26, 24, 40, 45.0])  # at 18 + 7: minors 20 and 24 flagged, the adult of 24 too
    after = before + 3  # the candidate reads everyone 3 years older
    m = matched_margin(true, before, after, (7.0, 7.0))
    # its 2nd-lowest minor estimate is 27: 18 + 9.1 is the first limit on the 0.1 grid above it
    assert m == {"margin_after": 9.1, "minors": 4, "minors_before": 2, "minors_after": 2,
                 "adults": 3, "adults_before": 1, "adults_after": 1}
    assert matched_margin(true, before, after, (7.0, 7.0), step_years=0.5)["margin_after"] == 9.5
    younger = matched_margin(true, before, before - 3, (7.0, 7.0))  # reads younger: a narrower margin will do
    assert younger["margin_after"] == 3.1 and younger["minors_after"] == 2 and younger["adults_after"] == 1
    none = matched_margin(true, before, after, (0.0, 0.0))  # the model in use asks no minor at margin 0
    assert none["margin_after"] == 0.0 and none["minors_before"] == 0


def test_pack_keeps_where_each_photo_ends(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 80, 80, 3), dtype=np.uint8)
    inside = np.full((3, 80, 80), 255, np.uint8)
    inside[0, :, :20] = 0  # the photo ends a quarter in from the left
    inside[1, 60:] = 0  # ... a quarter up from the bottom
    labels = [np.arange(3.0), np.array(["a"] * 3), np.array(["train", "val", "train"]), *[np.array(["x"] * 3)] * 3]
    for codec in ("jpg", "webp"):
        pack = CropPack(images, *labels, meta={"size": 80}, inside=inside)
        back = load_pack(save_pack(tmp_path / f"{codec}.npz", pack, codec=codec))
        assert back.inside.shape == inside.shape and back.inside.dtype == np.uint8
        assert (back.inside[0, :, :16] == 0).all() and (back.inside[0, :, 24:] == 255).all()
        assert (back.inside[1, 64:] == 0).all() and (back.inside[1, :56] == 255).all()
        assert (back.inside[2] == 255).all()
        np.testing.assert_array_equal(back.subset(np.array([2, 0])).inside, back.inside[[2, 0]])
    plain = load_pack(save_pack(tmp_path / "plain.npz", CropPack(images, *labels, meta={"size": 80})))
    assert plain.inside is None and plain.subset(np.array([0])).inside is None


def test_border_fill_replaces_only_what_lies_outside_the_photo():
    from training.augment import BorderFill

    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 255, (6, 40, 40, 3)).astype(np.float32)
    inside = np.full((6, 40, 40, 1), 255.0, np.float32)
    inside[:, :, :10] = 0.0  # the framing left the photo on the left: a quarter of each crop
    x = np.concatenate([rgb, inside], axis=-1)
    np.testing.assert_array_equal(np.asarray(BorderFill(1.0, seed=0)(x, training=False)), rgb)  # inference
    np.testing.assert_array_equal(np.asarray(BorderFill(0.0, seed=0)(x, training=True)), rgb)
    out = np.asarray(BorderFill(1.0, seed=0)(x, training=True))
    assert out.shape == rgb.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, 10:], rgb[:, :, 10:])  # the photo itself is kept
    assert (np.abs(out[:, :, :10] - rgb[:, :, :10]).mean(axis=(1, 2, 3)) > 5).all()  # every outside is new
    np.testing.assert_array_equal(out, np.asarray(BorderFill(1.0, seed=0)(x, training=True)))  # seeded
    whole = np.concatenate([rgb, np.full_like(inside, 255.0)], axis=-1)  # a photo that holds its framing
    np.testing.assert_array_equal(np.asarray(BorderFill(1.0, seed=0)(whole, training=True)), rgb)


def test_border_fill_comes_first_and_needs_the_packs_record_of_the_photo():
    from edge_app.errors import AgecheckError
    from training.fit import build_training_model, model_inputs
    from training.pack import CropPack

    config = {"image_size": 32, "weights": "none", "augment": True, "augment_strength": 1.0, "seed": 0,
              "glasses_share": 0.25, "border_fill": 0.5}
    _, trainer = build_training_model(config, 1.25, 1e-3, 30.0)
    assert trainer.input_shape == (None, 40, 40, 4)
    names = [layer.name for layer in trainer.layers]
    assert names.index("border_fill") < names.index("glasses") < names.index("camera_augment")
    labels = [np.zeros(2), np.array(["a", "a"]), np.array(["train", "val"]), *[np.array(["x", "x"])] * 3]
    images = np.zeros((2, 40, 40, 3), np.uint8)
    with_record = CropPack(images, *labels, inside=np.full((2, 40, 40), 255, np.uint8))
    assert model_inputs(with_record, config).shape == (2, 40, 40, 4)
    assert model_inputs(with_record, config | {"border_fill": 0.0}).shape == (2, 40, 40, 3)
    with pytest.raises(AgecheckError, match="no record of where each photo ends"):
        model_inputs(CropPack(images, *labels), config)
    plain = config | {"augment": False}  # no augmentation, no fill: the trainer and its inputs agree
    assert build_training_model(plain, 1.25, 1e-3, 30.0)[1].input_shape == (None, 40, 40, 3)
    assert model_inputs(with_record, plain).shape == (2, 40, 40, 3)


def test_mean_predictions_averages_models_photo_by_photo_and_refuses_other_photos(tmp_path):
    """`bench/mean_predictions.py` (real subprocess): the mean of two models' files, and their errors' correlation."""
    import csv
    import subprocess
    import sys

    from edge_app.config import PROJECT_ROOT
    from training.evaluate import write_predictions

    rng = np.random.default_rng(3)
    ages = np.r_[rng.integers(13, 18, 30), rng.integers(25, 60, 60)].astype(float)
    names = [f"{i}.jpg" for i in range(len(ages))]
    shared = rng.normal(0, 4, len(ages))  # an error both models make
    files = []
    for k in range(2):
        files.append(tmp_path / f"model{k}.csv")
        write_predictions(files[-1], ["utkface"] * len(ages), names, ages, ages + shared + rng.normal(0, 1, len(ages)))
    script = [sys.executable, str(PROJECT_ROOT / "bench" / "mean_predictions.py")]
    out = tmp_path / "mean.csv"
    done = subprocess.run([*script, *map(str, files), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(out) as file:
        mean = {r["file_name"]: float(r["predicted_age"]) for r in csv.DictReader(file)}
    estimates = []
    for path in files:
        with open(path) as file:
            estimates.append({r["file_name"]: float(r["predicted_age"]) for r in csv.DictReader(file)})
    assert all(mean[n] == pytest.approx((estimates[0][n] + estimates[1][n]) / 2, abs=1e-4) for n in names)
    line = done.stdout.splitlines()[-1]
    correlation = float(line.split("correlation ")[1].split()[0])
    assert line.startswith("errors of files 1 and 2") and 0.8 < correlation < 1.0  # the shared error dominates

    other = tmp_path / "other.csv"  # one photo fewer
    write_predictions(other, ["utkface"] * (len(ages) - 1), names[1:], ages[1:], ages[1:])
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for args, message in [
        ([files[0], other, "--out", tmp_path / "x.csv"], "file 2 holds 0 photos file 1 lacks and lacks 1 of its"),
        ([files[0], files[1], "--out", files[1]], "is one of the inputs; expected a new file name"),
        ([files[0], files[1], "--out", notes], "holds a file that is not a predictions file and would be lost"),
        ([files[0], "--out", tmp_path / "x.csv"], "1 predictions file given; expected 2 or more"),
    ]:
        refused = subprocess.run([*script, *map(str, args)], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "x.csv").exists() and notes.read_text() == "mine\n"
