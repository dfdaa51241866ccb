"""`agecheck export`: Keras regressor -> full-integer int8 ``.tflite`` + model card."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_app.age_model import AgeRegressor
from edge_app.config import MODELS_DIR, AgeModelConfig, DetectorConfig
from edge_app.crop import CropSettings
from edge_app.errors import AgecheckError
from edge_app.model_card import ModelCard, write_card
from training.data import Crops, LabelledImages, load_crops, load_sources, load_view_crops, mean_over_views, select
from training.fit import BEFORE_THE_SETTING
from training.metrics import calibrate_margins, errors, figures, figures_by_source, gate_tradeoff
from training.train import PHOTO_DETECTOR

log = logging.getLogger(__name__)

LICENCES = {
    "utkface": "UTKFace (Zhang, Song, Qi, CVPR 2017): non-commercial research only",
    "appa-real": "APPA-REAL (Agustsson et al., ChaLearn LAP 2017): research use; treat as non-commercial",
    "aaf": "All-Age-Faces (Cheng et al., 2019): research use only, cite the paper",
    "seeds": "APPA-REAL-derived set of the original notebooks: see the dataset's licence",
}
# The margin the app adds is measured where the app works: on validation photos corrupted
# by a camera-like mix (training/degrade.py), not only on clean photos.
CARD_DEGRADATION = "camera"


def _fine_tuned_from(run_config: dict) -> dict:
    """The card's note of a fine-tuned run's start: run folder and file name, no local path.

    With the SHA-256 that the run recorded of an exported start (`training.train.train`), and
    the start's input side where it was not the run's.
    """
    if not run_config.get("init_model"):
        return {}
    path = Path(run_config["init_model"])
    note = {"fine_tuned_from": f"{path.parent.name}/{path.name}"}
    if "init_model_sha256" in run_config:
        note["fine_tuned_from_sha256"] = run_config["init_model_sha256"]
    if "init_model_input_size" in run_config:  # a start trained at another input side
        note["fine_tuned_from_input_size"] = run_config["init_model_input_size"]
    return note


def licence_for(source: str, layout: str) -> str:
    """The licence line of a source, by its folder name, else by its layout."""
    return LICENCES.get(source) or LICENCES.get(layout, "see the dataset's licence")


def _detector_from(saved: dict | None) -> DetectorConfig:
    """The run's photo detector, found in this checkout's ``models/`` by file name."""
    if not saved:
        return PHOTO_DETECTOR
    name = Path(saved["model_path"]).name
    return DetectorConfig(**(saved | {"model_path": str(MODELS_DIR / name)}))


def detector_from_card(card: dict) -> DetectorConfig:
    """The photo detector a card says its training crops were made with."""
    saved = card.get("detector")
    if not saved:
        return PHOTO_DETECTOR
    # (cards before 2026-11-27 record no input side: today's default applies)
    return _detector_from({"model_path": saved["model"], "min_detection_confidence": saved["min_detection_confidence"]}
                          | ({"max_input_side_px": saved["max_input_side_px"]} if "max_input_side_px" in saved else {}))


def canvas_from_card(card: dict) -> float:
    """How much photos were enlarged with grey before detection (1: not at all, older cards)."""
    return float(card.get("detector", {}).get("canvas", 1.0))


@dataclass(frozen=True)
class RunSettings:
    """What export and evaluate need to know about how a model was trained."""

    image_size: int
    crop: CropSettings
    detector: DetectorConfig
    seed: int
    val_fraction: float
    report: dict
    max_images: int = 0
    canvas: float = 1.0
    data_dirs: tuple[str, ...] = ()

    @classmethod
    def for_model(cls, model_path: Path, image_size: int) -> RunSettings:
        """Read the run folder beside ``model.keras``; defaults where it has none."""
        config_path = model_path.parent / "train_config.json"
        report_path = model_path.parent / "report.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        if not config:
            log.warning("no train_config.json beside %s: using default crop and split settings", model_path)
        return cls(
            image_size=image_size,
            crop=CropSettings(**config.get("crop", {})),
            detector=_detector_from(config.get("detector")),
            seed=config.get("seed", 42),
            val_fraction=config.get("val_fraction", 0.2),
            report=report,
            max_images=config.get("max_images", 0),
            canvas=config.get("canvas", 1.0),
            data_dirs=tuple(config.get("data_dirs") or ([config["data_dir"]] if "data_dir" in config else [])),
        )


def load_float_model(model_path: str | Path):
    """Load a trained ``.keras`` regressor as a float32 model.

    Training may have run under mixed precision; its variables are float32 either way, so
    the model is rebuilt under a float32 policy and the weights loaded into it. Conversion
    and evaluation then see plain float32 graphs.

    Raises:
        AgecheckError: if the file is missing or not a model of this project.
    """
    import keras

    from training.model import build_model

    path = Path(model_path)
    if not path.is_file():
        raise AgecheckError(f"model {path} does not exist")
    try:
        saved = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        raise AgecheckError(f"model {path} could not be loaded as a Keras model: {error}") from None
    image_size = int(saved.input_shape[1])
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(image_size, weights="none")
    model.set_weights(saved.get_weights())
    return model


def convert_int8(model, representative: np.ndarray, out_path: Path) -> None:
    """Full-integer post-training quantization: uint8 RGB in, int8 inside, float32 age out.

    Args:
        model: float32 Keras regressor.
        representative: (m, S, S, 3) uint8 real training crops; a few hundred calibrate the
            activation ranges.
        out_path: where the ``.tflite`` goes.
    """
    import keras
    import tensorflow as tf

    size = int(model.input_shape[1])
    with tempfile.TemporaryDirectory() as saved_model:
        # The SavedModel route freezes the variables; from_concrete_functions on a Keras 3
        # model leaves READ_VARIABLE ops that the calibrator cannot run.
        model.export(
            saved_model,
            format="tf_saved_model",
            verbose=False,
            input_signature=[keras.InputSpec(shape=(None, size, size, 3), dtype="float32")],
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [crop[None].astype(np.float32)] for crop in representative
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
        out_path.write_bytes(converter.convert())


def predict_keras(model, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Ages in years from a Keras regressor."""
    return model.predict(crops.astype(np.float32), batch_size=batch_size, verbose=0).reshape(-1)


