"""train -> export -> evaluate on tiny datasets built from the bundled clip (no dataset images)."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_app.age_model import AgeRegressor
from edge_app.cli import main
from edge_app.config import PROJECT_ROOT, AgeModelConfig
from edge_app.errors import AgecheckError
from edge_app.model_card import ModelCard, sha256_of
from training.data import load_labels, split_indices
from training.pack import load_pack

pytestmark = pytest.mark.slow

TINY = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "8",
        "--seed", "1"]


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
    from training.imbalance import lds_weights

    report = json.loads((utk_run / "report.json").read_text())
    images = load_labels(datasets["utkface"])
    train, val = split_indices(images, 0.3, 1)
    counts = report["pack"]["sources"]["utkface"]
    assert counts["photos"] == 30 and counts["unreadable"] == 0 and counts["no_face_used_whole"] == 0
    assert (report["train_images"], report["val_images"]) == (len(train), len(val))
    assert report["per_source"]["utkface"]["val_images"] == len(val)
    # The output starts at the *weighted* training mean: rare ages weigh more (LDS).
    mean = np.average(images.age_years[train], weights=lds_weights(images.age_years[train]))
    assert report["train_mean_age_years"] == pytest.approx(mean, abs=1e-3)
    assert report["dummy_val_mae"] == pytest.approx(np.abs(images.age_years[val] - mean).mean(), abs=1e-3)
    with open(utk_run / "history.csv") as file:
        history = list(csv.DictReader(file))
    assert len(history) == 1 and report["best_val_mae"] == pytest.approx(float(history[0]["val_mae"]))
    for name in ("model.keras", "training_curve.png", "train_config.json", "crops.npz"):
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
    assert f"int8 validation MAE {card['mae']:.2f} years under the camera mix" in result.output
    assert card["input_size"] == 32 and card["architecture"] == "ResNet50 regressor"
    assert "fine_tuned_from" not in card["training"]  # trained from scratch
    assert card["crop"] == {"margin": 0.1, "pad": "edge", "align": True}
    assert card["detector"] == {"model": "face_detection_full_range_sparse.tflite", "min_detection_confidence": 0.5,
                                "max_input_side_px": 480, "canvas": 3.0}
    from training.export import detector_from_card
    assert detector_from_card(card | {"detector": card["detector"] | {"max_input_side_px": 0}}).max_input_side_px == 0
    [source] = card["training_data"]["sources"]
    assert source["name"] == "utkface" and source["licence"].startswith("UTKFace") and source["images"] == 30
    assert card["validation"]["images"] == n_val and card["validation"]["margin_measured_under"] == "camera"
    assert ModelCard.load(model).validation_split == (0.3, 1)  # as the run split (--val-fraction 0.3, seed 1)
    assert card["camera"]["errors"]["mae"] == pytest.approx(card["mae"], abs=1e-3)
    assert card["clean"]["errors"]["mae"] == pytest.approx(card["clean_mae"], abs=1e-3)
    assert abs(card["mae"] - card["float_mae"]) <= 0.5
    assert set(card["calibration"]["margin_years_to_flag_share_of_minors"]) == {"0.95", "0.99", "0.995"}
    table = ModelCard.load(model).tradeoff  # whom each limit asks, on the same photos as the margin
    assert [row["limit_years"] for row in table] == list(range(16, 46))
    limit = 18 + card["mae"]  # the same photos at the card's own margin sit between the rows around it
    below = [r for r in table if r["limit_years"] <= limit][-1]
    above = [r for r in table if r["limit_years"] > limit][0]
    policy = card["camera"]["policy"]
    compared = 0
    for group, policy_key in (("under_18", "minors_flagged"), ("age_18_24", "age_18_24_flagged"),
                              ("age_25_plus", "age_25_plus_flagged")):
        shares = [row[group] for row in table]
        if policy[policy_key] is None:  # no photo of that age in the tiny validation part
            assert set(shares) == {None}
            continue
        assert shares == sorted(shares) and 0 <= shares[0] and shares[-1] <= 1, group  # higher limits never ask fewer
        assert below[group] <= policy[policy_key] <= above[group], group
        compared += 1
    assert compared >= 2
    regressor = AgeRegressor(AgeModelConfig(model_path=str(model)))  # LiteRT loads what we ship
    assert regressor.predict(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2,)

    predictions, report_path, markdown = tmp_path / "p.csv", tmp_path / "r.json", tmp_path / "r.md"
    result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--split", "val",
                       "--predictions", predictions, "--report", report_path, "--markdown", markdown))
    report = json.loads(report_path.read_text())
    assert report["errors"]["mae"] == pytest.approx(card["clean_mae"], abs=1e-3)  # the card's clean MAE, reproduced
    assert report["degradation"] == "none" and report["key"] == card["clean"]["key"]
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

    camera = tmp_path / "c.json"
    result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--split", "val", "--degrade",
                       "camera", "--seed", "1", "--predictions", tmp_path / "c.csv", "--report", camera))
    assert json.loads(camera.read_text())["errors"]["mae"] == pytest.approx(card["mae"], abs=1e-3)  # the margin
    assert "degradation: camera" in result.output

    keras_report = tmp_path / "k.json"
    ok(invoke("evaluate", "--model", utk_run / "model.keras", "--data", datasets["utkface"], "--split", "val",
              "--predictions", tmp_path / "k.csv", "--report", keras_report))
    assert json.loads(keras_report.read_text())["errors"]["mae"] == pytest.approx(card["float_mae"], abs=1e-3)

    # bench/compare_models.py: the int8 model against its float source, paired on the same photos
    compare = [sys.executable, str(PROJECT_ROOT / "bench" / "compare_models.py")]
    margins = [str(card["mae"]), str(card["mae"] + 1)]
    paired = subprocess.run([*compare, predictions, tmp_path / "k.csv", "--margins", *margins,
                             "--out", tmp_path / "cmp"], capture_output=True, text=True, timeout=120)
    assert paired.returncode == 0, paired.stderr
    rows = json.loads((tmp_path / "cmp.json").read_text())
    assert list(rows) == ["all", "utkface"]
    gate = rows["all"]["gate"]
    assert gate["minors"] == sum(float(r["real_age"]) < 18 for r in csv.DictReader(open(predictions)))
    share = report["policy"]["minors_flagged"] or 0  # the int8 report's share (None: no minors)
    assert gate["flagged_before"] == pytest.approx(share * gate["minors"])
    assert gate["flagged_after"] == gate["flagged_before"] - gate["lost"] + gate["gained"]
    matched = rows["all"]["matched"]  # the float model's gate widened until it asks as many minors
    assert matched["minors_before"] == gate["flagged_before"] and matched["minors_after"] >= gate["flagged_before"]
    assert f"from margin {matched['margin_after']:.1f} the candidate's estimates flag" in paired.stdout
    assert rows["all"]["mae_before"] == pytest.approx(card["clean_mae"], abs=0.01)
    assert rows["all"]["mae_after"] == pytest.approx(card["float_mae"], abs=0.01)
    low, high = rows["all"]["mae_change_ci95"]
    assert low <= rows["all"]["mae_change"] <= high
    assert f"| {rows['all']['mae_before']:.2f} → {rows['all']['mae_after']:.2f} |" in paired.stdout
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("".join(predictions.read_text().splitlines(keepends=True)[:-1]))  # one photo less
    refused = subprocess.run([*compare, predictions, fewer], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == ("error: the files score different photos (1 only in BEFORE, 0 only in AFTER); "
                                      "expected the same sources, split, --degrade and --seed")
    negative = subprocess.run([*compare, predictions, predictions, "--margins", "7", "-1"],
                              capture_output=True, text=True, timeout=120)
    assert negative.returncode == 2 and negative.stderr.strip() == (
        "error: --margins 7.0 -1.0: expected margins of 0 years or more")


def test_evaluate_reports_the_key_figure_beside_mae(utk_run, datasets, tmp_path):
    from training.metrics import key_figure

    report_path, markdown = tmp_path / "r.json", tmp_path / "r.md"
    result = ok(invoke("evaluate", "--model", utk_run / "model.keras", "--data", datasets["utkface"],
                       "--predictions", tmp_path / "p.csv", "--report", report_path, "--markdown", markdown))
    report = json.loads(report_path.read_text())
    with open(tmp_path / "p.csv") as file:
        rows = list(csv.DictReader(file))
    true = np.array([float(r["real_age"]) for r in rows])
    predicted = np.array([float(r["predicted_age"]) for r in rows])
    expected = key_figure(true, predicted)
    ci, expected_ci = report["key"].pop("age_13_17_flagged_ci95"), expected.pop("age_13_17_flagged_ci95")
    # The CSV rounds estimates (to 0.0001 since 2026-11-28, 0.01 before): a 13-17 and a 25+ estimate
    # that close may tie or swap there (the tiny model's estimates lie within a year), each moving the
    # AUC by 1/pairs; the pairs within 0.01 bound it.
    teens, adults = predicted[(true >= 13) & (true < 18)], predicted[true >= 25]
    swappable = (np.abs(teens[:, None] - adults[None, :]) <= 0.01).mean()
    auc, expected_auc = report["key"].pop("auc_13_17_vs_25_plus"), expected.pop("auc_13_17_vs_25_plus")
    assert auc == pytest.approx(expected_auc, abs=swappable + 1e-9)
    assert report["key"] == pytest.approx(expected, abs=0.01)
    assert ci == pytest.approx(expected_ci, abs=0.05)
    assert report["key"]["age_13_17_count"] == int(((true >= 13) & (true < 18)).sum()) > 0
    assert "13-17 flagged when 10% of 25+ are:" in result.output and "AUC 13-17 vs 25+" in result.output
    assert "**Key figure**" in markdown.read_text() and "(95% CI " in markdown.read_text()


def test_evaluate_rewrites_its_own_files_and_refuses_any_other(utk_run, datasets, tmp_path):
    """A rerun rewrites an earlier evaluation's files (plots too); a training run's report, the model, a
    folder, one file named twice or a plot of the user's where the report's would go are refused before
    anything is scored, and what they hold is kept."""
    outputs = ["--predictions", tmp_path / "p.csv", "--report", tmp_path / "r.json", "--markdown", tmp_path / "r.md"]
    scored = ["--model", utk_run / "model.keras", "--data", datasets["utkface"], "--max-images", "8"]
    ok(invoke("evaluate", *scored, *outputs))
    (tmp_path / "p.csv").write_text((tmp_path / "p.csv").read_text() + "stale,row,1,2\n")
    ok(invoke("evaluate", *scored, *outputs))  # the rerun writes over the first
    assert "stale" not in (tmp_path / "p.csv").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["scored"] == 8

    from PIL import Image

    assert Image.open(tmp_path / "r.tradeoff.png").text["Source"] == "agecheck evaluate"
    Image.new("RGB", (4, 4)).save(tmp_path / "r.tradeoff.png")  # a plot from before the mark, beside its report
    ok(invoke("evaluate", *scored, *outputs))
    assert Image.open(tmp_path / "r.tradeoff.png").size != (4, 4)
    mine = tmp_path / "mine.error_by_age.png"  # a plot of the user's own, where a new report's would go
    Image.new("RGB", (4, 4)).save(mine)
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    training_report = (utk_run / "report.json").read_bytes()
    model = (utk_run / "model.keras").read_bytes()
    for args, message in [
        (["--report", utk_run / "report.json"],
         f"--report {utk_run / 'report.json'} holds a file agecheck evaluate did not write (a training run's report"),
        (["--markdown", notes], f"--markdown {notes} holds a file agecheck evaluate did not write"),
        (["--predictions", utk_run / "model.keras"], "is the model being scored; expected another file name"),
        (["--markdown", tmp_path / "r.json"], f"--markdown {tmp_path / 'r.json'} is also --report"),
        (["--report", tmp_path], f"--report {tmp_path} is a folder; expected a file name"),
        (["--report", tmp_path / "mine.json"], f"--report's error by age plot {mine} holds a file agecheck "
                                               f"evaluate did not write"),
    ]:
        assert message in one_error_line(invoke("evaluate", *scored, *outputs, *args))
    assert (utk_run / "report.json").read_bytes() == training_report and (utk_run / "model.keras").read_bytes() == model
    assert notes.read_text() == "# my notes\n" and Image.open(mine).size == (4, 4)
    assert not (tmp_path / "mine.json").exists()


def test_export_with_views_cards_them_and_measures_every_figure_with_them(utk_run, datasets, tmp_path):
    model = tmp_path / "models" / "views.tflite"
    ok(invoke("export", "--model", utk_run / "model.keras", "--data", datasets["utkface"], "--out", model,
              "--calibration-images", "16", "--view-margins", "0.3", "--view-margins", "0.0"))
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["crop"] == {"margin": 0.1, "pad": "edge", "align": True, "view_margins": [0.3, 0.0]}
    assert card["test_time"] == ("mean over 3 framings of the face (crop margins 0.1, 0.3, 0), "
                                 "each the mean of its own and its mirror image's estimate")
    result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--split", "val",
                       "--predictions", tmp_path / "p.csv", "--report", tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())  # evaluate averages the card's views: the same figures
    assert "mean of 3 views" in result.output and report["key"] == card["clean"]["key"]
    assert report["errors"]["mae"] == pytest.approx(card["clean_mae"], abs=1e-3)
    line = one_error_line(invoke("export", "--model", utk_run / "model.keras", "--data", datasets["utkface"],
                                 "--out", tmp_path / "bad.tflite", "--view-margins", "3"))
    assert line.startswith("Error: --view-margins 3.0: crop view_margins must each be in [0, 2]")
    assert not (tmp_path / "bad.tflite").exists()


def test_evaluate_averages_the_cards_test_time_views(datasets, tmp_path):
    from tests.models import brightness_model

    model = brightness_model(tmp_path / "models" / "bright.tflite")
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())

    def scored(crop: dict, name: str):
        card_path.write_text(json.dumps(card | {"crop": crop}))  # the card, not the .tflite: its sha256 holds
        result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--report",
                           tmp_path / f"{name}.json", "--predictions", tmp_path / f"{name}.csv",
                           "--markdown", tmp_path / f"{name}.md"))
        with open(tmp_path / f"{name}.csv") as file:
            predicted = {row["file_name"]: float(row["predicted_age"]) for row in csv.DictReader(file)}
        return result, json.loads((tmp_path / f"{name}.json").read_text()), predicted

    _, one, tight = scored({"margin": 0.0, "pad": "edge"}, "tight")
    _, _, wide = scored({"margin": 0.6, "pad": "edge"}, "wide")
    result, report, both = scored({"margin": 0.0, "pad": "edge", "view_margins": [0.6]}, "both")
    assert tight.keys() == wide.keys() == both.keys() and len(both) == 30
    assert max(abs(tight[f] - wide[f]) for f in both) > 1  # the framings' "ages" differ
    for name in both:
        assert both[name] == pytest.approx((tight[name] + wide[name]) / 2, abs=0.011)  # CSV rounding: 0.0001
    assert one["test_time_margins"] == [0.0] and report["test_time_margins"] == [0.0, 0.6]
    assert "test-time mean of 2 views, crop margins 0, 0.6" in result.output
    assert "Each estimate is the mean of 2 views, crop margins 0, 0.6" in (tmp_path / "both.md").read_text()
    assert "views" not in (tmp_path / "tight.md").read_text()


@pytest.mark.parametrize(("args", "match"), [
    (["--degrade", "fog"], "--degrade 'fog': expected one of downscale, blur"),
    (["--max-images", "-1"], "--max-images -1: expected 0"),
])
def test_evaluate_bad_options_are_one_clear_error(utk_run, datasets, tmp_path, args, match):
    line = one_error_line(invoke("evaluate", "--model", utk_run / "model.keras", "--data", datasets["utkface"],
                                 "--report", tmp_path / "r.json", "--predictions", tmp_path / "p.csv", *args))
    assert match in line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("args", "match"), [
    (["--rank-weight", "-1"], "--rank-weight -1.0 is not allowed: expected in [0, 10]"),
    (["--lds-power", "3"], "--lds-power 3.0 is not allowed: expected in [0, 2]"),
    (["--consistency", "11"], "--consistency 11.0 is not allowed: expected in [0, 10]"),
])
def test_train_bad_loss_options_are_one_clear_error_before_anything_is_written(datasets, tmp_path, args, match):
    line = one_error_line(invoke("train", "--data", datasets["utkface"], "--out", tmp_path / "run", *TINY, *args))
    assert match in line
    assert not (tmp_path / "run").exists()


def test_train_on_several_sources_reports_each(tmp_path, datasets):
    run = tmp_path / "run"
    result = ok(invoke("train", "--data", datasets["utkface"], "--data", datasets["seeds"], "--out", run,
                       "--val-fraction", "0.3", "--border-fill", "0.5", "--weight-decay", "0.01", "--mask-share", "0.3",
                       "--rank-weight", "1", *TINY))
    report = json.loads((run / "report.json").read_text())
    inside = load_pack(run / "crops.npz").inside  # the pack records where each photo ends, for --border-fill
    assert inside.shape == (60, 40, 40) and (inside[:, 15:25, 15:25] == 255).all()
    assert set(report["per_source"]) == {"utkface", "seeds"}
    assert report["pack"]["sources"]["seeds"]["photos"] == report["pack"]["sources"]["utkface"]["photos"] == 30
    for name in ("utkface", "seeds"):
        val = len(split_indices(load_labels(datasets[name]), 0.3, 1)[1])
        assert report["per_source"][name]["val_images"] == val  # each source keeps its own validation part
    assert report["train_images"] + report["val_images"] == 60
    assert "by source: utkface" in result.output and "seeds" in result.output
    assert "; 0 unreadable images skipped, " in result.output

    model = tmp_path / "two.tflite"
    ok(invoke("export", "--model", run / "model.keras", "--out", model, "--calibration-images", "16"))
    card = json.loads(model.with_suffix(".json").read_text())  # --data defaults to the run's own sources
    assert [s["name"] for s in card["training_data"]["sources"]] == ["utkface", "seeds"]
    assert set(card["camera"]["by_source"]) == {"utkface", "seeds"}
    assert card["training"]["border_fill"] == 0.5 and card["training"]["weight_decay"] == 0.01
    assert card["training"]["mask_share"] == 0.3 and card["training"]["rank_weight"] == 1.0

    report_path, markdown = tmp_path / "r.json", tmp_path / "r.md"
    result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--data", datasets["seeds"],
                       "--split", "val", "--degrade", "jpeg", "--report", report_path,
                       "--predictions", tmp_path / "p.csv", "--markdown", markdown))
    report = json.loads(report_path.read_text())
    assert report["degradation"] == "jpeg" and set(report["by_source"]) == {"utkface", "seeds"}
    assert sum(s["scored"] for s in report["by_source"].values()) == report["scored"]
    assert "| utkface |" in markdown.read_text() and "seeds: " in result.output


def test_fine_tuning_starts_from_the_earlier_runs_weights(utk_run, datasets, tmp_path):
    import keras

    run = tmp_path / "tuned"
    # A rate of 1e-12 leaves the weights where they start: those of --init-model, not fresh ones,
    # and at another input side too (ResNet50 and the pooling are fully convolutional).
    ok(invoke("train", "--data", datasets["utkface"], "--out", run, "--val-fraction", "0.3", *TINY[:2],
              "--image-size", "48", *TINY[4:-2], "--seed", "2", "--learning-rate", "1e-12",
              "--init-model", utk_run / "model.keras"))
    config = json.loads((run / "train_config.json").read_text())
    assert config["init_model"] == str(utk_run / "model.keras") and config["init_model_input_size"] == 32
    assert keras.models.load_model(run / "model.keras", compile=False).input_shape == (None, 48, 48, 3)
    start = keras.models.load_model(utk_run / "model.keras", compile=False).trainable_weights
    tuned = keras.models.load_model(run / "model.keras", compile=False).trainable_weights
    assert len(tuned) == len(start) > 100
    def largest_difference(weights, others):
        return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(weights, others, strict=True))

    assert largest_difference(tuned, start) < 1e-6
    model = tmp_path / "tuned.tflite"
    ok(invoke("export", "--model", run / "model.keras", "--out", model, "--calibration-images", "16"))
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["training"]["fine_tuned_from"] == f"{utk_run.name}/model.keras"  # no local path in a card
    assert card["training"]["fine_tuned_from_input_size"] == 32 and card["input_size"] == 48
    # The same seed's fresh weights, those a run from scratch starts from, are elsewhere (the test can fail).
    from training.model import build_model

    keras.utils.set_random_seed(2)
    fresh = build_model(32, "none", 1e-3, initial_age_years=30.0).trainable_weights
    assert largest_difference(fresh, start) > 1e-3

    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)], name="sequential").save(other)
    for init, size, match in [(tmp_path / "none.keras", 32, "no such file; expected an earlier run's model.keras"),
                              (tmp_path / "none.tflite", 32, "no such file; expected an earlier run's model.keras or"),
                              (utk_run / "train_config.json", 32, "could not be loaded as a Keras model"),
                              (other, 32, "is a Keras model 'sequential' taking (8,); expected this project's "
                                          "'resnet50_age_regressor' taking square RGB images")]:
        line = one_error_line(invoke("train", "--data", datasets["utkface"], "--out", tmp_path / "bad", *TINY[:2],
                                     "--image-size", size, *TINY[4:], "--init-model", init))
        assert match in line, line
        assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_an_exported_tflite_gives_back_its_float_weights_and_can_be_fine_tuned(utk_run, datasets, tmp_path):
    """A shipped model whose run is gone: its .tflite is the start of a fine-tune."""
    import keras

    from training.export import load_float_model, predict_keras
    from training.from_tflite import frozen_batch_norms, regressor_from_tflite

    exported = tmp_path / "shipped.tflite"
    ok(invoke("export", "--model", utk_run / "model.keras", "--out", exported, "--calibration-images", "16"))
    original = load_float_model(utk_run / "model.keras")
    recovered = regressor_from_tflite(exported)
    assert len(frozen_batch_norms(recovered)) == 53  # every one of ResNet50's, folded by the export

    # Each convolution and its batch normalisation compute the original's kernel with the
    # normalisation folded in, to within half a quantisation step per output channel (the
    # export's per-channel scale).
    checked, backbone = 0, recovered.get_layer("resnet50")
    for layer in original.get_layer("resnet50").layers:
        if not layer.name.endswith("_bn"):
            continue
        conv = original.get_layer("resnet50").get_layer(layer.name.removesuffix("_bn") + "_conv")
        gamma, beta, mean, variance = (np.asarray(w) for w in layer.get_weights())
        scale = gamma / np.sqrt(variance + layer.epsilon)
        kernel, bias = (np.asarray(w) for w in conv.get_weights())
        folded_kernel, folded_bias = kernel * scale, (bias - mean) * scale + beta
        got_kernel, got_bias = (np.asarray(w) for w in backbone.get_layer(conv.name).get_weights())
        gain, shift, *_ = (np.asarray(w) for w in backbone.get_layer(layer.name).get_weights())
        got_kernel, got_bias = got_kernel * gain, got_bias * gain + shift  # the channel's scale sits in the norm
        step = np.abs(folded_kernel).reshape(-1, folded_kernel.shape[-1]).max(axis=0) / 127
        assert np.all(np.abs(got_kernel - folded_kernel) <= step * 0.5 + 1e-7), conv.name
        assert np.abs(got_bias - folded_bias).max() <= 1e-3 * max(1.0, np.abs(folded_bias).max()), conv.name
        checked += 1
    assert checked == 53
    pack = load_pack(utk_run / "crops.npz")
    side = pack.images.shape[1]
    crops = pack.images[:, (side - 32) // 2:(side + 32) // 2, (side - 32) // 2:(side + 32) // 2]
    before, after = predict_keras(original, crops), predict_keras(recovered, crops)
    assert np.abs(after - before).max() < 0.05 * np.abs(before).mean()
    # A batch normalisation set to the identity but left trainable would normalise by each
    # batch's statistics while training: the frozen ones give the same estimates in both modes.
    x = crops[:8].astype(np.float32)
    assert np.abs(np.asarray(recovered(x, training=True)) - np.asarray(recovered(x, training=False))).max() < 1e-3

    # bench/input_sides.py (real subprocess): the same weights at other sides, scored as the card's crops are
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "input_sides.py"), "--model", str(exported),
                           "--sides", "32", "48", "--out", str(tmp_path / "sides")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    at_32, at_48 = (keras.models.load_model(tmp_path / "sides" / f"s{n}" / "model.keras", compile=False)
                    for n in (32, 48))
    assert np.abs(predict_keras(at_32, crops) - after).max() < 1e-4 and at_48.input_shape == (None, 48, 48, 3)
    assert all(np.array_equal(a, b) for a, b in zip(at_48.get_weights(), recovered.get_weights(), strict=True))
    card = json.loads(exported.with_suffix(".json").read_text())
    scored = ok(invoke("evaluate", "--model", tmp_path / "sides" / "s48" / "model.keras", "--data", datasets["utkface"],
                       "--split", "val", "--margin", "5", "--max-images", "8", "--predictions", tmp_path / "s48.csv",
                       "--report", tmp_path / "s48.json"))
    assert json.loads((tmp_path / "s48.json").read_text())["scored"] == 8, scored.output
    assert json.loads((tmp_path / "sides" / "s48" / "train_config.json").read_text())["crop"] == card["crop"]
    small = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "input_sides.py"), "--model", str(exported),
                            "--sides", "16", "--out", str(tmp_path / "small")], capture_output=True, text=True)
    assert small.returncode == 2 and "expected input sides of 32 px or more" in small.stderr
    assert not (tmp_path / "small").exists()

    run = tmp_path / "tuned"
    ok(invoke("train", "--data", datasets["utkface"], "--out", run, "--val-fraction", "0.3", *TINY[:-2],
              "--seed", "2", "--learning-rate", "1e-12", "--init-model", exported))
    tuned = keras.models.load_model(run / "model.keras", compile=False)
    assert frozen_batch_norms(tuned) == frozen_batch_norms(recovered)  # still frozen after a fit
    assert np.abs(predict_keras(tuned, crops) - after).max() < 1e-3
    model = tmp_path / "tuned.tflite"
    start_sha256 = sha256_of(exported)
    exported.write_bytes(b"a later model under the same name")  # the card names the start, not the file now there
    ok(invoke("export", "--model", run / "model.keras", "--out", model, "--calibration-images", "16"))
    training = json.loads(model.with_suffix(".json").read_text())["training"]
    assert training["fine_tuned_from"] == f"{tmp_path.name}/shipped.tflite"
    assert training["fine_tuned_from_sha256"] == start_sha256

    detector = PROJECT_ROOT / "models" / "face_detection_short_range.tflite"
    line = one_error_line(invoke("train", "--data", datasets["utkface"], "--out", tmp_path / "bad", *TINY,
                                 "--init-model", detector))
    assert "expected the 53 convolutions and output unit of a ResNet50 regressor" in line, line
    assert not (tmp_path / "bad").exists()


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
    # The layouts differ only up to the pack; fitting a pack is the same for all (tests above).
    run = tmp_path / "run"
    ok(invoke("train", "--data", datasets[layout], "--out", run, "--val-fraction", "0.2", "--crops-only", *TINY))
    pack = load_pack(run / "crops.npz")
    assert pack.meta["sources"][datasets[layout].name]["photos"] == 30
    counts = (int((pack.split == "train").sum()), int((pack.split == "val").sum()))
    if layout == "appa-real":  # its own split: 18 train, 6 valid (test left out)
        assert counts == split
    else:
        assert sum(counts) == 30 and min(counts) > 0


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path, datasets):
    data = tmp_path / "seeds"
    shutil.copytree(datasets["seeds"], data)
    (data / "final_files" / "000003.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    run = tmp_path / "run"
    result = ok(invoke("train", "--data", data, "--out", run, "--crops-only", *TINY))
    counts = load_pack(run / "crops.npz").meta["sources"]["seeds"]
    assert counts["unreadable"] == 1 and counts["unreadable_files"] == ["000003.jpg"] and counts["photos"] == 30
    assert "(1 unreadable images skipped, 0 without a detected face used whole); fit it with" in result.output
    assert len(load_pack(run / "crops.npz")) == 29


def test_resume_with_another_cut_is_one_clear_error_and_changes_nothing(tmp_path, datasets):
    """A run's crops are cut once: --resume with another cut would fit crops other than the command says."""
    run, reuse = tmp_path / "run", tmp_path / "reuse"
    ok(invoke("train", "--data", datasets["seeds"], "--out", run, "--crops-only", *TINY))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = one_error_line(invoke("train", "--data", datasets["seeds"], "--out", run, "--resume", "--crops-only",
                                 *TINY[:2], "--image-size", "48", *TINY[4:]))
    assert "--image-size 32 (this command: 48)" in line and "choose another --out" in line
    assert "side in px" not in line  # the pack's side is the same change, said once
    # crops copied into a new run folder to be used again: no settings beside them, the pack's own are checked
    reuse.mkdir()
    shutil.copy(run / "crops.npz", reuse)
    line = one_error_line(invoke("train", "--data", datasets["seeds"], "--out", reuse, "--resume", "--crops-only",
                                 "--crop-margin", "0.3", *TINY))
    assert "--crop-margin 0.1 (this command: 0.3)" in line
    line = one_error_line(invoke("train", "--data", datasets["utkface"], "--out", reuse, "--resume", "--crops-only",
                                 *TINY))
    assert "--data seeds (this command: utkface)" in line
    from training.train import TrainConfig, check_resume  # canvas and detector have no option of their own

    other = TrainConfig(data_dirs=(str(datasets["seeds"]),), out_dir=str(reuse), image_size=32, canvas=2.0)
    with pytest.raises(AgecheckError, match=r"--canvas 3.0 \(this command: 2.0\)"):
        check_resume(reuse, other.to_dict(), None, fit_started=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert [p.name for p in reuse.iterdir()] == ["crops.npz"]
    # before the fit has begun its own settings may change; the same cut passes
    ok(invoke("train", "--data", datasets["seeds"], "--out", run, "--resume", "--crops-only", *TINY,
              "--learning-rate", "0.01"))
    assert json.loads((run / "train_config.json").read_text())["learning_rate"] == 0.01
    assert (run / "crops.npz").read_bytes() == before["crops.npz"]


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
        (lambda d: (d / "images").mkdir() or touch(d, "labels.csv", "file_name,real_age\n"),
         r"has labels.csv but no final_files/ folder for its images \(found images/\)"),
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
    args = ["train", "--data", datasets["utkface"], "--out", tmp_path / "run", "--image-size", "32", "--epochs", "2",
            "--weights", "imagenet"]
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

    config = TrainConfig(data_dirs=(str(datasets["seeds"]),), out_dir=str(tmp_path / "run"), image_size=32, epochs=3,
                         batch_size=8, weights="none", seed=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt()])
    assert (tmp_path / "run" / "backup").is_dir() and not (tmp_path / "run" / "report.json").exists()
    recorded = (tmp_path / "run" / "train_config.json").read_text()
    # once the fit has begun, the run's settings are its own (--epochs may grow: it counts the epochs done)
    with pytest.raises(AgecheckError, match=r"--learning-rate 0.0001 \(this command: 0.01\); "
                                            r"--rank-weight 0.0 \(this command: 1.0\); a resumed run keeps"):
        train(dataclasses.replace(config, learning_rate=0.01, rank_weight=1.0, epochs=4), resume=True)
    assert (tmp_path / "run" / "train_config.json").read_text() == recorded
    report = train(config, resume=True)
    with open(tmp_path / "run" / "history.csv") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == [0, 1, 2] and report["epochs_run"] == 3  # epoch 0 was not trained twice
    assert report["epochs_this_session"] == 2  # the speed counts the epochs trained now, not 1 or 3
    assert not (tmp_path / "run" / "backup").exists()


