"""`agecheck train`: fit the ResNet50 regressor, with checkpoints that survive interruption."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_app.config import MODELS_DIR, DetectorConfig
from edge_app.crop import CropSettings
from edge_app.errors import AgecheckError
from training.data import Crops, LabelledImages, load_crops, load_labels, split_crops

log = logging.getLogger(__name__)

PHOTO_DETECTOR = DetectorConfig(model_path=str(MODELS_DIR / "face_detection_short_range.tflite"))
REPORT_NAME = "report.json"
CONFIG_NAME = "train_config.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; saved in the run's report.

    Attributes:
        data_dir: labelled photos in one of the layouts of ``training.data``.
        out_dir: the run folder (model, history, curve, report, checkpoints).
        image_size: model input side in pixels.
        epochs: total epochs, counting those done before a ``--resume``.
        batch_size: images per step.
        learning_rate: Adam's peak learning rate (1e-4 in the original notebooks).
        warmup_epochs: linear warm-up before a cosine decay to 0; 0 keeps the rate constant.
        weights: ``imagenet``, ``none`` or a ResNet50 notop weights file.
        val_fraction: validation share when the layout has no split of its own.
        seed: seeds the split, shuffling and initialisation.
        precision: ``auto`` (bfloat16 where the CPU or GPU supports it), ``bfloat16``, ``float32``.
        augment: random flips, small shifts and zooms, brightness and contrast jitter.
        max_images: use only the first N images (quick smoke runs); 0 uses all.
        crop: how faces are cut (recorded in the card, replayed by the app).
        detector: finds the face in each photo. Labelled photos are close-ups, which the
            short-range BlazeFace finds (299 of 300 UTKFace chips) and the full-range model,
            tuned for faces 2-5 m away, mostly misses (136 of 300).
    """

    data_dir: str
    out_dir: str
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_epochs: float = 0.0
    weights: str = "imagenet"
    val_fraction: float = 0.2
    seed: int = 42
    precision: str = "auto"
    augment: bool = True
    max_images: int = 0
    crop: CropSettings = field(default_factory=CropSettings)
    detector: DetectorConfig = field(default_factory=lambda: PHOTO_DETECTOR)

    def __post_init__(self) -> None:
        checks = [
            ("image_size", self.image_size, 32 <= self.image_size <= 1024, "32-1024"),
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, 1 <= self.batch_size <= 4096, "1-4096"),
            ("learning_rate", self.learning_rate, 0 < self.learning_rate < 1, "in (0, 1)"),
            ("warmup_epochs", self.warmup_epochs, 0 <= self.warmup_epochs < self.epochs, "in [0, epochs)"),
            ("val_fraction", self.val_fraction, 0 < self.val_fraction < 1, "in (0, 1)"),
            ("precision", self.precision, self.precision in ("auto", "bfloat16", "float32"),
             "auto, bfloat16 or float32"),
            ("max_images", self.max_images, self.max_images >= 0, ">= 0"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise AgecheckError(f"--{name.replace('_', '-')} {value} is not allowed: expected {allowed}")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def bf16_supported() -> bool:
    """True where bfloat16 matmuls run natively (AVX512-BF16 or AMX on x86, or a GPU)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def prepare_data(
    config: TrainConfig, images: LabelledImages, cache_dir: Path
) -> tuple[Crops, np.ndarray, np.ndarray]:
    """Crops of ``images``, and train/validation positions *into the crops*."""
    crops = load_crops(images, config.image_size, config.crop, config.detector, cache_dir, progress=True)
    if len(crops.images) == 0:
        raise AgecheckError(f"no readable images in {config.data_dir} ({len(crops.unreadable)} unreadable)")
    train, val = split_crops(images, crops, config.val_fraction, config.seed)
    if len(train) == 0 or len(val) == 0:
        raise AgecheckError(
            f"need readable images in both splits, got {len(train)} train and {len(val)} validation; "
            "add images or change --val-fraction"
        )
    return crops, train, val


def _augmenter(seed: int):
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed),
            keras.layers.RandomZoom((-0.1, 0.1), fill_mode="reflect", seed=seed),
            keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed),
            keras.layers.RandomContrast(0.15, seed=seed),
        ],
        name="augment",
    )


def make_datasets(crops: Crops, ages: np.ndarray, train: np.ndarray, val: np.ndarray, config: TrainConfig):
    """tf.data pipelines over the in-memory crops."""
    import tensorflow as tf

    def dataset(idx: np.ndarray, training: bool):
        x, y = crops.images[idx], ages[idx].astype(np.float32)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if training:
            ds = ds.shuffle(len(idx), seed=config.seed, reshuffle_each_iteration=True)
        ds = ds.batch(config.batch_size).map(
            lambda images, target: (tf.cast(images, tf.float32), target),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if training and config.augment:
            augment = _augmenter(config.seed)
            ds = ds.map(
                lambda images, target: (tf.clip_by_value(augment(images, training=True), 0, 255), target),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return ds.prefetch(tf.data.AUTOTUNE)

    return dataset(train, True), dataset(val, False)


def _learning_rate(config: TrainConfig, steps_per_epoch: int):
    import keras

    if config.warmup_epochs <= 0:
        return config.learning_rate
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))
    total = config.epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=max(1, total - warmup),
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def plot_history(history_csv: Path, out_png: Path, dummy_mae: float) -> None:
    """Training and validation MAE per epoch, with the dummy baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [float(r["mae"]) for r in rows], "o-", label="train MAE")
    ax.plot(epochs, [float(r["val_mae"]) for r in rows], "o-", label="validation MAE")
    ax.axhline(dummy_mae, color="grey", ls="--", label=f"predict the mean ({dummy_mae:.1f})")
    ax.set(xlabel="epoch", ylabel="MAE (years)", title="Age regressor training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def train(config: TrainConfig, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train, keep the best model by validation MAE, and write the run's report.

    Writes ``model.keras`` (best validation MAE), ``history.csv``, ``training_curve.png``
    and ``report.json`` into ``config.out_dir``; ``backup/`` holds the last epoch's state
    until the run completes, so ``resume=True`` continues an interrupted run.

    Args:
        config: the run's settings.
        resume: continue the interrupted run in ``config.out_dir``.
        callbacks: extra Keras callbacks, run after the checkpointing ones.

    Raises:
        AgecheckError: for bad data, an existing run folder without ``resume``, or weights
            that cannot be had.
    """
    out = Path(config.out_dir)
    backup = out / "backup"
    if out.exists() and any(out.iterdir()) and not resume:
        raise AgecheckError(f"run folder {out} is not empty: pass --resume to continue it, or choose another --out")
    if resume and not backup.is_dir():
        if (out / REPORT_NAME).is_file():
            raise AgecheckError(f"run {out} has already finished; nothing to resume")
        log.info("no checkpoint in %s yet: starting the run", out)
    # Check what can fail fast before writing anything: a typo in --data must not leave a run
    # folder behind that the corrected command would then refuse as "not empty".
    images = load_labels(config.data_dir, config.max_images)
    from training.model import check_weights

    check_weights(config.weights, config.image_size)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    crops, train_pos, val_pos = prepare_data(config, images, out / "cache")
    ages = images.age_years[crops.index]
    train_mean = float(ages[train_pos].mean())
    dummy_mae = float(np.abs(ages[val_pos] - train_mean).mean())
    log.info(
        "%s layout: %d images, %d unreadable, %d without a detected face (used whole); "
        "%d train / %d validation; predicting the mean gives validation MAE %.2f",
        images.layout, len(images), len(crops.unreadable), len(crops.no_face),
        len(train_pos), len(val_pos), dummy_mae,
    )

    import keras

    keras.utils.set_random_seed(config.seed)
    precision = config.precision
    if precision == "auto":
        precision = "bfloat16" if bf16_supported() else "float32"
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    from training.model import build_model

    train_ds, val_ds = make_datasets(crops, ages, train_pos, val_pos, config)
    steps = math.ceil(len(train_pos) / config.batch_size)
    model = build_model(
        config.image_size, config.weights, _learning_rate(config, steps), initial_age_years=train_mean
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.ModelCheckpoint(
            str(out / "model.keras"), monitor="val_mae", mode="min", save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume),
        *(callbacks or []),
    ]
    started = time.monotonic()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=1 if sys.stderr.isatty() else 2,
    )
    seconds = time.monotonic() - started

    with open(out / "history.csv", newline="") as file:
        history = list(csv.DictReader(file))
    best = min(history, key=lambda row: float(row["val_mae"]))
    plot_history(out / "history.csv", out / "training_curve.png", dummy_mae)
    report = {
        "config": config.to_dict(),
        "precision": precision,
        "layout": images.layout,
        "images": len(images),
        "unreadable": len(crops.unreadable),
        "unreadable_files": crops.unreadable[:100],
        "no_face_used_whole": len(crops.no_face),
        "train_images": int(len(train_pos)),
        "val_images": int(len(val_pos)),
        "train_mean_age_years": train_mean,
        "dummy_val_mae": dummy_mae,
        "best_val_mae": float(best["val_mae"]),
        "best_epoch": int(best["epoch"]) + 1,
        "epochs_run": len(history),
        "fit_seconds_this_session": round(seconds, 1),
    }
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "best validation MAE %.2f at epoch %d (predicting the mean: %.2f); model in %s",
        report["best_val_mae"], report["best_epoch"], dummy_mae, out / "model.keras",
    )
    return report