def photo_crops(images: LabelledImages, settings: RunSettings, cache_dir: Path | None,
                degradation: tuple[str, int] | None = None, require_face: bool = False):
    """Model-input crops of ``images`` made as the run made them (`training.data.load_crops`)."""
    return load_crops(images, settings.image_size, settings.crop, settings.detector, cache_dir,
                      require_face=require_face, canvas=settings.canvas, degradation=degradation)


def view_crops(images: LabelledImages, settings: RunSettings, cache_dir: Path | None,
               degradation: tuple[str, int] | None = None, require_face: bool = False) -> list[Crops]:
    """`photo_crops` at each test-time view of ``settings.crop``, its own first (`training.data.load_view_crops`)."""
    return load_view_crops(images, settings.image_size, settings.crop, settings.detector, cache_dir,
                           require_face=require_face, canvas=settings.canvas, degradation=degradation)


def with_views(settings: RunSettings, view_margins: tuple[float, ...]) -> RunSettings:
    """``settings`` whose crop names the test-time ``view_margins`` (none: unchanged)."""
    if not view_margins:
        return settings
    try:
        return replace(settings, crop=replace(settings.crop, view_margins=tuple(view_margins)))
    except ValueError as error:
        raise AgecheckError(f"--view-margins {' '.join(map(str, view_margins))}: {error}") from None


def test_time_text(crop: CropSettings, mirror: bool = True) -> str:
    """The card's ``test_time``: how one estimate is made from a face."""
    one = "mean of the crop's and its mirror image's estimate" if mirror else "one pass"
    if not crop.view_margins:
        return one
    margins = ", ".join(f"{view.margin:g}" for view in crop.views)
    each = "each the mean of its own and its mirror image's estimate" if mirror else "one pass each"
    return f"mean over {len(crop.views)} framings of the face (crop margins {margins}), {each}"


