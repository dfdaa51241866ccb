"""train -> export -> evaluate on tiny datasets built from the bundled clip (no dataset images)."""

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edge_app.age_model import AgeRegressor
from edge_app.cli import main
from edge_app.config import AgeModelConfig
from training.data import load_labels, split_indices

pytestmark = pytest.mark.slow

TINY = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--seed", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def utk_run(tmp_path_factory, datasets):
    run = tmp_path_factory.mktemp("runs") / "utk"
    ok(invoke("train", "--data", datasets["utkface"], "--out", run, "--val-fraction", "0.3", *TINY))
    return run


def test_train_report_numbers_match_the_data(utk_run, datasets):
    report = json.loads((utk_run / "report.json").read_text())
    images = load_labels(datasets["utkface"])
    train, val = split_indices(images, 0.3, 1)
    assert report["images"] == 30 and report["unreadable"] == 0 and report["layout"] == "utkface"
    assert (report["train_images"], report["val_images"]) == (len(train), len(val))
    mean = images.age_years[train].mean()
    assert report["dummy_val_mae"] == pytest.approx(np.abs(images.age_years[val] - mean).mean(), abs=1e-4)
    with open(utk_run / "history.csv") as file:
        history = list(csv.DictReader(file))
    assert len(history) == 1 and report["best_val_mae"] == pytest.approx(float(history[0]["val_mae"]))
    for name in ("model.keras", "training_curve.png", "train_config.json"):
        assert (utk_run / name).stat().st_size > 0
    assert not (utk_run / "backup").exists()  # a finished run leaves no resume state


def test_train_refuses_to_overwrite_and_resume_of_a_finished_run(utk_run, datasets):
    line = one_error_line(invoke("train", "--data", datasets["utkface"], "--out", utk_run, *TINY))
    assert "not empty" in line and "--resume" in line
    line = one_error_line(invoke("train", "--data", datasets["utkface"], "--out", utk_run, "--resume", *TINY))
    assert "already finished" in line


def test_export_then_evaluate_reproduces_the_card(utk_run, datasets, tmp_path):
    model = tmp_path / "models" / "tiny.tflite"
    result = ok(invoke("export", "--model", utk_run / "model.keras", "--data", datasets["utkface"],
                       "--out", model, "--calibration-images", "16"))
    card = json.loads(model.with_suffix(".json").read_text())
    n_val = len(split_indices(load_labels(datasets["utkface"]), 0.3, 1)[1])
    assert f"int8 validation MAE {card['mae']:.2f}" in result.output
    assert card["input_size"] == 32 and card["architecture"] == "ResNet50 regressor"
    assert card["crop"] == {"margin": 0.1, "pad": "edge"}
    assert card["training_data"]["licence"].startswith("UTKFace") and card["validation"]["images"] == n_val
    assert abs(card["mae"] - card["float_mae"]) <= 0.5
    assert set(card["calibration"]["margin_years_to_flag_share_of_minors"]) == {"0.95", "0.99", "0.995"}
    regressor = AgeRegressor(AgeModelConfig(model_path=str(model)))  # LiteRT loads what we ship
    assert regressor.predict(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2,)

    predictions, report_path, markdown = tmp_path / "p.csv", tmp_path / "r.json", tmp_path / "r.md"
    result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--split", "val",
                       "--predictions", predictions, "--report", report_path, "--markdown", markdown))
    report = json.loads(report_path.read_text())
    assert report["errors"]["mae"] == pytest.approx(card["mae"], abs=1e-3)  # the card's MAE, reproduced
    with open(predictions) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == report["scored"] == n_val
    csv_mae = np.mean([abs(float(r["predicted_age"]) - float(r["real_age"])) for r in rows])
    assert csv_mae == pytest.approx(report["errors"]["mae"], abs=0.01)
    minors = [r for r in rows if float(r["real_age"]) < 18]
    flagged = [r for r in minors if float(r["predicted_age"]) < 18 + card["mae"]]
    expected_share = len(flagged) / len(minors) if minors else None  # no minors: no share, not 0%
    assert report["policy"]["minors_flagged"] == pytest.approx(expected_share)
    adults = [r for r in rows if float(r["real_age"]) >= 25]
    needless = [r for r in adults if float(r["predicted_age"]) < 18 + card["mae"]]
    assert report["policy"]["age_25_plus_flagged"] == pytest.approx(len(needless) / len(adults))
    assert set(report["by_gender"]) == {"male", "female"} and report["by_race"]
    assert report_path.with_suffix(".error_by_age.png").stat().st_size > 0
    assert f"MAE {report['errors']['mae']:.2f} years" in result.output
    assert f"| all | {n_val} | {report['errors']['mae']:.2f} |" in markdown.read_text()
    assert "| female |" in markdown.read_text()

    keras_report = tmp_path / "k.json"
    ok(invoke("evaluate", "--model", utk_run / "model.keras", "--data", datasets["utkface"], "--split", "val",
              "--predictions", tmp_path / "k.csv", "--report", keras_report))
    assert json.loads(keras_report.read_text())["errors"]["mae"] == pytest.approx(card["float_mae"], abs=1e-3)


