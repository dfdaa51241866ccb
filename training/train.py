"""`agecheck train`: crop labelled photos into a pack, then fit (`training.fit`) with checkpoints.

Several datasets train together (``--data A --data B``); each keeps a validation part of its
own, reported apart. Faces are found by the app's full-range detector and cut by the app's
``crop_faces`` with eye alignment, wider than the card's framing so that `CameraAugment`
can roll, zoom and shift them on the fly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_app.config import DEFAULT_DETECTOR_MODEL, DetectorConfig
from edge_app.crop import CropSettings
from edge_app.errors import AgecheckError
from edge_app.model_card import sha256_of
from training.data import load_crops, load_sources, source_name
from training.fit import BEFORE_THE_SETTING, CONFIG_NAME, REPORT_NAME, fit_run
from training.pack import LABEL_FIELDS, PACK_NAME, CropPack, read_pack_meta, save_pack

log = logging.getLogger(__name__)

# The app's camera detector; photos are shrunk into a canvas this many times their size
# so that it finds close-ups (300 of 300 UTKFace chips; bench/box_mapping.py).
PHOTO_DETECTOR = DetectorConfig(model_path=str(DEFAULT_DETECTOR_MODEL))
PHOTO_CANVAS = 3.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; saved in the run's report.

    Attributes:
        data_dirs: labelled photos, one folder per source, each in a layout of ``training.data``.
        out_dir: the run folder (model, history, curve, report, checkpoints).
        image_size: model input side in pixels.
        epochs: total epochs, counting those done before a ``--resume``.
        batch_size: images per step.
        learning_rate: Adam's peak learning rate (1e-4 in the original notebooks).
        weight_decay: AdamW's decoupled decay of the kernels per step, times the learning
            rate (`training.model.compile_model`); 0 is plain Adam, the notebooks' recipe.
        warmup_epochs: linear warm-up before a cosine decay to 0; 0 keeps the rate constant.
        weights: ``imagenet``, ``none`` or a ResNet50 notop weights file.
        init_model: an earlier run's regressor (its ``model.keras``, or an exported ``.tflite``:
            `training.from_tflite`) to start from instead of ``weights`` (fine-tuning), at its
            own input side or another ``image_size`` (the network is fully convolutional). Empty: none.
        val_fraction: validation share when the layout has no split of its own.
        seed: seeds the split, shuffling and initialisation.
        precision: ``auto`` (bfloat16 on a GPU or an AMX CPU: `training.fit.choose_precision`),
            ``bfloat16``, ``float32``.
        augment: camera-like corruption on the fly (`training.augment.CameraAugment`).
        augment_strength: 1 is the default mix; 0 framing only.
        glasses_share: share of training crops given synthetic glasses
            (`training.augment.SyntheticGlasses`); 0.25 since a fine-tune measured it
            (`docs/MODEL.md`: 13-17 shift under glasses +5.7 -> +3.4 years, clean MAE kept).
        mask_share: share of training crops given a synthetic face mask
            (`training.augment.SyntheticMask`); 0 (none) until a run has measured it.
        context: stored crops are this much wider than the card's framing (room to roll,
            zoom and shift); the model sees the framing itself at inference.
        lds_sigma_years: label-distribution smoothing width for the age weights; 0 turns
            the weighting off (`training.imbalance`).
        lds_power: an age weighs its smoothed density ** -power (0.5: inverse square root,
            the shipped runs'; 1: inverse, rare ages such as 13-17 weigh more still).
        source_weight_power: small sources weigh count ** -power more per photo; 0 off.
        border_fill: share of training crops whose framing, where it left the photo, is
            filled with varied content instead of replicated edges
            (`training.augment.BorderFill`); needs a pack that records where each photo ends.
        consistency: each crop is corrupted twice and the squared gap between the two
            estimates weighs this much in the loss (`training.model.age_loss`); 0 off.
        rank_weight: weight in the loss of each batch's 13-17s read less than 7 years below
            its adults 25+ (`training.model.key_rank_term`: the key figure's ordering); 0 off.
        max_images: use only the first N images of each source (quick smoke runs); 0 uses all.
        crop: how faces are cut (recorded in the card, replayed by the app).
        detector: finds the face in each photo: the app's own full-range model, on the
            photo shrunk into a ``canvas`` times larger grey frame.
        canvas: see `training.data.detect_in_photo`.
    """

    data_dirs: tuple[str, ...]
    out_dir: str
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    weights: str = "imagenet"
    init_model: str = ""
    val_fraction: float = 0.2
    seed: int = 42
    precision: str = "auto"
    augment: bool = True
    augment_strength: float = 1.0
    glasses_share: float = 0.25
    mask_share: float = 0.0
    context: float = 1.25
    lds_sigma_years: float = 2.0
    lds_power: float = 0.5
    source_weight_power: float = 0.5
    consistency: float = 0.0
    rank_weight: float = 0.0
    border_fill: float = 0.0
    max_images: int = 0
    crop: CropSettings = field(default_factory=lambda: CropSettings(align=True))
    detector: DetectorConfig = field(default_factory=lambda: PHOTO_DETECTOR)
    canvas: float = PHOTO_CANVAS

    def __post_init__(self) -> None:
        checks = [
            ("image_size", self.image_size, 32 <= self.image_size <= 1024, "32-1024"),
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, 1 <= self.batch_size <= 4096, "1-4096"),
            ("learning_rate", self.learning_rate, 0 < self.learning_rate < 1, "in (0, 1)"),
            ("weight_decay", self.weight_decay, 0 <= self.weight_decay <= 1, "in [0, 1]"),
            ("warmup_epochs", self.warmup_epochs, 0 <= self.warmup_epochs < self.epochs, "in [0, epochs)"),
            ("val_fraction", self.val_fraction, 0 < self.val_fraction < 1, "in (0, 1)"),
            ("precision", self.precision, self.precision in ("auto", "bfloat16", "float32"),
             "auto, bfloat16 or float32"),
            ("max_images", self.max_images, self.max_images >= 0, ">= 0"),
            ("augment_strength", self.augment_strength, 0 <= self.augment_strength <= 2, "in [0, 2]"),
            ("glasses_share", self.glasses_share, 0 <= self.glasses_share <= 1, "in [0, 1]"),
            ("mask_share", self.mask_share, 0 <= self.mask_share <= 1, "in [0, 1]"),
            ("context", self.context, 1 <= self.context <= 2, "in [1, 2]"),
            ("lds_sigma_years", self.lds_sigma_years, 0 <= self.lds_sigma_years <= 20, "in [0, 20]"),
            ("lds_power", self.lds_power, 0 <= self.lds_power <= 2, "in [0, 2]"),
            ("source_weight_power", self.source_weight_power, 0 <= self.source_weight_power <= 1, "in [0, 1]"),
            ("consistency", self.consistency, 0 <= self.consistency <= 10, "in [0, 10]"),
            ("rank_weight", self.rank_weight, 0 <= self.rank_weight <= 10, "in [0, 10]"),
            ("border_fill", self.border_fill, 0 <= self.border_fill <= 1, "in [0, 1]"),
            ("data", len(self.data_dirs), len(self.data_dirs) >= 1, "at least one folder"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise AgecheckError(f"--{name.replace('_', '-')} {value} is not allowed: expected {allowed}")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self) | {"data_dirs": list(self.data_dirs)}

    @property
    def stored_size(self) -> int:
        """Side of the stored (context) crops in pixels."""
        return int(round(self.image_size * self.context))

    @property
    def stored_crop(self) -> CropSettings:
        """`crop` widened by ``context``: its central 1/context is the card's framing."""
        margin = ((1 + 2 * self.crop.margin) * self.context - 1) / 2
        return CropSettings(margin=margin, pad=self.crop.pad, align=self.crop.align)