def int8_figures(true_clean, int8_clean, sources_clean, true_camera, int8_camera, sources_camera,
                 threshold_age: float) -> dict:
    """The card's measured figures of the shipped (int8) estimates, clean and under the camera mix.

    The margin (``mae``) is the camera mix's MAE; the calibration and trade-off table are of
    the same estimates. Keys in the card's order: ``mae``, ``rmse``, ``clean_mae``,
    ``clean_rmse``, ``int8_bands``, ``clean``, ``camera``, ``calibration``.
    """
    clean_errors, camera_errors = errors(true_clean, int8_clean), errors(true_camera, int8_camera)
    margin = camera_errors["mae"]
    return {
        "mae": round(margin, 3),
        "rmse": round(camera_errors["rmse"], 3),
        "clean_mae": round(clean_errors["mae"], 3),
        "clean_rmse": round(clean_errors["rmse"], 3),
        "int8_bands": camera_errors["bands"],
        "clean": _card_figures(true_clean, int8_clean, sources_clean, threshold_age, margin),
        "camera": _card_figures(true_camera, int8_camera, sources_camera, threshold_age, margin),
        "calibration": {  # the gate's shares at the card's own margin: camera.policy
            "threshold_age": threshold_age,
            "measured_under": CARD_DEGRADATION,
            "margin_years_to_flag_share_of_minors": calibrate_margins(true_camera, int8_camera, threshold_age),
            "tradeoff": gate_tradeoff(true_camera, int8_camera),  # at every limit: `agecheck card`
        },
    }


def _card_figures(true_years, predicted, sources, threshold_age, margin_years) -> dict:
    out = figures(true_years, predicted, threshold_age, margin_years)
    if len(set(sources.tolist())) > 1:
        out["by_source"] = figures_by_source(true_years, predicted, sources, threshold_age, margin_years)
    return out