def test_resume_reads_a_run_older_than_a_setting_as_it_trained(tmp_path):
    """A run configured before --glasses-share existed trained without glasses, not with today's default."""
    from training.fit import setting
    from training.train import TrainConfig, check_resume

    settings = TrainConfig(data_dirs=("seeds",), out_dir=str(tmp_path)).to_dict()
    recorded = {k: v for k, v in settings.items() if k not in ("glasses_share", "rank_weight")}
    assert setting(recorded, "glasses_share") == 0.0 and setting(settings, "glasses_share") == 0.25
    with pytest.raises(AgecheckError, match=r"--glasses-share 0.0 \(this command: 0.25\)") as refused:
        check_resume(tmp_path, settings, recorded, fit_started=True)
    assert "rank-weight" not in str(refused.value)  # absent, it trained with 0: the command's 0 is the same
    check_resume(tmp_path, settings, recorded, fit_started=False)  # before the fit, a fit setting may change


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


def test_crop_here_fit_elsewhere_within_a_time_budget(tmp_path, datasets):
    """The GPU-machine path: --crops-only writes the pack, `python -m training.fit` fits it alone."""
    run = tmp_path / "run"
    result = ok(invoke("train", "--data", datasets["utkface"], "--out", run, "--val-fraction", "0.3", "--crops-only",
                       *TINY[:4], "--epochs", "50", *TINY[6:]))
    assert f"python -m training.fit {run}" in result.output
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == ["crops.npz", "train_config.json"]
    fitted = subprocess.run([sys.executable, "-m", "training.fit", str(run), "--time-budget-s", "1", "--no-backup"],
                            capture_output=True, text=True, timeout=600)
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    budget = json.loads((run / "budget.json").read_text())
    assert report["epochs_planned"] == budget["epochs_in_budget"] == 1  # 50 epochs cannot fit in 1 s
    assert report["epochs_run"] == 1 and (run / "model.keras").stat().st_size > 0
    missing = subprocess.run([sys.executable, "-m", "training.fit", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "does not exist; expected a run folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_till_frame_scores_each_photo_from_the_photo_and_from_a_till_frame(datasets, brightness_tflite, tmp_path):
    """bench/till_frame.py: the same photos both ways, each model, in compare_models' format."""
    twin = tmp_path / "twin" / brightness_tflite.name  # the same model under the same file name
    twin.parent.mkdir()
    for path in (brightness_tflite, brightness_tflite.with_suffix(".json")):
        shutil.copy(path, twin.parent / path.name)
    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "till_frame.py"), "--data", str(datasets["utkface"])]
    done = subprocess.run([*bench, "--model", str(brightness_tflite), "--model", str(twin), "--per-source", "0",
                           "--degrade", "none", "--out", str(tmp_path / "till.frame"), "--predictions-dir",
                           str(tmp_path / "pred")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "till.frame.json").read_text())
    rows = report["rows"]
    # a background with a face of its own is drawn again (bench/per_customer.background_without_faces)
    assert f"{report['backgrounds_redrawn']} backgrounds drawn again" in (tmp_path / "till.frame.md").read_text()
    names = [f"{brightness_tflite.parent.name}/{brightness_tflite.name}", f"twin/{brightness_tflite.name}"]
    assert [(r["model"], r["photos"], r["way"]) for r in rows] == [
        (name, photos, way) for name in names for photos in ("all", "utkface") for way in ("photo", "till frame")]
    files = sorted((tmp_path / "pred").glob("*.csv"))
    assert len(files) == 4
    tables = {f.stem: list(csv.DictReader(open(f))) for f in files}
    photo, frame = (tables[f"{brightness_tflite.parent.name}_bright_{way}"] for way in ("photo", "till_frame"))
    assert [r["file_name"] for r in photo] == [r["file_name"] for r in frame] and len(photo) == rows[0]["count"] > 0
    assert photo == tables["twin_bright_photo"]  # one model, one answer
    # "Age" is 100 x the crop's brightness: the face cut from the frame is the face cut from the photo,
    # give or take the till's background at the crop's edges and the MJPG clip.
    gap = [abs(float(a["predicted_age"]) - float(b["predicted_age"])) for a, b in zip(photo, frame, strict=True)]
    assert np.median(gap) < 3, gap
    refused = subprocess.run([*bench, "--model", str(brightness_tflite), "--degrade", "fog"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--degrade 'fog': expected none or one of" in refused.stderr


def test_crop_border_measures_the_framing_outside_the_photo_and_what_the_model_reads_there(
        datasets, brightness_tflite, tmp_path):
    """bench/crop_border.py: close-ups whose framing runs off the photo, filled three ways."""
    wide = tmp_path / "wide" / brightness_tflite.name  # the model with a card framing far beyond the face
    wide.parent.mkdir()
    shutil.copy(brightness_tflite, wide)
    card = json.loads(brightness_tflite.with_suffix(".json").read_text())
    card["crop"]["margin"] = 1.0
    wide.with_suffix(".json").write_text(json.dumps(card))
    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "crop_border.py"), "--data", str(datasets["utkface"]),
             "--model", str(wide)]
    done = subprocess.run([*bench, "--per-source", "0", "--margins", "0", "0.5", "1", "--out",
                           str(tmp_path / "border.v1")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "border.v1.json").read_text())
    assert result["settings"]["out"] == "border.v1" and result["settings"]["data"] == ["utkface"]
    row = result["rows"]["all"]
    assert row["faces"] == result["faces"] >= 4  # the validation part of 30 photos
    outside = list(row["outside_share_mean"].values())  # wider framings run off the close-ups
    assert outside[0] <= outside[1] < outside[2] and outside[2] > 0.2, outside
    fills = row["fills"]
    assert fills["edge"]["shift_years"]["mean"] == 0
    # "Age" is 100 x brightness: black where the framing leaves the photo reads younger
    assert fills["black"]["shift_years"]["mean"] < -0.5
    assert fills["black"]["errors"]["mae"] != fills["edge"]["errors"]["mae"]
    assert "| all |" in (tmp_path / "border.v1.md").read_text()
    refused = subprocess.run([*bench, "--data", str(tmp_path / "nowhere")], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr


def test_texture_bench_changes_only_the_pixels_of_each_face(datasets, brightness_tflite, tmp_path):
    """bench/texture.py: one detection per face, the same box cut from the clean and each changed photo."""
    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "texture.py"), "--data", str(datasets["utkface"]),
             "--model", str(brightness_tflite), "--per-source", "0"]
    done = subprocess.run([*bench, "--changes", "low_light", "overexposed", "colour_cast", "--out",
                           str(tmp_path / "texture.v1")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "texture.v1.json").read_text())
    assert result["settings"]["out"] == "texture.v1" and result["faces"] >= 4
    rows = result["rows"]["all"]
    assert list(rows) == ["clean", "low_light", "overexposed", "colour_cast"]
    assert all(r["errors"]["count"] == result["faces"] for r in rows.values())  # every face in every condition
    assert rows["clean"]["shift_years"]["mean"] == 0
    # "Age" is 100 x brightness: a darker photo reads younger, a brighter one older, and a colour
    # cast (gains whose mean is 1) moves it by a small fraction of either
    dark, bright = rows["low_light"]["shift_years"]["mean"], rows["overexposed"]["shift_years"]["mean"]
    assert dark < -10 and bright > 10, (dark, bright)
    assert abs(rows["colour_cast"]["shift_years"]["mean"]) < 0.2 * min(-dark, bright)
    assert "| overexposed |" in (tmp_path / "texture.v1.md").read_text()
    groups = result["groups"]  # UTKFace's file names label gender and race: the shifts per group
    assert set(groups) <= {"male", "female", "white", "black", "asian", "indian", "other"} and len(groups) >= 2
    assert sum(groups[g]["25+"] for g in ("male", "female") if g in groups) == \
        sum(groups[g]["25+"] for g in ("white", "black", "asian", "indian", "other") if g in groups)
    assert all(g["shift_years"]["overexposed"]["mean"] > 10 for g in groups.values())
    assert all(f"| {g} |" in (tmp_path / "texture.v1.md").read_text() for g in groups)
    # --on-crop: the same corruption on the cut crop, with the same effect on brightness
    on_crop = subprocess.run([*bench, "--changes", "overexposed", "--on-crop", "--out", str(tmp_path / "crop")],
                             capture_output=True, text=True, timeout=300)
    assert on_crop.returncode == 0, on_crop.stderr
    faces = result["faces"]
    result = json.loads((tmp_path / "crop.json").read_text())
    assert result["settings"]["on_crop"] and result["faces"] == faces
    assert result["rows"]["all"]["overexposed"]["shift_years"]["mean"] > 10
    assert "applied to the cut crop" in (tmp_path / "crop.md").read_text()
    refused = subprocess.run([*bench, "--changes", "fog"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: --changes fog: expected names from downscale, blur")


def test_glasses_bench_draws_a_mask_on_every_face_and_reports_each_group(datasets, brightness_tflite, tmp_path):
    """bench/glasses.py --draw mask: each face plain and masked, the shift per labelled group."""
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "glasses.py"), "--data",
                           str(datasets["utkface"]), "--model", str(brightness_tflite), "--per-source", "0",
                           "--draw", "mask", "--out", str(tmp_path / "mask")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "mask.json").read_text())
    row = result["rows"]["all"]
    assert set(row) == {"plain", "mask", "shift_years"} and result["faces"] >= 4
    assert row["plain"]["errors"]["count"] == row["mask"]["errors"]["count"] == result["faces"]
    # "age" is 100 x brightness: a mask of any colour other than the face's own moves it
    assert row["plain"]["errors"]["mae"] != row["mask"]["errors"]["mae"] and row["shift_years"]["mean"] != 0
    text = (tmp_path / "mask.md").read_text()
    assert "with a synthetic face mask drawn on (`training.augment.SyntheticMask`)" in text
    assert "| MAE plain → mask |" in text and set(result["groups"]) <= {"male", "female", "white", "black",
                                                                         "asian", "indian", "other"}
    assert result["groups"] and all(f"| {g} |" in text for g in result["groups"])