def test_export_refuses_a_model_worse_than_the_tolerance(utk_run, datasets, tmp_path):
    model = tmp_path / "refused.tflite"
    result = invoke("export", "--model", utk_run / "model.keras", "--data", datasets["utkface"],
                    "--out", model, "--calibration-images", "16", "--max-mae-increase", "-100")
    # Progress lines come first (this is a measured refusal, not bad input); the error is the last line.
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert lines[-1].startswith("Error: ") and "worse than the float model" in lines[-1]
    assert "nothing written" in lines[-1]
    assert list(tmp_path.iterdir()) == []


def test_evaluate_detect_faces_lists_photos_without_a_face(utk_run, datasets, tmp_path):
    data = tmp_path / "utk"
    shutil.copytree(datasets["utkface"], data)
    import cv2

    cv2.imwrite(str(data / "30_0_0_blank.jpg"), np.full((120, 120, 3), 90, np.uint8))
    report_path = tmp_path / "r.json"
    ok(invoke("evaluate", "--model", utk_run / "model.keras", "--data", data, "--detect-faces",
              "--predictions", tmp_path / "p.csv", "--report", report_path, "--margin", "5"))
    report = json.loads(report_path.read_text())
    assert report["no_face_files"] == ["30_0_0_blank.jpg"] and report["scored"] == 30


@pytest.mark.parametrize(("layout", "split"), [("seeds", (24, 6)), ("appa-real", (18, 6))])
def test_train_on_the_other_layouts(tmp_path, datasets, layout, split):
    run = tmp_path / "run"
    ok(invoke("train", "--data", datasets[layout], "--out", run, "--val-fraction", "0.2", *TINY))
    report = json.loads((run / "report.json").read_text())
    assert report["layout"] == layout and report["images"] == 30
    if layout == "appa-real":  # its own split: 18 train, 6 valid (test left out)
        assert (report["train_images"], report["val_images"]) == split
    else:
        assert report["train_images"] + report["val_images"] == 30


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path, datasets):
    data = tmp_path / "seeds"
    shutil.copytree(datasets["seeds"], data)
    (data / "final_files" / "000003.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    run = tmp_path / "run"
    result = ok(invoke("train", "--data", data, "--out", run, *TINY))
    report = json.loads((run / "report.json").read_text())
    assert report["unreadable"] == 1 and report["unreadable_files"][0].endswith("000003.jpg")
    assert "1 unreadable images skipped" in result.output


def touch(folder, name, text="x"):
    (folder / name).write_text(text)
    return folder


def labels(tmp_path, rows):
    data = tmp_path / "d"
    (data / "final_files").mkdir(parents=True)
    (data / "labels.csv").write_text("file_name,real_age\n" + "\n".join(rows) + "\n")
    return data


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "holds no labels and no images; expected one of"),
        (lambda d: (d / "final_files").mkdir() or d, "has final_files/ but no labels.csv"),
        (lambda d: labels(d, ["a.jpg,30", "b.jpg,-3"]), "labels.csv line 3: age '-3' is outside 0-120"),
        (lambda d: labels(d, ["a.jpg,abc"]), "labels.csv line 2: age 'abc' is not a number"),
        (lambda d: touch(d, "abc_0_0_x.jpg"), "abc_0_0_x.jpg: file name does not start with an age"),
        (lambda d: touch(d, "-3_0_0_x.jpg"), "-3_0_0_x.jpg: age '-3' is outside"),
        (lambda d: touch(d, "labels.csv", "name,age\n"), "missing column 'file_name'"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, make, match):
    import re

    line = one_error_line(invoke("train", "--data", make(tmp_path), "--out", tmp_path / "run", *TINY))
    assert re.search(match, line), line
    assert not (tmp_path / "run").exists()  # nothing written: the corrected command can use the same --out