def make_pack(config: TrainConfig, cache_dir: Path) -> CropPack:
    """Detect and crop every photo of every source once (cached per source) into a pack."""
    images = load_sources(list(config.data_dirs), config.val_fraction, config.seed, config.max_images)
    parts, counts = [], {}
    for name in images.sources:
        part = images.subset(np.flatnonzero(images.source == name))
        crops = load_crops(part, config.stored_size, config.stored_crop, config.detector, cache_dir,
                           progress=True, canvas=config.canvas, with_inside=True)
        labels = part.subset(crops.index)
        parts.append(CropPack(crops.images[..., :3], labels.age_years, labels.source, labels.split, labels.gender,
                              labels.race, np.array([p.name for p in labels.paths]), inside=crops.images[..., 3]))
        counts[name] = {"photos": len(part), "unreadable": len(crops.unreadable), "no_face_used_whole":
                        len(crops.no_face), "unreadable_files": [Path(p).name for p in crops.unreadable[:100]]}
        log.info("%s: %d photos, %d unreadable, %d without a detected face (used whole)",
                 name, len(part), len(crops.unreadable), len(crops.no_face))
    pack = CropPack(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("images", *LABEL_FIELDS)),
                    inside=np.concatenate([p.inside for p in parts]))
    if len(pack) == 0:
        raise AgecheckError(f"no readable images in {', '.join(config.data_dirs)}")
    pack.meta = {
        "size": config.stored_size, "context": config.context, "crop": config.crop.to_dict(),
        "stored_crop": config.stored_crop.to_dict(), "detector": asdict(config.detector), "canvas": config.canvas,
        "sources": {name: {"folder": str(Path(d)), **counts[name]}
                    for name, d in zip(images.sources, config.data_dirs, strict=True)},
    }
    for split in ("train", "val"):
        if not (pack.split == split).any():
            raise AgecheckError(
                f"need readable images in both splits, got {(pack.split == 'train').sum()} train and "
                f"{(pack.split == 'val').sum()} validation; add images or change --val-fraction"
            )
    return pack


