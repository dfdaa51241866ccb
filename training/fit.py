"""Fit the regressor on a run's crop pack, on any Keras backend.

``agecheck train`` crops the photos into ``RUN/crops.npz`` and calls `fit_run`. The same
function runs where there is no MediaPipe or TensorFlow — a GPU machine with JAX or PyTorch:

    KERAS_BACKEND=jax python -m training.fit RUN [--resume] [--time-budget-s 420]

It needs only Keras, NumPy, OpenCV and the run folder (``train_config.json`` and the pack).
The model it writes (``RUN/model.keras``) loads under any backend; export runs where
TensorFlow is.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from edge_app.errors import AgecheckError
from training.imbalance import lds_weights, source_weights
from training.pack import PACK_NAME, CropPack, load_pack

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"
CONFIG_NAME = "train_config.json"

BEFORE_THE_SETTING = {"lds_power": 0.5, "border_fill": 0.0, "glasses_share": 0.0, "mask_share": 0.0,
                      "consistency": 0.0, "weight_decay": 0.0, "rank_weight": 0.0}
"""What a run configured before each of these settings existed trained with (its
``train_config.json`` lacks the key): the fit, the card and ``--resume``'s check read it so."""


def setting(config: dict, key: str):
    """``config[key]``, or `BEFORE_THE_SETTING`'s value where a run's config predates the key."""
    return config[key] if key in config or key not in BEFORE_THE_SETTING else BEFORE_THE_SETTING[key]


def sample_weights(pack: CropPack, config: dict) -> np.ndarray:
    """Rare ages and small sources weigh more (`training.imbalance`), as ``config`` says; mean 1."""
    lds_sigma_years, source_power = config["lds_sigma_years"], config["source_weight_power"]
    weights = np.ones(len(pack), np.float64)
    if lds_sigma_years > 0:
        weights *= lds_weights(pack.age_years, lds_sigma_years, setting(config, "lds_power"))
    if source_power > 0:
        weights *= source_weights(pack.source, source_power)
    return (weights / weights.mean()).astype(np.float32)


def border_fill(config: dict) -> float:
    """The share of crops `training.augment.BorderFill` fills: none without augmentation."""
    return setting(config, "border_fill") if config["augment"] else 0.0


def model_inputs(pack: CropPack, config: dict) -> np.ndarray:
    """What the trainer takes: the crops, and with `border_fill` where each shows its photo.

    Raises:
        AgecheckError: if `border_fill` is on and the pack does not record where its photos end.
    """
    if border_fill(config) <= 0:
        return pack.images
    if pack.inside is None:
        raise AgecheckError("--border-fill: the crop pack has no record of where each photo ends (cropped before "
                            "it was kept); expected a pack made by agecheck train --crops-only today")
    return np.concatenate([pack.images, pack.inside[..., None]], axis=-1)