def test_linear_probe_reads_the_runs_own_estimates_and_refits_its_head(utk_run, tmp_path):
    """bench/linear_probe.py: features + the run's head = the exported model's estimate."""
    import keras

    from bench.linear_probe import ridge
    from training.augment import CameraAugment
    from training.model import load_regressor, mirror_averaged

    # The refit: weighted ridge finds a planted linear read-out; zero weight ignores a row.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 5))
    target = features @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 7.0
    weights = np.ones(200)
    target[0], weights[0] = 1e6, 0.0
    w, b = ridge(features, target, weights, 1e-9)
    np.testing.assert_allclose(w, [1.0, -2.0, 0.5, 0.0, 3.0], atol=1e-6)
    assert b == pytest.approx(7.0, abs=1e-6)

    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "linear_probe.py")]
    done = subprocess.run([*bench, str(utk_run), "--out", str(tmp_path / "probe.v1")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "probe.v1.json").read_text())
    assert result["settings"]["run"] == utk_run.name and result["feature_size"] == 2048
    assert len(result["rows"]) == 7
    assert "| the run's head | validation photos |" in (tmp_path / "probe.v1.md").read_text()
    # The run's head on validation features is the mirror-averaged model on the centre crops.
    pack = load_pack(utk_run / "crops.npz")
    val = pack.split == "val"
    size = json.loads((utk_run / "train_config.json").read_text())["image_size"]
    keras.mixed_precision.set_global_policy("float32")  # as the bench reads it (training may have left bfloat16)
    centre = CameraAugment(size, float(pack.meta["context"]), 1.0)(pack.images[val], training=False)
    model = mirror_averaged(load_regressor(utk_run / "model.keras"))
    estimates = model.predict(keras.ops.convert_to_numpy(centre), verbose=0)[:, 0]
    row = result["rows"][2]
    assert (row["read_out"], row["scored_on"]) == ("the run's head", "validation photos")
    # abs 0.01: float32 sums taken in another order move it ~0.001; without the mirror image it moves ~0.06
    assert row["figures"]["all"]["mae"] == pytest.approx(np.abs(estimates - pack.age_years[val]).mean(), abs=0.01)
    assert result["rows"][4]["figures"]["all"]["mae"] is None  # a discriminant is no age

    refused = subprocess.run([*bench, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"error: {tmp_path / 'nowhere'}: no crops.npz, model.keras, train_config.json")


@pytest.mark.parametrize("bench", ["glasses", "per_customer", "quality_sweep", "robustness", "stages", "texture"])
def test_benches_refuse_a_model_without_its_card_with_one_line(bench, datasets, tmp_path):
    model = tmp_path / "age.tflite"
    model.write_bytes(b"no card beside it")
    script = str(PROJECT_ROOT / "bench" / f"{bench}.py")
    data = [] if bench == "stages" else ["--data", str(datasets["utkface"])]  # stages replays its own clip
    out = ["--out", str(tmp_path / "out")] if bench == "robustness" else []
    done = subprocess.run([sys.executable, script, *data, *out, "--model", str(model)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: model card {tmp_path / 'age.json'} not found"), done.stderr


def test_card_views_measures_the_card_again_as_evaluate_then_reads_it(datasets, tmp_path):
    from tests.models import brightness_model

    model = brightness_model(tmp_path / "models" / "bright.tflite")
    sha = sha256_of(model)
    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "card_views.py"), "--data", str(datasets["utkface"]),
             "--model", str(model), "--view-margins", "0.6"]
    done = subprocess.run(bench, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["crop"] == {"margin": 0.1, "pad": "edge", "align": False, "view_margins": [0.6]}
    assert card["test_time"] == "mean over 2 framings of the face (crop margins 0.1, 0.6), one pass each"
    assert card["views_added"]["before"]["mae"] == 5.0 and sha256_of(model) == sha == card["tflite_sha256"]
    # `agecheck evaluate` of the carded model (which averages the same views) gives the card's figures back
    result = ok(invoke("evaluate", "--model", model, "--data", datasets["utkface"], "--split", "val",
                       "--degrade", "camera", "--seed", "42", "--predictions", tmp_path / "p.csv",
                       "--report", tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["test_time_margins"] == [0.1, 0.6] and "mean of 2 views" in result.output
    assert card["mae"] > 0 and report["errors"]["mae"] == pytest.approx(card["mae"], abs=1e-3)
    assert report["key"] == card["camera"]["key"]
    assert ModelCard.load(model).tradeoff == card["calibration"]["tradeoff"]
    shown = ok(invoke("card", "--model", model))  # the operator is told how each estimate is made
    assert "  each estimate: mean over 2 framings of the face (crop margins 0.1, 0.6), one pass each" in shown.output
    again = subprocess.run(bench, capture_output=True, text=True, timeout=300)  # views on views: refused
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert "already names views [0.6]" in again.stderr


def test_till_bench_refuses_a_detector_setting_the_app_refuses_with_one_line(datasets, brightness_tflite, tmp_path):
    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "per_customer.py"), "--data", str(datasets["utkface"]),
             "--model", str(brightness_tflite), "--out", str(tmp_path / "till")]
    done = subprocess.run([*bench, "--detector-confidence", "1.5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: detector.min_detection_confidence"), done.stderr
    assert "1.5" in done.stderr and not list(tmp_path.iterdir())


def test_aggregation_bench_reads_the_apps_own_decisions_from_every_frames_estimates(datasets, brightness_tflite,
                                                                                     tmp_path):
    """bench/aggregation.py replays the till once, each face estimated on every frame; read under the
    app's own schedule, those estimates give each customer the very medians and flags of a real replay."""
    till = [str(PROJECT_ROOT / "bench" / "per_customer.py"), "--data", str(datasets["utkface"]), "--per-source", "0",
            "--model", str(brightness_tflite), "--seconds", "1.0", "--gap-s", "1.0"]
    real = subprocess.run([sys.executable, *till, "--customers", str(tmp_path / "real.csv")],
                          capture_output=True, text=True, timeout=300)
    assert real.returncode == 0, real.stderr[-2000:]
    till[0] = str(PROJECT_ROOT / "bench" / "aggregation.py")
    read = subprocess.run([sys.executable, *till, "--customers", str(tmp_path / "read"),
                           "--out", str(tmp_path / "agg")], capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-2000:]

    def rows(path):
        with open(path) as file:
            return {row["file_name"]: row for row in csv.DictReader(file)}

    replayed, simulated = rows(tmp_path / "real.csv"), rows(tmp_path / "read" / "customers_3_250ms_15.csv")
    assert replayed.keys() == simulated.keys() and len(replayed) >= 5
    for name, row in replayed.items():
        other = simulated[name]
        assert (row["seen"], row["flagged"], row["reason"]) == (other["seen"], other["flagged"], other["reason"]), name
        for column, tolerance in (("lowest_age", 0.006), ("predicted_age", 0.06)):  # events round to 0.01 / 0.1
            assert (row[column] == "") == (other[column] == ""), (name, column)
            if row[column]:
                assert abs(float(row[column]) - float(other[column])) <= tolerance, (name, column)
    report = json.loads((tmp_path / "agg.json").read_text())
    schedules = [(r["min_estimates"], r["estimate_interval_ms"], r["window"]) for r in report["rows"]]
    assert schedules[0] == (3, 250, 15) and len(schedules) == len(set(schedules)) == 44  # the defaults first
    assert len(list((tmp_path / "read").glob("customers_*.csv"))) == 44
    # every frame's estimate: the first median comes sooner with fewer estimates to wait for
    first = {s: r["first_median_ms"] for s, r in zip(schedules, report["rows"], strict=True)}
    assert first[(1, 250, 15)] < first[(3, 250, 15)] < first[(7, 250, 15)]
    file = tmp_path / "a_file"
    file.write_text("")
    refused = subprocess.run([sys.executable, *till, "--customers", str(file)], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "is a file; expected a folder" in refused.stderr


def test_aggregation_reads_a_tracks_estimates_as_the_tracker_and_policy_would():
    from bench.aggregation import Reading, customer_reading, track_reading
    from edge_app.config import PolicyConfig

    policy = PolicyConfig(unclear_after_s=2.0, max_spread_years=12.0)
    times = list(range(0, 1500, 33))  # a face estimated on every frame at 30 fps for 1.5 s
    ages = [30.0, 20.0, 40.0] + [35.0] * (len(times) - 3)
    app = {"min_estimates": 3, "estimate_interval_ms": 250, "window": 15}
    # the first three frames, then one estimate per 250 ms: medians 30 (of 30, 20, 40), then 35
    assert track_reading(times, ages, 0, 1500, app, policy) == Reading(30.0, 35.0, None, 66)
    assert track_reading(times, ages, 0, 1500, app | {"min_estimates": 1}, policy) == Reading(30.0, 35.0, None, 0)
    every_frame = app | {"min_estimates": 1, "estimate_interval_ms": 0}
    assert track_reading(times, ages, 0, 1500, every_frame | {"window": 1}, policy).lowest_years == 20.0
    assert track_reading(times, ages, 0, 1500, every_frame | {"window": 2}, policy).lowest_years == 25.0
    # a spread wider than max_spread_years asks at any limit; so does no median within unclear_after_s
    wild = [10.0, 60.0, 10.0, 60.0] + [35.0] * (len(times) - 4)
    spread = track_reading(times, wild, 0, 1500, app | {"min_estimates": 4}, policy)
    assert spread.reason == "uncertain" and spread.asked_below == -np.inf
    late = track_reading([2100, 2133, 2166], [30.0] * 3, 0, 2200, app, policy)
    assert late.reason == "face_unclear" and late.asked_below == -np.inf
    assert track_reading([], [], 0, 2500, app, policy).reason == "face_unclear"
    never = track_reading([], [], 0, 1500, app, policy)
    assert never == Reading(None, None, None, None) and never.asked_below == np.inf  # never asked
    both = customer_reading([Reading(40.0, 41.0, None, 100), Reading(30.0, 33.0, None, 300), never])
    assert both == Reading(30.0, 33.0, None, 100)
    assert customer_reading([both, late]).asked_below == -np.inf


def test_soak_bench_says_why_the_app_it_runs_ended(tmp_path):
    """The soak bench runs the real app as a child: its own error line reaches the user."""
    missing = tmp_path / "no_such_clip.mp4"
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "soak.py"), "--clip", str(missing),
                           "--minutes", "1", "--warm-up-s", "10", "--every-s", "5", "--out", str(tmp_path / "soak")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: agecheck run ended by itself with code "), done.stderr
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("soak*"))


def test_candidate_script_refuses_missing_runs_with_one_line_and_writes_nothing(tmp_path):
    """bench/candidate.sh checks its inputs before any step runs."""
    script = ["bash", str(PROJECT_ROOT / "bench" / "candidate.sh")]
    usage = subprocess.run([*script, "only_a_name"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: bash bench/candidate.sh NAME RUN BASE_RUN DATA")
    (tmp_path / "run").mkdir()
    arguments = ["probe_candidate", str(tmp_path / "run"), str(tmp_path / "base"), str(tmp_path / "data")]
    no_model = subprocess.run([*script, *arguments], capture_output=True, text=True, timeout=60)
    assert no_model.returncode == 1 and no_model.stderr.count("\n") == 1, no_model.stderr
    assert no_model.stderr.startswith(f"error: {tmp_path / 'run' / 'model.keras'}: no such file")
    # A missing BASE_RUN is made (the shipped model's predictions are made there once); missing data is not.
    (tmp_path / "run" / "model.keras").write_bytes(b"")
    no_data = subprocess.run([*script, *arguments], capture_output=True, text=True, timeout=60)
    assert no_data.returncode == 1 and no_data.stderr.count("\n") == 1, no_data.stderr
    assert no_data.stderr.startswith(f"error: {tmp_path / 'data'}: no such folder")
    assert not list((PROJECT_ROOT / "docs" / "model" / "candidates").glob("probe_candidate*"))
    assert not (tmp_path / "run" / "candidate").exists() and not (tmp_path / "base").exists()


def test_till_bench_adds_every_validation_photo_of_an_age_band_to_its_drawn_customers():
    from bench.per_customer import till_customers
    from training.data import LabelledImages

    ages = np.array([15, 30, 16, 40, 13, 50, 16.5, 17.9, 60, 14, 70, 18], np.float32)
    images = LabelledImages(root=Path("sets"), layout="utkface", paths=[Path(f"{i}.jpg") for i in range(12)],
                            age_years=ages, split=np.array(["val", "val", "train", "val"] * 3),
                            source=np.array(["a"] * 6 + ["b"] * 6))
    drawn = till_customers(images, 2, seed=0)
    assert len(drawn) == 4 and set(drawn.split) == {"val"}
    both = till_customers(images, 2, seed=0, all_aged=(13, 18))
    names = [p.name for p in both.paths]
    # the drawn four, and every validation 13-17 (not 2 and 6.jpg: training; not 11.jpg: 18), in file order
    assert set(names) == {p.name for p in drawn.paths} | {"0.jpg", "4.jpg", "7.jpg", "9.jpg"}
    assert names == sorted(names, key=lambda n: int(n.split(".")[0])) and len(set(names)) == len(names)
    assert both.age_years[names.index("7.jpg")] == pytest.approx(17.9) and list(both.source).count("b") >= 2
    with pytest.raises(AgecheckError, match=r"--all-aged 18 13: expected the first age below the second"):
        till_customers(images, 2, seed=0, all_aged=(18, 13))


def test_till_bench_counts_each_age_band_and_reason_per_group_of_customers():
    from bench.per_customer import band_rows

    def customer(age, seen=True, reason=None):
        return {"age": age, "seen": seen, "flagged": reason is not None, "reason": reason}

    customers = [customer(15, reason="age"), customer(16), customer(17.5, seen=False, reason="face_unclear"),
                 customer(16, reason="uncertain"), customer(30), customer(40, reason="age"), customer(8, reason="age")]
    rows = {r["band"]: r for r in band_rows(customers)}
    assert list(rows) == ["0-12", "13-17", "25+"]  # no 18-24 customer: no row
    teens = rows["13-17"]
    assert teens["customers"] == 4 and teens["flagged"] == 0.75 and teens["never_seen"] == 0.25
    assert (teens["by_age"], teens["face_unclear"], teens["uncertain"]) == (0.25, 0.25, 0.25)
    assert rows["25+"]["flagged"] == 0.5 and rows["0-12"]["by_age"] == 1.0


def test_till_bench_draws_its_backgrounds_again_where_the_detector_finds_a_face():
    import cv2

    from bench.per_customer import background, background_without_faces
    from edge_app.config import load_config
    from edge_app.detect import FaceDetector

    with FaceDetector(load_config(None).detector, video=False) as detector:
        def faces(back):
            return len(detector.detect(cv2.cvtColor(back, cv2.COLOR_BGR2RGB)))

        phantom = background(np.random.default_rng(2))  # its blotches look like a face to BlazeFace
        assert faces(phantom) >= 1
        clean, redrawn = background_without_faces(np.random.default_rng(2), detector)
        assert redrawn >= 1 and faces(clean) == 0
        plain = background(np.random.default_rng(0))
        kept, redrawn = background_without_faces(np.random.default_rng(0), detector)
        assert redrawn == 0 and np.array_equal(kept, plain)  # a background without a face is kept as drawn


def test_till_bench_cuts_a_photo_that_runs_off_the_frame():
    from bench.per_customer import HEIGHT, WIDTH, customer_frames

    wide = np.full((100, 600, 3), 200, np.uint8)  # six times as wide as tall: at 200 px or more, past the right edge
    frames = list(customer_frames(wide, np.zeros((HEIGHT, WIDTH, 3), np.uint8), 4, np.random.default_rng(0)))
    assert len(frames) == 4 and all(f.shape == (HEIGHT, WIDTH, 3) for f in frames)
    assert all(f[HEIGHT // 2, -1, 0] == 200 for f in frames)  # drawn up to the edge, the rest cut


def test_till_bench_reads_every_higher_limit_from_each_customers_lowest_median():
    from bench.per_customer import till_key, till_key_line, till_tradeoff, tradeoff_lines

    def customer(age, lowest, reason=None):
        return {"age": age, "seen": lowest is not None or reason is not None, "flagged": reason is not None,
                "reason": reason, "lowest": lowest}

    customers = [customer(15, 22.0, "age"), customer(16, 26.5), customer(14, None, "face_unclear"),
                 customer(17, 31.0, "uncertain"), customer(30, 25.2), customer(40, 44.0), customer(50, None)]
    rows = till_tradeoff(customers, 24.5)  # the replay's limit: 18 + 6.5
    assert [r["limit_years"] for r in rows] == [24.5, *range(25, 46)]
    at = {r["limit_years"]: r for r in rows}
    assert at[24.5]["13-17"] == 0.75 and at[24.5]["25+"] == 0.0  # the replay's own decisions
    assert at[26]["25+"] == 1 / 3 and at[27]["13-17"] == 1.0  # 25.2 under 26; 26.5 under 27
    assert at[44]["25+"] == 1 / 3 and at[45]["25+"] == 2 / 3  # 44.0 is not under 44; never estimated: never
    assert "0-12" not in at[25] and "18-24" not in at[25]
    lines = tradeoff_lines(customers, rows, 18)
    assert "for 7 of 7 customers" in lines[0]
    assert lines[2] == "| limit (years) | margin at 18 | 13-17 | 25+ |"
    assert lines[4] == "| **24.50** | **6.50** | **75.0%** | **0.0%** |"
    assert lines[5] == "| 25.00 | 7.00 | 75.0% | 0.0% |"
    assert len(lines) == 4 + len(rows)
    # the till's key figure: the cut lets 10% of adults 25+ through (25.2, the lowest of three);
    # below it 22.0 and both fail-safe flags of four 13-17s; by age alone 22.0 of 22.0 and 26.5
    key = till_key(customers)
    assert (key["age_13_17_flagged"], key["cut_years"], key["age_25_plus_count"]) == (0.75, 25.2, 3)
    assert (key["by_age"]["age_13_17_flagged"], key["by_age_customers"]) == (0.5, 4)
    line = till_key_line(key)
    assert ": 75.0% (95% CI" in line and "the 4 customers estimated" in line and ": 50.0% (95% CI" in line
    assert "– (no 13-17s" in till_key_line(till_key([customer(30, 25.2)]))


def test_till_bench_counts_each_labelled_group_and_leaves_unlabelled_customers_out():
    from bench.per_customer import flagged_table, group_rows

    def customer(age, gender, race, flagged):
        return {"age": age, "seen": True, "flagged": flagged, "reason": "age" if flagged else None,
                "gender": gender, "race": race}

    customers = [customer(15, "female", "black", False), customer(16, "male", "black", True),
                 customer(30, "female", "asian", True), customer(14, None, None, True)]  # the last: no labels
    groups = group_rows(customers)
    assert list(groups) == ["male", "female", "black", "asian"]  # label order; groups without customers left out
    black = {r["band"]: r for r in groups["black"]}
    assert list(black) == ["13-17"] and black["13-17"]["customers"] == 2 and black["13-17"]["flagged"] == 0.5
    assert [(r["band"], r["customers"], r["flagged"]) for r in groups["female"]] == [("13-17", 1, 0.0), ("25+", 1, 1.0)]
    table = flagged_table("group", groups)
    assert table[0] == "| group | 0-12 | 13-17 | 18-24 | 25+ |"
    assert "| black | - | 50% of 2 | - | - |" in table and len(table) == 2 + 4


def test_bench_reports_name_files_not_local_paths_and_keep_dotted_names(tmp_path):
    from argparse import Namespace

    from bench.report import public_settings, write_report

    args = Namespace(model="/home/someone/runs/v5/age.tflite", data=["datasets/utkface", "/x/aaf"],
                     customers=None, out=str(tmp_path / "docs" / "paired_margin6.92"), seed=0)
    settings = public_settings(args, "model", "data", "customers", "out")
    assert settings == {"model": "age.tflite", "data": ["utkface", "aaf"], "customers": None,
                        "out": "paired_margin6.92", "seed": 0}
    assert args.model.startswith("/home")  # the arguments themselves are left as they were
    write_report(args.out, ["| a |", "| --- |"], {"settings": settings})
    assert (tmp_path / "docs" / "paired_margin6.92.md").read_text() == "| a |\n| --- |\n"
    assert json.loads((tmp_path / "docs" / "paired_margin6.92.json").read_text()) == {"settings": settings}
    write_report(None, ["ignored"], {})  # no --out: nothing written
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["paired_margin6.92.json", "paired_margin6.92.md"]


def test_crops_record_where_their_framing_left_the_photo(datasets):
    from edge_app.crop import CropSettings
    from training.data import load_crops, load_sources
    from training.train import PHOTO_CANVAS, PHOTO_DETECTOR

    images = load_sources([str(datasets["utkface"])], 0.2, 42)
    wide = CropSettings(margin=0.8, pad="edge", align=True)  # framings far beyond the close-ups
    found = load_crops(images, 48, wide, PHOTO_DETECTOR, canvas=PHOTO_CANVAS, with_inside=True)
    rgb, inside = found.images[..., :3], found.images[..., 3]
    assert found.images.shape[-1] == 4 and len(found.index) == len(images.paths)
    black = load_crops(images, 48, CropSettings(0.8, "constant", True), PHOTO_DETECTOR, canvas=PHOTO_CANVAS).images
    np.testing.assert_array_equal(rgb, load_crops(images, 48, wide, PHOTO_DETECTOR, canvas=PHOTO_CANVAS).images)
    assert 0.05 < (inside < 128).mean() < 0.95  # the framings run off the photos, in part
    # where the record says "outside", a black-padded cut is black; inside, it is the photo
    assert (black[inside == 0] == 0).all()
    solid = inside == 255
    assert np.abs(black[solid].astype(int) - rgb[solid].astype(int)).max() <= 1


def test_view_crops_cut_from_one_detection_are_the_single_views_crops(datasets, tmp_path):
    from edge_app.crop import CropSettings
    from training.data import load_crops, load_sources, load_view_crops
    from training.train import PHOTO_CANVAS, PHOTO_DETECTOR

    images = load_sources([str(datasets["utkface"])], 0.2, 42)
    crop = CropSettings(margin=0.1, pad="edge", align=True, view_margins=(0.0, 0.5))
    views = load_view_crops(images, 32, crop, PHOTO_DETECTOR, tmp_path, canvas=PHOTO_CANVAS)
    assert len(views) == 3 and len(views[0].index) == len(images.paths)
    for view, alone in zip(views, crop.views, strict=True):  # the same crops as each view cut on its own
        single = load_crops(images, 32, alone, PHOTO_DETECTOR, canvas=PHOTO_CANVAS)
        np.testing.assert_array_equal(view.images, single.images)
        np.testing.assert_array_equal(view.index, single.index)
    assert np.abs(views[1].images.astype(int) - views[2].images.astype(int)).mean() > 5  # framings differ
    again = load_view_crops(images, 32, crop, PHOTO_DETECTOR, tmp_path, canvas=PHOTO_CANVAS)  # from the cache
    assert len(list(tmp_path.glob("crops-*.npz"))) == 1
    np.testing.assert_array_equal(again[2].images, views[2].images)


def test_quality_sweep_writes_its_tables_per_face_size_sharpness_and_light(datasets, brightness_tflite, tmp_path):
    """bench/quality_sweep.py: shrunk, blurred and relit copies of each photo through the app's detector and crop."""
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "quality_sweep.py"),
                           "--data", str(datasets["utkface"]), "--per-source", "0", "--model", str(brightness_tflite),
                           "--min-bin-faces", "1", "--out", str(tmp_path / "sweep")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["settings"]["model"] == brightness_tflite.name and result["settings"]["data"] == ["utkface"]
    assert result["photos"] >= 4
    tried = [n["tried"] for n in result["faces_found"].values()]
    assert tried[0] == result["photos"] and tried == sorted(tried, reverse=True)  # smaller targets shrink more photos
    sharp = result["by_sharpness"]
    # every clean face, and each of its 5 blurred copies the detector still finds
    assert result["photos"] < sum(row["faces"] for row in sharp) <= 6 * result["photos"]
    turn = result["by_turn"]  # the clean photos, binned: together they make the clean MAE
    assert sum(row["faces"] for row in turn) == result["photos"]
    binned_mae = sum(row["faces"] * row["mae"] for row in turn) / result["photos"]
    assert binned_mae == pytest.approx(result["clean_mae"], abs=0.01)
    light = result["by_brightness"]  # every clean face, and each of its 8 relit copies the detector still finds
    assert result["photos"] < sum(row["faces"] for row in light) <= 9 * result["photos"]
    # this model's "age" is the crop's brightness: glare reads older than dim light
    assert light[-1]["bias"] > light[0]["bias"] + 20
    refusals = {row["refuse"]: row for row in result["refuse_or_widen"]}
    refused = [refusals[name]["refused"] for name in ("darker than 20", "darker than 30", "darker than 45")]
    assert refused == sorted(refused) and refused[-1] > 0
    refused = [refusals[name]["refused"] for name in ("brighter than 245", "brighter than 230", "brighter than 210")]
    assert refused == sorted(refused) and refused[-1] > 0
    for row in refusals.values():  # the wider margin asks at least as many adults as refusing did
        assert row["adults_asked_wider"] >= row["adults_asked"]
    groups = result["light_by_group"]  # every face of the tiny UTKFace set is labelled: each counted once
    assert groups and set(groups) <= {"white", "black", "asian", "indian", "other"}
    assert sum(g["faces"] for g in groups.values()) == sum(row["faces"] for row in light)
    assert all(0 <= g["too_dark"] <= 1 and 0 <= g["too_bright"] <= 1 for g in groups.values())
    assert (tmp_path / "sweep.md").read_text().startswith(f"{result['photos']} validation photos")


def test_robustness_table_counts_the_photos_where_no_face_was_found(datasets, brightness_tflite, tmp_path):
    """bench/robustness.py: each corruption's row says how often the detector lost the face."""
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "robustness.py"), "--model",
                           str(brightness_tflite), "--data", str(datasets["utkface"]), "--only", "downscale", "noise",
                           "--out", str(tmp_path / "robust")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "robust.json").read_text())["results"]
    assert list(results) == ["none", "downscale", "noise"]
    table = (tmp_path / "robust.md").read_text().splitlines()
    assert "| condition | photos | no face found† | MAE |" in table[2]
    for name, result in results.items():
        assert 0 <= result["no_face"] <= result["scored"] >= 4
        row = next(line for line in table if line.startswith(f"| {'clean' if name == 'none' else name} |"))
        assert row.split(" | ")[2] == f"{result['no_face'] / result['scored']:.1%}"


def test_view_margins_bench_scores_every_set_with_the_cards_framing_as_evaluate_does(datasets, brightness_tflite,
                                                                                      tmp_path):
    """bench/view_margins.py: sets of the card's framing and other cuts, each half scoring the other's choice."""
    bench = [sys.executable, str(PROJECT_ROOT / "bench" / "view_margins.py"), "--model", str(brightness_tflite),
             "--data", str(datasets["utkface"]), "--split", "all"]
    result = ok_bench([*bench, "--margins", "0", "0.3", "--max-views", "3"], tmp_path / "vm")
    assert result["photos"] == 30 and sum(result["halves"]) == 30 and min(result["halves"]) > 0
    assert result["sets"] == 4 and result["card"] == result["one_view"]  # the card names no views: one framing
    assert result["one_view"]["margins"] == [0.1]
    assert [row["margins"] for row in result["singles"]] == [[0.1, 0.0], [0.1, 0.3]]
    for row in (result["best_on_half_a"], result["best_on_half_b"], result["best_on_all"]):
        assert row["margins"][0] == 0.1 and row["margins"] in [[0.1], [0.1, 0.0], [0.1, 0.3], [0.1, 0.0, 0.3]]
    # the brightness "age" of a wider cut differs: the views move the estimates
    assert len({round(row["clean"]["mae"], 6) for row in [result["one_view"], *result["singles"]]}) == 3
    # the card's own set is what `agecheck evaluate` measures, photo for photo
    evaluated = tmp_path / "eval.json"
    ok(invoke("evaluate", "--model", brightness_tflite, "--data", datasets["utkface"], "--split", "all",
              "--report", evaluated, "--predictions", tmp_path / "p.csv"))
    report = json.loads(evaluated.read_text())
    assert result["card"]["clean"]["mae"] == pytest.approx(report["errors"]["mae"], abs=1e-9)
    assert result["card"]["clean"]["key"] == report["key"]["age_13_17_flagged"]
    lines = (tmp_path / "vm.md").read_text().splitlines()
    assert lines[0].startswith("30 photos (") and "4 sets of views" in lines[0]
    assert lines[-1].startswith("Chosen on one half and scored on the other, the best set against the card's: ")
    refused = subprocess.run([*bench, "--max-views", "0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.strip() == "error: --max-views 0: expected 1 or more"


def till_frame_bench(name: str, datasets, model) -> list[str]:
    """The command of a bench over till frames, on every tiny UTKFace photo."""
    return [sys.executable, str(PROJECT_ROOT / "bench" / f"{name}.py"), "--data", str(datasets["utkface"]),
            "--per-source", "0", "--model", str(model)]


def ok_bench(command: list[str], out: Path) -> dict:
    """Run a bench with ``--out out``; its JSON report, after checking it ended well."""
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(Path(f"{out}.json").read_text())


def test_gate_noise_bench_measures_the_gates_sharpness_under_blur_and_noise(datasets, brightness_tflite, tmp_path):
    """bench/gate_noise.py: the app's quality gate on till frames, blurred, then noised."""
    bench = till_frame_bench("gate_noise", datasets, brightness_tflite)
    result = ok_bench([*bench, "--blur", "0", "8", "--sensor-noise", "0", "12"], tmp_path / "g")
    rows = {(r["blur_px"], r["sensor_noise"]): r for r in result["rows"]}
    assert set(rows) == {(0, 0), (0, 12), (8, 0), (8, 12)} and rows[(0, 0)]["faces"] >= 4
    assert rows[(0, 0)]["passed"] >= rows[(8, 0)]["passed"]
    sharp = {key: r["sharpness_median"] for key, r in rows.items()}
    assert sharp[(8, 0)] < sharp[(0, 0)] / 3  # blur takes the edges away...
    assert sharp[(8, 12)] < sharp[(0, 0)] / 3  # ...and noise does not put them back (the measure: test_quality.py)
    assert "| 8 | 12 |" in (tmp_path / "g.md").read_text()
    assert f"{result['backgrounds_redrawn']} backgrounds drawn again" in (tmp_path / "g.md").read_text()
    refused = subprocess.run([*bench, "--blur", "-1"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --blur [-1.0]"), refused.stderr


def test_detector_input_bench_compares_shrunk_and_whole_frames_with_noise(datasets, brightness_tflite, tmp_path):
    """bench/detector_input.py: till frames with sensor noise, BlazeFace at each input side."""
    bench = till_frame_bench("detector_input", datasets, brightness_tflite)
    result = ok_bench([*bench, "--sides", "0", "480", "--sensor-noise", "0", "25"], tmp_path / "d")
    rows = {(r["sensor_noise"], r["max_input_side_px"]): r for r in result["rows"]}
    assert set(rows) == {(0, 0), (0, 480), (25, 0), (25, 480)}
    frames = rows[(0, 0)]["frames"]
    assert frames >= 4 and rows[(0, 0)]["found"] > 0.5
    # the clean, whole frame is its own reference; the shrunk one lies close to it
    assert rows[(0, 0)]["iou_median"] == 1.0 and rows[(0, 0)]["eye_error_median"] == 0.0
    assert 0.7 < rows[(0, 480)]["iou_median"] < 1.0
    assert all(0 <= r["found"] <= 1 and r["ms_per_frame"] > 0 for r in rows.values())
    assert f"{result['backgrounds_redrawn']} backgrounds drawn again" in (tmp_path / "d.md").read_text()
    # min_detection_confidence weighed: a higher one finds no more customers and no more false faces
    weighed = {(r["sensor_noise"], r["min_confidence"]): r for r in result["confidence_rows"]}
    assert set(weighed) == {(noise, c) for noise in (0, 25) for c in (0.5, 0.6, 0.7, 0.8)}
    for noise in (0, 25):
        found = [weighed[(noise, c)]["customer_found"] for c in (0.5, 0.6, 0.7, 0.8)]
        false = [weighed[(noise, c)]["false_face"] for c in (0.5, 0.6, 0.7, 0.8)]
        assert found == sorted(found, reverse=True) and false == sorted(false, reverse=True)
    assert weighed[(0, 0.5)]["customer_found"] == rows[(0, 480)]["found"]  # the app's own setting, both ways
    assert "| 0 | 0.7 |" in (tmp_path / "d.md").read_text()
    refused = subprocess.run([*bench, "--sides", "64"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --sides [64]"), refused.stderr
    refused = subprocess.run([*bench, "--confidences", "0.5", "1.5"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --confidences [0.5, 1.5]"), refused.stderr


def test_till_bench_says_why_the_gate_refused_and_in_what_light():
    from bench.per_customer import gate_lines

    customers = [{"reason": "face_unclear", "refused_as": "blurred"}, {"reason": "face_unclear", "refused_as": None},
                 {"reason": "face_unclear", "refused_as": "too_small"}, {"reason": "age"}, {"reason": None}]
    replayed = {"faces": 200, "faces_refused_by_reason": {"too_small": 10, "turned": 4, "blurred": 6},
                "age_estimates": 50, "age_estimates_too_dark": 1, "age_estimates_too_bright": 5}
    (line,) = gate_lines(customers, replayed)
    assert line == ("The gate refused 10.0% of 200 face sightings (too small 5.0%, turned 2.0%, blurred 3.0%); "
                    "the 3 customers flagged `face_unclear` were last refused as too small 1, turned 0, blurred 1. "
                    "Of 50 age estimates, 2.0% were of faces too dark and 10.0% too bright (`edge_app.quality`).")
