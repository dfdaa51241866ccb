"""Where a run loses the key figure: its own training photos, their augmentation, or new photos?

    python bench/linear_probe.py RUN [--ridge 1e4] [--seed 0] [--out docs/model/linear_probe]

``RUN`` is a training run's folder (``crops.npz``, ``model.keras``, ``train_config.json``).
Every crop of the pack goes through the run's regressor up to its pooled features (the
2048 numbers its one-unit head reads), each crop and its mirror image as the exported model
does. The run's own head then scores the training photos clean, the same photos under the
run's training augmentation, and the validation photos: how far apart they lie says whether
the figure is lost to fitting, to augmentation or to new photos. Last-layer refits on the
same features then ask how much a different read-out alone could recover: a ridge head on
the training features (weighted as the run's fit weighs them), a 13–17 vs 25+ discriminant
on them, and both fitted on one half of the validation photos and scored on the other
(features of photos the backbone never trained on). If none comes near the target, the
ranking is in the backbone's features and only training the backbone moves it. Features
stay in memory: they are derived from the datasets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import public_settings, run_bench, write_report  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from training.fit import CONFIG_NAME, build_training_model, model_inputs, sample_weights  # noqa: E402
from training.metrics import errors, key_figure, teens_and_adults  # noqa: E402
from training.pack import PACK_NAME, load_pack  # noqa: E402

BATCH = 256


def ridge(features: np.ndarray, target: np.ndarray, weights: np.ndarray, strength: float) -> tuple[np.ndarray, float]:
    """Weighted least squares with an unpenalised intercept and an L2 penalty ``strength``: (w, b)."""
    weights = weights / weights.sum()
    mean = weights @ features
    centred = features - mean
    weighted = centred * weights[:, None]
    gram = weighted.T @ centred + strength / len(target) * np.eye(features.shape[1])
    w = np.linalg.solve(gram, weighted.T @ (target - weights @ target))
    return w, float(weights @ target - mean @ w)


def pooled_features(run: Path, pack, config: dict) -> dict:
    """Each crop's and its mirror's pooled features, (n, 2, F), clean and (training split) augmented."""
    import keras

    from training.model import load_regressor

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(config["seed"])
    regressor, trainer = build_training_model(config, float(pack.meta["context"]), 1e-3, 0.0)
    regressor.set_weights(load_regressor(run / "model.keras").get_weights())
    view = keras.Model(trainer.input, trainer.get_layer("camera_augment").output)  # the trainer's crop
    pooled = keras.Model(regressor.input, regressor.get_layer("pool").output)
    inputs = model_inputs(pack, config)

    def run_through(rows: np.ndarray, training: bool) -> np.ndarray:
        out = []
        for start in range(0, len(rows), BATCH):
            crops = keras.ops.convert_to_numpy(view(inputs[rows[start : start + BATCH]], training=training))
            out.append(np.stack([pooled.predict_on_batch(crops), pooled.predict_on_batch(crops[:, :, ::-1])], 1))
        return np.concatenate(out).astype(np.float64)

    w, b = regressor.get_layer("age_years").get_weights()
    train = np.flatnonzero(pack.split == "train")
    return {"clean": run_through(np.arange(len(pack)), False), "augmented": run_through(train, True),
            "head": (w[:, 0].astype(np.float64), float(b[0]))}


def estimate(features: np.ndarray, w: np.ndarray, b: float, relu: bool = True) -> np.ndarray:
    """The mean over crop and mirror of the head's output, as the exported model takes it."""
    out = features @ w + b
    return (np.maximum(out, 0) if relu else out).mean(axis=1)


def scores(true: np.ndarray, predicted: np.ndarray, sources: np.ndarray, ages: bool) -> dict:
    """Key figure (and MAE where ``predicted`` are ages), all sources and each."""
    out = {}
    for name in ["all", *sorted(set(sources.tolist()))]:
        mask = np.ones(len(true), bool) if name == "all" else sources == name
        key = key_figure(true[mask], predicted[mask])
        out[name] = {"mae": errors(true[mask], predicted[mask])["mae"] if ages else None,
                     "key": key["age_13_17_flagged"], "auc": key["auc_13_17_vs_25_plus"]}
    return out