# What a resumed run may say differently: where things are (another clone or machine spells
# the paths its own way) and how long it runs (--epochs counts the epochs already done).
RESUME_MAY_CHANGE = frozenset({"out_dir", "data_dirs", "init_model", "init_model_sha256", "init_model_input_size",
                               "epochs", "detector.model_path", "crop.view_margins"})
# What the crop pack was made with: once it exists, a new value would not reach the crops.
PACK_SETTINGS = frozenset({"image_size", "context", "canvas", "val_fraction", "seed", "max_images"})
OPTION_NAMES = {"crop.margin": "--crop-margin", "crop.align": "--align"}


def _flat(settings: dict, prefix: str = "") -> dict:
    """``{"crop": {"margin": m}}`` as ``{"crop.margin": m}``."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def _option(key: str) -> str:
    """The command-line option that sets a (flattened) setting, or the setting's own name."""
    if key in TrainConfig.__dataclass_fields__:
        return "--" + key.replace("_", "-")
    return OPTION_NAMES.get(key, key)


def check_resume(out: Path, settings: dict, recorded: dict | None, fit_started: bool) -> None:
    """Refuse a ``--resume`` whose settings differ from those the run was made with.

    Once the fit has begun (``backup/`` exists) every setting but `RESUME_MAY_CHANGE` is the
    run's; before, only those the crops were cut with (`PACK_SETTINGS`, the crop's and the
    detector's). A setting the recorded run lacks (it predates the setting) is compared with
    what the fit reads for it (`training.fit.BEFORE_THE_SETTING`). A pack already in the run folder (one
    copied in to reuse its crops) must have been cut as ``settings`` ask: its side, context, crop,
    detector, canvas and sources.

    Raises:
        AgecheckError: naming each setting, the run's value and the command's.
    """
    new = _flat(settings)
    changed = []
    if recorded is not None:
        old = _flat(recorded)
        for key, value in new.items():
            was = old.get(key, BEFORE_THE_SETTING.get(key, value))
            cut = key in PACK_SETTINGS or key.split(".")[0] in ("crop", "detector")
            if key not in RESUME_MAY_CHANGE and was != value and (fit_started or cut):
                changed.append((key, was, value))
    if (out / PACK_NAME).is_file():  # the pack itself (one copied in has no settings beside it)
        meta = read_pack_meta(out / PACK_NAME)
        reported = {key for key, _, _ in changed}
        cut_as = {"context": (meta["context"], new["context"]),
                  **{f"crop.{k}": (meta["crop"][k], new[f"crop.{k}"]) for k in ("margin", "pad", "align")},
                  **{f"detector.{k}": (was, new.get(f"detector.{k}")) for k, was in meta.get("detector", {}).items()
                     if f"detector.{k}" not in RESUME_MAY_CHANGE}}
        if "canvas" in meta:
            cut_as["canvas"] = (meta["canvas"], new["canvas"])
        if not reported & {"image_size", "context"}:
            cut_as["crops' side in px"] = (meta["size"], round(new["image_size"] * new["context"]))
        changed += [(key, was, value) for key, (was, value) in cut_as.items() if was != value and key not in reported]
        sources = sorted(meta["sources"])
        wanted = sorted(source_name(Path(d)) for d in settings["data_dirs"])
        if sources != wanted:
            changed.append(("--data", ", ".join(sources), ", ".join(wanted)))
    if changed:
        said = "; ".join(f"{_option(key)} {was} (this command: {value})" for key, was, value in changed)
        raise AgecheckError(f"--resume: run {out} was made with {said}; a resumed run keeps the settings it "
                            "began with: give them again, or choose another --out")