def test_imagenet_weights_offline_suggest_alternatives(tmp_path, datasets, monkeypatch):
    from keras.src.applications import resnet

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(resnet.file_utils, "get_file", offline)
    args = ["train", "--data", datasets["utkface"], "--out", tmp_path / "run", "--image-size", "32", "--epochs", "1"]
    line = one_error_line(invoke(*args))
    assert "could not get ImageNet weights" in line and "--weights PATH" in line and "--weights none" in line
    assert not (tmp_path / "run").exists()


def test_eda_counts_per_band(tmp_path, datasets):
    result = ok(invoke("eda", datasets["utkface"], "--out", tmp_path / "eda"))
    summary = json.loads((tmp_path / "eda" / "summary.json").read_text())
    ages = np.array([5 + 3 * i for i in range(30)])
    assert summary["count"] == 30 and summary["median_age_years"] == pytest.approx(np.median(ages))
    assert summary["bands"]["0-12"] == int((ages <= 12).sum()) and summary["bands"]["60+"] == int((ages >= 60).sum())
    assert (tmp_path / "eda" / "age_histogram.png").stat().st_size > 0 and (tmp_path / "eda" / "samples.png").exists()
    assert "30 photos (utkface)" in result.output


def test_resume_continues_an_interrupted_run(tmp_path, datasets):
    import keras

    from training.train import TrainConfig, train

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first epoch

    config = TrainConfig(data_dir=str(datasets["seeds"]), out_dir=str(tmp_path / "run"), image_size=32, epochs=3,
                         batch_size=8, weights="none", seed=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt()])
    assert (tmp_path / "run" / "backup").is_dir() and not (tmp_path / "run" / "report.json").exists()
    report = train(config, resume=True)
    with open(tmp_path / "run" / "history.csv") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == [0, 1, 2] and report["epochs_run"] == 3  # epoch 0 was not trained twice
    assert not (tmp_path / "run" / "backup").exists()


def test_preprocessing_inside_the_model_is_exact_in_float_and_int8(tmp_path):
    """The .tflite takes uint8 RGB; BGR order and ImageNet means must survive int8 conversion."""
    import keras

    from edge_app.age_model import load_interpreter_class
    from training.export import convert_int8
    from training.model import IMAGENET_BGR_MEAN, ResNetPreprocess

    keras.mixed_precision.set_global_policy("float32")
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(ResNetPreprocess()(inputs))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([np.array([[1.0], [0.5], [0.25]], np.float32), np.array([200.0], np.float32)])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3)).astype(np.uint8)
    images[:10, ..., 0] = 255  # strongly red images: a channel swap cannot hide
    bgr_means = images[..., ::-1].reshape(40, -1, 3).mean(axis=1) - np.array(IMAGENET_BGR_MEAN)
    expected = bgr_means @ np.array([1.0, 0.5, 0.25]) + 200
    np.testing.assert_allclose(model.predict(images.astype(np.float32), verbose=0)[:, 0], expected, rtol=1e-4)

    path = tmp_path / "pre.tflite"
    convert_int8(model, images, path)
    interpreter = load_interpreter_class()(model_path=str(path))
    interpreter.allocate_tensors()
    got = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, 0])
    # int8 steps of ~1 unit on each channel mean: far below the ~100-unit swing between images.
    assert np.abs(np.array(got) - expected).max() < 3.0