def export(
    model_path: str | Path,
    data_dirs: list[str | Path] | None,
    out_path: str | Path,
    calibration_images: int = 300,
    max_mae_increase: float = 0.5,
    threshold_age: float = 18,
    data_licence: str | None = None,
    mirror: bool = True,
    view_margins: tuple[float, ...] = (),
) -> dict:
    """Quantize, measure, and write ``out_path`` with its card, or refuse and write nothing.

    The card's ``mae`` (the app's default margin) and its calibration are measured on the
    validation part of every source under the ``camera`` degradation (`training.degrade`);
    the clean figures stand beside them.

    Args:
        model_path: ``RUN/model.keras``.
        data_dirs: the labelled photos the model was trained on; ``None``: the run's own.
        out_path: ``models/NAME.tflite``; the card goes beside it as ``NAME.json``.
        calibration_images: training crops that calibrate the int8 activation ranges.
        max_mae_increase: the most the int8 model may lose against the float one, clean.
        threshold_age: the legal age the calibration table is made for.
        data_licence: licence text for every source (default: by source name or layout).
        mirror: export the mean of each crop's and its mirror's estimate
            (`training.model.mirror_averaged`); float figures are measured the same way.
        view_margins: test-time views the card names (`CropSettings.view_margins`): the app
            averages each face's estimates at the run's margin and these; every figure of the
            card is measured the same way.

    Raises:
        AgecheckError: if the int8 model's validation MAE is more than ``max_mae_increase``
            years worse than the float model's (nothing is written then), or for bad input.
    """
    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.suffix != ".tflite":
        raise AgecheckError(f"--out {out_path} must end in .tflite")
    model = load_float_model(model_path)
    settings = RunSettings.for_model(model_path, int(model.input_shape[1]))
    settings = with_views(settings, view_margins)
    if mirror:
        from training.model import mirror_averaged

        model = mirror_averaged(model)
    data_dirs = list(data_dirs or settings.data_dirs)
    if not data_dirs:
        raise AgecheckError(f"no --data given and {model_path.parent} records no training data")
    cache = model_path.parent / "cache"
    images = load_sources(data_dirs, settings.val_fraction, settings.seed, settings.max_images)
    val_images = select(images, "val", 0, settings.seed)
    train_images = select(images, "train", 0, settings.seed)
    if len(val_images) == 0:
        raise AgecheckError(f"no validation images in {', '.join(map(str, data_dirs))}")
    rng = np.random.default_rng(settings.seed)
    pool = train_images if len(train_images) else val_images
    picked = pool.subset(np.sort(rng.choice(len(pool), size=min(calibration_images, len(pool)), replace=False)))
    representative = photo_crops(picked, settings, cache).images
    clean_views = view_crops(val_images, settings, cache)
    camera_views = view_crops(val_images, settings, cache, (CARD_DEGRADATION, settings.seed))
    clean, camera = clean_views[0], camera_views[0]
    if len(clean.images) == 0:
        raise AgecheckError(f"no readable validation images in {', '.join(map(str, data_dirs))}")

    float_clean = mean_over_views(lambda crops: predict_keras(model, crops), clean_views)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / out_path.name
        convert_int8(model, representative, candidate)
        write_card(candidate, {"architecture": "ResNet50 regressor", "input_size": settings.image_size,
                               "crop": settings.crop.to_dict(), "mae": 0.0})
        regressor = AgeRegressor(AgeModelConfig(model_path=str(candidate), num_threads=os.cpu_count() or 1))
        int8_clean = mean_over_views(regressor.predict, clean_views)
        int8_camera = mean_over_views(regressor.predict, camera_views)
        true_clean = val_images.age_years[clean.index].astype(np.float64)
        true_camera = val_images.age_years[camera.index].astype(np.float64)
        float_errors, int8_errors = errors(true_clean, float_clean), errors(true_clean, int8_clean)
        increase = int8_errors["mae"] - float_errors["mae"]
        if increase > max_mae_increase:
            raise AgecheckError(
                f"int8 model's validation MAE {int8_errors['mae']:.2f} is {increase:.2f} years worse than "
                f"the float model's {float_errors['mae']:.2f} (allowed: {max_mae_increase}); "
                "nothing written: try more --calibration-images"
            )
        measured = int8_figures(true_clean, int8_clean, val_images.source[clean.index],
                                true_camera, int8_camera, val_images.source[camera.index], threshold_age)
        margin = measured["mae"]
        sources = {name: val_images.subset(np.flatnonzero(val_images.source == name)) for name in images.sources}
        layouts = dict(zip(images.sources, images.layout.split("+"), strict=True))
        run_config = settings.report.get("config", {})
        card = {
            "architecture": "ResNet50 regressor",
            "input_size": settings.image_size,
            "input": "uint8 RGB face crop, values 0-255; ResNet50 preprocessing is inside the model",
            "output": "float32 age in years",
            "test_time": test_time_text(settings.crop, mirror),
            "quantization": f"full-integer int8 post-training, calibrated on {len(representative)} training crops",
            "crop": settings.crop.to_dict(),
            "detector": {
                "model": Path(settings.detector.model_path).name,
                "min_detection_confidence": settings.detector.min_detection_confidence,
                "max_input_side_px": settings.detector.max_input_side_px,
                "canvas": settings.canvas,
            },
            "training_data": {
                "sources": [
                    {"name": name, "layout": layouts[name], "images": int((images.source == name).sum()),
                     "validation_images": len(part), "licence": data_licence or licence_for(name, layouts[name])}
                    for name, part in sources.items()
                ],
                "images": len(images),
            },
            "training": {
                k: settings.report.get(k)
                for k in ("precision", "backend", "accelerator", "best_val_mae", "best_epoch", "epochs_run",
                          "dummy_val_mae", "fit_seconds_this_session", "train_images_per_second")
            } | {k: run_config.get(k, BEFORE_THE_SETTING.get(k))
                 for k in ("weights", "epochs", "batch_size", "learning_rate", "warmup_epochs", "weight_decay",
                           "augment", "augment_strength", "glasses_share", "mask_share", "context", "lds_sigma_years",
                           "lds_power", "source_weight_power", "consistency", "rank_weight", "border_fill")}
              | _fine_tuned_from(run_config),
            "validation": {
                "split": "each source's own split where its layout has one, else a hash of seed and file name",
                "seed": settings.seed,
                "val_fraction": settings.val_fraction,
                "images": int(len(clean.images)),
                "margin_measured_under": CARD_DEGRADATION,
            },
            "date": datetime.date.today().isoformat(),
            **{key: measured[key] for key in ("mae", "rmse", "clean_mae", "clean_rmse")},
            "float_mae": round(float_errors["mae"], 3),
            "float_rmse": round(float_errors["rmse"], 3),
            **{key: measured[key] for key in ("int8_bands", "clean", "camera", "calibration")},
        }
        shutil.move(str(candidate), out_path)
    card_path = write_card(out_path, card)
    ModelCard.load(out_path)  # the app must accept what we ship
    log.info("wrote %s and %s: int8 MAE %.2f under %s (clean %.2f, float clean %.2f)", out_path, card_path,
             margin, CARD_DEGRADATION, int8_errors["mae"], float_errors["mae"])
    return json.loads(card_path.read_text())