def train(config: TrainConfig, resume: bool = False, callbacks: list | None = None,
          crops_only: bool = False, time_budget_s: float = 0.0) -> dict:
    """Crop into ``RUN/crops.npz`` (unless it exists), then fit; see `training.fit.fit_run`.

    Args:
        config: the run's settings.
        resume: continue the interrupted run in ``config.out_dir``.
        callbacks: extra Keras callbacks.
        crops_only: stop after writing the pack and the config (to fit elsewhere with
            ``python -m training.fit RUN``).
        time_budget_s: see `training.fit.fit_run`.

    Raises:
        AgecheckError: for bad data, an existing run folder without ``resume``, or weights
            that cannot be had.
    """
    out = Path(config.out_dir)
    backup = out / "backup"
    if out.exists() and any(out.iterdir()) and not resume:
        raise AgecheckError(f"run folder {out} is not empty: pass --resume to continue it, or choose another --out")
    if resume and not backup.is_dir() and (out / REPORT_NAME).is_file():
        raise AgecheckError(f"run {out} has already finished; nothing to resume")
    # Check what can fail fast before writing anything: a typo in --data must not leave a run
    # folder behind that the corrected command would then refuse as "not empty".
    load_sources(list(config.data_dirs), config.val_fraction, config.seed, config.max_images)
    from training.model import check_weights, load_regressor

    check_weights(config.weights, config.image_size)
    run_config = config.to_dict()
    if config.init_model:
        start_side = load_regressor(config.init_model).input_shape[1]
        if start_side != config.image_size:  # the weights carry over; the faces they saw were another size
            run_config["init_model_input_size"] = start_side
            log.info("--init-model %s was trained at %d px: its weights start a fine-tune at %d px, where "
                     "they read far worse until retrained (docs/MODEL.md, 'The shipped model fine-tuned at 96 px')",
                     config.init_model, start_side, config.image_size)
        if Path(config.init_model).suffix == ".tflite":
            # Recorded now, not at export: the name of an exported start (the shipped model's)
            # says nothing once the file is replaced, perhaps by this run's own export.
            run_config["init_model_sha256"] = sha256_of(config.init_model)
    if resume:
        recorded = json.loads((out / CONFIG_NAME).read_text()) if (out / CONFIG_NAME).is_file() else None
        check_resume(out, run_config, recorded, fit_started=backup.is_dir())
        if backup.is_dir() and recorded and "init_model_sha256" in recorded:
            run_config["init_model_sha256"] = recorded["init_model_sha256"]  # the start it did begin from
        if not backup.is_dir() and not crops_only:
            log.info("no checkpoint in %s yet: starting the run", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(run_config, indent=2) + "\n")
    if not (out / PACK_NAME).is_file():
        save_pack(out / PACK_NAME, make_pack(config, out / "cache"))
    if crops_only:
        return {"pack": str(out / PACK_NAME), "sources": read_pack_meta(out / PACK_NAME)["sources"]}
    return fit_run(out, resume=resume, time_budget_s=time_budget_s, callbacks=callbacks)