def probe(args: argparse.Namespace) -> None:
    """Features, the run's head on three sets, the refits on validation; print and write the table."""
    run = Path(args.run)
    missing = [name for name in (PACK_NAME, "model.keras", CONFIG_NAME) if not (run / name).is_file()]
    if missing:
        raise AgecheckError(f"{run}: no {', '.join(missing)}; expected a training run's folder "
                            "(agecheck train --out RUN)")
    config = json.loads((run / CONFIG_NAME).read_text())
    pack = load_pack(run / PACK_NAME)
    train, val = pack.split == "train", pack.split == "val"
    if not train.any() or not val.any():
        raise AgecheckError(f"{run / PACK_NAME}: {train.sum()} train and {val.sum()} validation crops; expected both")
    feats = pooled_features(run, pack, config)
    clean, (w0, b0) = feats["clean"], feats["head"]
    age = pack.age_years.astype(np.float64)
    # Each split weighted as the fit weighs its training split (densities of that split's ages and sources)
    weights = np.empty(len(pack))
    for split in (train, val):
        weights[split] = sample_weights(pack.subset(split), config)
    teen_or_adult = np.logical_or(*teens_and_adults(age))
    side = np.where(age < 18, 20.0, 40.0)  # a discriminant on the age scale: lower reads younger

    def fit(rows: np.ndarray, discriminant: bool) -> tuple[np.ndarray, float]:
        rows = rows[teen_or_adult[rows]] if discriminant else rows
        target = side if discriminant else age
        return ridge(clean[rows].reshape(-1, clean.shape[-1]), np.repeat(target[rows], 2),
                     np.repeat(weights[rows], 2), args.ridge)

    val_rows = np.flatnonzero(val)
    halves = np.random.default_rng(args.seed).random(val_rows.size) < 0.5

    def cross_fitted(discriminant: bool) -> np.ndarray:
        out = np.empty(len(pack))
        for fit_on, score_on in ((val_rows[halves], val_rows[~halves]), (val_rows[~halves], val_rows[halves])):
            out[score_on] = estimate(clean[score_on], *fit(fit_on, discriminant), relu=not discriminant)
        return out[val]

    train_rows = np.flatnonzero(train)
    rows = [
        ("the run's head", "training photos, clean", train, estimate(clean[train], w0, b0), True),
        ("the run's head", "training photos, under the run's augmentation", train,
         estimate(feats["augmented"], w0, b0), True),
        ("the run's head", "validation photos", val, estimate(clean[val], w0, b0), True),
        ("ridge head refitted on the training features", "validation photos", val,
         estimate(clean[val], *fit(train_rows, False)), True),
        ("13–17 vs 25+ discriminant on the training features", "validation photos", val,
         estimate(clean[val], *fit(train_rows, True), relu=False), False),
        ("ridge head fitted on half the validation photos", "the other half (both ways)", val,
         cross_fitted(False), True),
        ("13–17 vs 25+ discriminant on half the validation photos", "the other half (both ways)", val,
         cross_fitted(True), False),
    ]
    result = {"run": run.name, "crops": {"train": int(train.sum()), "val": int(val.sum())},
              "feature_size": int(clean.shape[-1]), "rows": [],
              "settings": public_settings(args, "run", "out")}
    sources = sorted(set(pack.source.tolist()))
    lines = [
        f"Run `{run.name}`: {int(train.sum())} training and {int(val.sum())} validation crops, each with its mirror "
        f"image, through the run's backbone to its {clean.shape[-1]} pooled features; refits are ridge "
        f"(strength {args.ridge:g}), each split's photos weighted as the run's fit weighs its training photos. "
        "Key figure: 13–17s flagged at the cut that flags 10% of 25+ adults.",
        "",
        f"| read-out | scored on | MAE | key figure | AUC 13–17 vs 25+ | key: {' / '.join(sources)} |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for head, scored_on, mask, predicted, ages in rows:
        figures = scores(age[mask], predicted, pack.source[mask], ages)
        result["rows"].append({"read_out": head, "scored_on": scored_on, "figures": figures})
        every = figures["all"]
        per_source = " / ".join(f"{figures[s]['key']:.1%}" if figures[s]["key"] is not None else "n/a"
                                for s in sources)
        mae = f"{every['mae']:.2f}" if every["mae"] is not None else "n/a"
        key = f"{every['key']:.1%}" if every["key"] is not None else "n/a"
        auc = f"{every['auc']:.3f}" if every["auc"] is not None else "n/a"
        lines.append(f"| {head} | {scored_on} | {mae} | {key} | {auc} | {per_source} |")
    print("\n".join(lines))
    write_report(args.out, lines, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training run's folder")
    parser.add_argument("--ridge", type=float, default=1e4, help="L2 strength of the refitted read-outs")
    parser.add_argument("--seed", type=int, default=0, help="which validation photos fall in which half")
    parser.add_argument("--out", default=None, help="path without suffix for .json and .md")
    args = parser.parse_args()
    run_bench(probe, args)


if __name__ == "__main__":
    main()