def accelerator() -> str:
    """``gpu`` when the active Keras backend sees one, else ``cpu``."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return "gpu" if any(d.platform == "gpu" for d in jax.devices()) else "cpu"
        if backend == "torch":
            import torch

            return "gpu" if torch.cuda.is_available() else "cpu"
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    except Exception:  # a broken accelerator stack trains on the CPU
        return "cpu"


def choose_precision(requested: str) -> str:
    """``auto``: bfloat16 on a GPU or a CPU with AMX bf16 tiles, else float32.

    Measured with ``bench/train_speed.py`` on 2-core machines: without AVX512-BF16 or AMX,
    mixed bfloat16 trained at half the speed of float32; with AVX512-BF16 alone (an AMD
    EPYC, 2026-11-28) at the same speed (37.2 img/s at 64 px), so float32, which costs
    nothing there; with AMX at about 55 img/s.
    """
    if requested != "auto":
        return requested
    if accelerator() == "gpu":
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bfloat16" if "amx_bf16" in flags else "float32"


def learning_rate(config: dict, steps_per_epoch: int, epochs: int):
    """Adam's rate: linear warm-up then cosine decay to 0, or constant without warm-up."""
    import keras

    if config["warmup_epochs"] <= 0:
        return config["learning_rate"]
    warmup = max(1, int(config["warmup_epochs"] * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config["learning_rate"] / 10,
        decay_steps=max(1, epochs * steps_per_epoch - warmup),
        warmup_target=config["learning_rate"],
        warmup_steps=warmup,
    )


def build_training_model(config: dict, context: float, lr, initial_age_years: float):
    """(regressor, trainer): the trainer puts `CameraAugment` in front of the regressor.

    The regressor is what gets exported; the trainer takes the pack's wider crops, corrupts
    them while training and cuts their centre (the card's framing) otherwise. With
    ``consistency`` > 0 it corrupts each crop twice, independently, and estimates both
    views, (B, 2), for `training.model.age_loss`. With ``border_fill`` > 0 it takes a
    fourth channel (`model_inputs`) for `training.augment.BorderFill`.
    """
    import keras

    from training.augment import BorderFill, CameraAugment, SyntheticGlasses, SyntheticMask
    from training.from_tflite import freeze_batch_norms, frozen_batch_norms
    from training.model import build_model, compile_model, load_regressor

    size = config["image_size"]
    regressor = build_model(size, config["weights"], lr, initial_age_years=initial_age_years)
    if config.get("init_model"):  # fine-tuning: the same architecture, an earlier run's weights (any input side)
        start = load_regressor(config["init_model"])
        regressor.set_weights(start.get_weights())
        freeze_batch_norms(regressor, frozen_batch_norms(start))  # those folded by an export stay so
    stored = int(round(size * context))
    fill = border_fill(config)
    inputs = keras.Input((stored, stored, 4 if fill > 0 else 3), name="stored_crop")
    glasses = setting(config, "glasses_share") if config["augment"] else 0.0
    masks = setting(config, "mask_share") if config["augment"] else 0.0
    margin = config.get("crop", {}).get("margin", 0.1)
    strength = config["augment_strength"] if config["augment"] else 0.0
    consistency = setting(config, "consistency")
    estimates = []
    for view in range(2 if consistency > 0 else 1):
        seed, suffix = config["seed"] + view, "_2" * view
        x = inputs
        if fill > 0:
            x = BorderFill(fill, seed=seed, name="border_fill" + suffix)(x)
        if glasses > 0:  # drawn on the stored crop, so that CameraAugment's roll and zoom move them too
            x = SyntheticGlasses(glasses, context, margin, seed=seed, name="glasses" + suffix)(x)
        if masks > 0:
            x = SyntheticMask(masks, context, margin, seed=seed, name="mask" + suffix)(x)
        x = CameraAugment(size, context, strength, seed=seed, name="camera_augment" + suffix)(x)
        estimates.append(regressor(x))
    output = keras.layers.Concatenate(name="views")(estimates) if len(estimates) > 1 else estimates[0]
    trainer = keras.Model(inputs, output, name="trainer")
    compile_model(trainer, lr, consistency, setting(config, "weight_decay"), setting(config, "rank_weight"))
    return regressor, trainer


def plot_history(history_csv: Path, out_png: Path, dummy_mae: float) -> None:
    """Training and validation MAE per epoch, with the dummy baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [float(r["mae"]) for r in rows], "o-", ms=3, label="train MAE (augmented)")
    ax.plot(epochs, [float(r["val_mae"]) for r in rows], "o-", ms=3, label="validation MAE (clean)")
    ax.axhline(dummy_mae, color="grey", ls="--", label=f"predict the mean ({dummy_mae:.1f})")
    ax.set(xlabel="epoch", ylabel="MAE (years)", title="Age regressor training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def save_best(regressor, path: Path, best: float = math.inf):
    """A Keras callback saving ``regressor`` (not the trainer around it) to ``path``.

    It saves whenever ``val_mae`` beats the best so far (``best`` when resuming).
    """
    import keras

    state = {"best": best}

    def on_epoch_end(epoch, logs=None):
        value = (logs or {}).get("val_mae")
        if value is not None and value < state["best"]:
            state["best"] = float(value)
            regressor.save(path)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def build_state(trainer, x: np.ndarray, y: np.ndarray, batch: int) -> None:
    """Create the optimizer's and the metrics' variables before ``trainer.fit`` traces its step.

    On the TensorFlow backend Keras otherwise creates them inside the first trace of the
    train step, and TensorFlow then traces the whole ResNet50 step a second time: about 12 s
    on 2 cores for every run (2026-11-28), most of a tiny run's time. The weights and
    the augmentation's random draws do not change (inference touches neither).
    """
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.evaluate(x[:batch], y[:batch], batch_size=batch, verbose=0)


def _probe_seconds_per_step(config: dict, pack: CropPack, context: float, steps: int = 25) -> tuple[float, float]:
    """(seconds per training step after compilation, seconds of the first, compiling call)."""
    import keras

    batch = config["batch_size"]
    n = min(len(pack), batch * steps)
    _, trainer = build_training_model(config, context, 1e-4, 30.0)
    part = pack.subset(np.arange(n))
    x, y = model_inputs(part, config), part.age_years.astype(np.float32)[:, None]
    started = time.monotonic()
    build_state(trainer, x, y, batch)
    trainer.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    first = time.monotonic() - started
    started = time.monotonic()
    trainer.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    per_step = (time.monotonic() - started) / math.ceil(n / batch)
    del trainer
    keras.backend.clear_session()
    return per_step, first


def fit_run(
    run_dir: str | Path, resume: bool = False, time_budget_s: float = 0.0, callbacks=None, backup: bool = True
) -> dict:
    """Fit on ``RUN/crops.npz`` as ``RUN/train_config.json`` says; write the run's outputs.

    Writes ``model.keras`` (the regressor with the best validation MAE), ``history.csv``,
    ``training_curve.png`` (where matplotlib is installed) and ``report.json`` with the
    validation figures of each source. ``backup/`` holds the last epoch's state until the
    run completes, so ``resume=True`` continues an interrupted run.

    Args:
        run_dir: the run folder.
        resume: continue an interrupted run.
        time_budget_s: if > 0, fewer epochs than configured so that the fit ends within
            this many seconds (measured from a short probe); the schedule is shaped for them.
        callbacks: extra Keras callbacks.
        backup: keep ``backup/`` for ``resume`` (off where the machine will not outlive
            the run: saving the optimizer's state every epoch costs time there).
    """
    import keras

    run = Path(run_dir)
    config = json.loads((run / CONFIG_NAME).read_text())
    pack = load_pack(run / PACK_NAME)
    context = float(pack.meta["context"])
    train, val = pack.subset(pack.split == "train"), pack.subset(pack.split == "val")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"need crops in both splits, got {len(train)} train and {len(val)} validation")
    train_x, val_x = model_inputs(train, config), model_inputs(val, config)
    weights = sample_weights(train, config)
    train_mean = float(np.average(train.age_years, weights=weights))
    dummy_mae = float(np.abs(val.age_years - train_mean).mean())

    keras.utils.set_random_seed(config["seed"])
    precision = choose_precision(config["precision"])
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    steps = math.ceil(len(train) / config["batch_size"])
    epochs = config["epochs"]
    probe = {}
    if time_budget_s > 0 and not resume:
        per_step, first = _probe_seconds_per_step(config, train, context)
        val_share = len(val) / len(train) / 3  # inference only, no augmentation
        epoch_s = per_step * steps * (1 + val_share) + 1.0  # + checkpoint writing
        left = time_budget_s - first * 2.5  # the probe's own two calls, and the real compile
        epochs = max(1, min(epochs, int(left / epoch_s)))
        probe = {"seconds_per_step": per_step, "first_call_seconds": first, "epochs_in_budget": epochs}
        log.info("probe: %.1f ms/step (%.0f img/s); %d epochs fit in %.0f s",
                 per_step * 1e3, config["batch_size"] / per_step, epochs, time_budget_s)
        (run / "budget.json").write_text(json.dumps(probe | {"time_budget_s": time_budget_s}) + "\n")
    elif resume and (run / "budget.json").is_file():
        epochs = json.loads((run / "budget.json").read_text())["epochs_in_budget"]
    regressor, trainer = build_training_model(
        config, context, learning_rate(config, steps, epochs), train_mean
    )
    log.info("%d train / %d validation crops, %s, %s backend, %d epochs; predicting the mean: MAE %.2f",
             len(train), len(val), precision, keras.backend.backend(), epochs, dummy_mae)
    history_csv = run / "history.csv"
    earlier = list(csv.DictReader(history_csv.read_text().splitlines())) if resume and history_csv.is_file() else []
    best = min((float(r["val_mae"]) for r in earlier), default=math.inf)
    all_callbacks = [
        *([keras.callbacks.BackupAndRestore(str(run / "backup"))] if backup else []),
        save_best(regressor, run / "model.keras", best),
        keras.callbacks.CSVLogger(str(history_csv), append=resume),
        *(callbacks or []),
    ]
    # Whole batches only: a last, smaller batch would make a jitting backend compile the
    # train step twice. A few random crops are repeated instead.
    fill = np.random.default_rng(config["seed"]).choice(len(train), -len(train) % config["batch_size"])
    order = np.concatenate([np.arange(len(train)), fill])
    started = time.monotonic()
    # Labels as (N, 1): they broadcast over a two-view trainer's (N, 2) estimates.
    fit_x, fit_y = train_x[order], train.age_years[order].astype(np.float32)[:, None]
    build_state(trainer, fit_x, fit_y, config["batch_size"])
    trainer.fit(
        fit_x, fit_y, sample_weight=weights[order],
        batch_size=config["batch_size"], epochs=epochs,
        validation_data=(val_x, val.age_years.astype(np.float32)[:, None]),
        callbacks=all_callbacks, verbose=1 if sys.stderr.isatty() else 2, shuffle=True,
    )
    seconds = time.monotonic() - started

    with open(history_csv, newline="") as file:
        history = list(csv.DictReader(file))
    best_row = min(history, key=lambda row: float(row["val_mae"]))
    best_model = keras.models.load_model(run / "model.keras", compile=False)
    from training.augment import CameraAugment

    centre = CameraAugment(config["image_size"], context)  # inference: the card's framing
    predicted = best_model.predict(np.asarray(centre(val.images.astype(np.float32))), batch_size=256, verbose=0)
    predicted = predicted.reshape(-1)
    per_source = {}
    for name in dict.fromkeys(val.source.tolist()):
        mask = val.source == name
        per_source[name] = {"val_images": int(mask.sum()),
                            "val_mae": float(np.abs(predicted[mask] - val.age_years[mask]).mean())}
    try:
        plot_history(history_csv, run / "training_curve.png", dummy_mae)
    except ImportError:  # matplotlib absent: the curve can be drawn later from history.csv
        pass
    report = {
        "config": config,
        "precision": precision,
        "backend": keras.backend.backend(),
        "accelerator": accelerator(),
        "train_images": int(len(train)),
        "val_images": int(len(val)),
        "train_mean_age_years": train_mean,
        "dummy_val_mae": dummy_mae,
        "best_val_mae": float(best_row["val_mae"]),
        "best_epoch": int(best_row["epoch"]) + 1,
        "epochs_run": len(history),
        "epochs_planned": epochs,
        "fit_seconds_this_session": round(seconds, 1),
        "epochs_this_session": len(history) - len(earlier),
        "train_images_per_second": round(len(train) * (len(history) - len(earlier)) / seconds, 1),
        "per_source": per_source,
        "pack": pack.meta,
        **({"probe": probe} if probe else {}),
    }
    (run / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    log.info("best validation MAE %.2f at epoch %d; by source: %s", report["best_val_mae"], report["best_epoch"],
             ", ".join(f"{k} {v['val_mae']:.2f}" for k, v in per_source.items()))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m training.fit RUN [--resume] [--time-budget-s S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--time-budget-s", type=float, default=0.0)
    parser.add_argument("--no-backup", action="store_true", help="Keep no resume state (a machine that goes away).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run = Path(args.run_dir)
    for need in (CONFIG_NAME, PACK_NAME):
        if not (run / need).is_file():
            print(f"error: {run / need} does not exist; expected a run folder made by agecheck train",
                  file=sys.stderr)
            return 2
    try:
        fit_run(run, args.resume, args.time_budget_s, backup=not args.no_backup)
    except AgecheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
