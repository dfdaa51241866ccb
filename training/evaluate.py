"""`agecheck evaluate`: error by age band, the alcohol policy's hits and misses, per group."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np

from edge_app.age_model import AgeRegressor
from edge_app.config import AgeModelConfig
from edge_app.errors import AgecheckError
from training.data import GENDERS, RACES, load_sources, mean_over_views, select
from training.export import (
    RunSettings,
    canvas_from_card,
    detector_from_card,
    load_float_model,
    predict_keras,
    view_crops,
)
from training.metrics import calibrate_margins, figures, figures_by_source, policy_shares

log = logging.getLogger(__name__)

SPLITS = ("all", "train", "val")


def predictor(model_path: Path):
    """(predict function, settings, card margin) for a ``.tflite`` (with card) or ``.keras``."""
    if model_path.suffix == ".tflite":
        regressor = AgeRegressor(AgeModelConfig(model_path=str(model_path), num_threads=os.cpu_count() or 1))
        card = regressor.card.data
        val_fraction, seed = regressor.card.validation_split
        settings = RunSettings(
            image_size=regressor.input_size,
            crop=regressor.card.crop,
            detector=detector_from_card(card),
            seed=seed,
            val_fraction=val_fraction,
            report={},
            canvas=canvas_from_card(card),
        )
        return regressor.predict, settings, regressor.card.mae_years
    if model_path.suffix == ".keras":
        from training.model import mirror_averaged

        model = mirror_averaged(load_float_model(model_path))  # as `agecheck export` ships it
        settings = RunSettings.for_model(model_path, int(model.input_shape[1]))
        return (lambda crops: predict_keras(model, crops)), settings, settings.report.get("best_val_mae")
    raise AgecheckError(f"--model {model_path}: expected a .tflite (with its .json card) or a .keras file")


def group_figures(true_years, predicted, labels, names, threshold_age, margin_years) -> dict:
    """Errors, key figure and policy shares for each labelled group (e.g. gender, race)."""
    return {
        name: figures(true_years[labels == code], predicted[labels == code], threshold_age, margin_years)
        for code, name in names.items() if (labels == code).any()
    }


PLOT_MARK_KEY, PLOT_MARK = "Source", "agecheck evaluate"  # a PNG text chunk: what tells our plots from others'


def plot_paths(report_json: Path) -> dict[str, Path]:
    """The plots `evaluate` writes beside its report, by what they show."""
    return {"error by age": report_json.with_suffix(".error_by_age.png"),
            "trade-off": report_json.with_suffix(".tradeoff.png")}


def plot_error_by_age(true_years, predicted, out_png: Path, title: str) -> None:
    """Prediction against true age, and MAE per year of age."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.scatter(true_years, predicted, s=3, alpha=0.3)
    top = max(float(np.max(true_years)), float(np.max(predicted)), 1.0)
    left.plot([0, top], [0, top], "k--", lw=1, label="perfect")
    left.set(xlabel="true age (years)", ylabel="predicted age (years)", title=title)
    left.legend()
    ages = np.arange(int(np.max(true_years)) + 1)
    mae = [np.abs(predicted[true_years.astype(int) == a] - a).mean() if (true_years.astype(int) == a).any()
           else np.nan for a in ages]
    right.plot(ages, mae, ".-")
    right.axvspan(13, 18, color="orange", alpha=0.2, label="13-17")
    right.set(xlabel="true age (years)", ylabel="MAE (years)", title="error by age")
    right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100, metadata={PLOT_MARK_KEY: PLOT_MARK})
    plt.close(fig)


def plot_tradeoff(true_years, predicted, threshold_age, marked: dict[str, float], out_png: Path) -> None:
    """Share of minors flagged against share of 25+ adults flagged, as the margin grows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margins = np.linspace(0, max(20.0, *marked.values(), 0.0) + 1, 161)  # reach every marked margin
    shares = [policy_shares(true_years, predicted, threshold_age, m) for m in margins]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if shares[0]["minors_flagged"] is None or shares[0]["age_25_plus_flagged"] is None:
        # One side of the trade-off has nobody in this data: say so instead of plotting nothing.
        ax.text(0.5, 0.5, "no minors or no 25+ adults in this data", ha="center", transform=ax.transAxes)
        marked = {}
    else:
        ax.plot([s["age_25_plus_flagged"] for s in shares], [s["minors_flagged"] for s in shares], "-")
    for label, margin in marked.items():
        s = policy_shares(true_years, predicted, threshold_age, margin)
        ax.plot(s["age_25_plus_flagged"], s["minors_flagged"], "o")
        ax.annotate(f"{label}: +{margin:.1f} y", (s["age_25_plus_flagged"], s["minors_flagged"]),
                    textcoords="offset points", xytext=(6, -10))
    ax.set(xlabel="share of 25+ adults asked for ID", ylabel=f"share of under-{threshold_age:g}s asked for ID",
           title=f"ID-check trade-off as the margin over {threshold_age:g} grows")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100, metadata={PLOT_MARK_KEY: PLOT_MARK})
    plt.close(fig)


PREDICTIONS_HEADER = ("source", "file_name", "real_age", "predicted_age")
REPORT_KEYS = ("model", "split", "scored")  # what tells a report of evaluate's from others'
MARKDOWN_START = "Model `"


def write_predictions(path: Path, sources, file_names, true_years, predicted) -> None:
    """One row per photo: source, file name, real and predicted age (read by `bench/compare_models.py`).

    Estimates to 0.0001 year: at 0.01 an estimate could round onto a whole limit and change
    sides of the gate in the tables made from the file (`bench/card_tradeoff.py`).
    """
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(PREDICTIONS_HEADER)
        for row in zip(sources, file_names, true_years, predicted, strict=True):
            writer.writerow([row[0], row[1], f"{row[2]:g}", f"{row[3]:.4f}"])


def _plot_wrote(path: Path, report_json: Path) -> bool:
    """Whether the plot ``path`` is `evaluate`'s (`PLOT_MARK`), or older than the mark beside its own report.

    A plot written before the mark is `evaluate`'s when the report beside it is an earlier evaluation's.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if getattr(image, "text", {}).get(PLOT_MARK_KEY) == PLOT_MARK:
                return True
    except (OSError, UnidentifiedImageError):
        return False
    return report_json.is_file() and report_json.stat().st_size > 0 and evaluate_wrote(report_json, "--report")


def evaluate_wrote(path: Path, option: str) -> bool:
    """Whether ``path``, an output of ``option``, is empty or was written by `evaluate`: rewriting it loses nothing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            first = file.readline()
            if not first:
                return True
            if option == "--predictions":
                return next(csv.reader([first]), []) == list(PREDICTIONS_HEADER)
            if option == "--markdown":
                return first.startswith(MARKDOWN_START)
            report = json.loads(first + file.read())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(report, dict) and all(key in report for key in REPORT_KEYS)


def check_outputs(model_path: Path, outputs: dict[str, Path]) -> None:
    """Refuse, before anything is scored, an output that would overwrite what `evaluate` did not write.

    ``outputs`` maps each option (``--predictions``, ``--report``, ``--markdown``) to its path;
    the report's plots (`plot_paths`) are checked with it. A training run's ``report.json``
    (which ``agecheck export`` reads for the card), the model, a folder or one output named
    twice are refused; a file an earlier evaluation wrote is rewritten, as a rerun expects.

    Raises:
        AgecheckError: naming the option, its path and why, with what was expected.
    """
    report_json = outputs["--report"]
    plots = {f"--report's {what} plot": path for what, path in plot_paths(report_json).items()}
    seen: dict[Path, str] = {}
    for option, path in (outputs | plots).items():
        where = path.resolve()
        if path.is_dir():
            raise AgecheckError(f"{option} {path} is a folder; expected a file name")
        if where == model_path.resolve():
            raise AgecheckError(f"{option} {path} is the model being scored; expected another file name")
        if where in seen:
            raise AgecheckError(f"{option} {path} is also {seen[where]}; expected a file name of its own")
        seen[where] = option
        if not path.exists():
            continue
        if option in plots:
            if not _plot_wrote(path, report_json):
                raise AgecheckError(f"{option} {path} holds a file agecheck evaluate did not write and would be "
                                    f"lost; expected another --report name, or that plot moved away")
        elif not evaluate_wrote(path, option):
            raise AgecheckError(f"{option} {path} holds a file agecheck evaluate did not write (a training "
                                f"run's report, for one) and would be lost; expected a new file name or an "
                                f"earlier evaluation's")


def evaluate(
    model_path: str | Path,
    data_dirs: list[str | Path],
    predictions_csv: str | Path,
    report_json: str | Path,
    split: str = "all",
    detect_faces: bool = False,
    threshold_age: float = 18,
    margin_years: float | None = None,
    degradation: str | None = None,
    seed: int = 0,
    max_images: int = 0,
    markdown_path: str | Path | None = None,
) -> dict:
    """Score a model on labelled photos and write predictions, report, plots (and its tables as Markdown).

    Crops are made as in training (detect, crop by the card's settings; photos with no
    face are used whole, as for already-cropped datasets). With ``detect_faces`` (uncropped
    photos) a photo with no face is listed and left out instead. With ``degradation`` each
    photo is corrupted first (`training.degrade`, seeded by ``seed`` and the file name).
    Several ``data_dirs`` are scored together and each source apart.

    Raises:
        AgecheckError: for a bad model, data folder or split, or an output that would overwrite
            a file `evaluate` did not write (`check_outputs`).
    """
    if split not in SPLITS:
        raise AgecheckError(f"--split {split!r}: expected one of {SPLITS}")
    if max_images < 0:
        raise AgecheckError(f"--max-images {max_images}: expected 0 (all) or more")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise AgecheckError(f"model {model_path} does not exist")
    outputs = {"--predictions": Path(predictions_csv), "--report": Path(report_json)}
    if markdown_path is not None:
        outputs["--markdown"] = Path(markdown_path)
    check_outputs(model_path, outputs)
    predict, settings, card_margin = predictor(model_path)
    margin = margin_years if margin_years is not None else card_margin
    if margin is None:
        raise AgecheckError(f"{model_path} records no MAE to use as the margin: pass --margin")
    images = select(load_sources(list(data_dirs), settings.val_fraction, settings.seed), split, max_images, seed)
    if len(images) == 0:
        raise AgecheckError(f"no {split} images in {', '.join(map(str, data_dirs))}")
    # the card's test-time views, averaged as the app does (`crop_face_views`)
    by_view = view_crops(images, settings, None, (degradation, seed) if degradation else None, detect_faces)
    crops = by_view[0]
    if len(crops.images) == 0:
        raise AgecheckError(f"no image in {', '.join(map(str, data_dirs))} could be scored "
                            f"({len(crops.unreadable)} unreadable, {len(crops.no_face)} without a face)")
    predicted = mean_over_views(predict, by_view)
    true_years = images.age_years[crops.index].astype(np.float64)
    sources = images.source[crops.index]

    predictions_csv, report_json = outputs["--predictions"], outputs["--report"]
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(predictions_csv, images.source[crops.index], [images.paths[i].name for i in crops.index],
                      images.age_years[crops.index], predicted)

    margins = calibrate_margins(true_years, predicted, threshold_age)
    report = {
        "model": str(model_path),
        "data": ", ".join(map(str, data_dirs)),
        "split": split,
        "degradation": degradation or "none",
        "test_time_margins": [view.margin for view in settings.crop.views],
        "seed": seed,
        "images": len(images),
        "scored": int(len(predicted)),
        "unreadable": len(crops.unreadable),
        "no_face": len(crops.no_face),
        "no_face_files": [Path(p).name for p in crops.no_face] if detect_faces else [],
        "no_face_handling": "left out" if detect_faces else "used whole, as already-cropped photos",
        **figures(true_years, predicted, threshold_age, margin),
        "calibration": {
            q: {"margin_years": m, **policy_shares(true_years, predicted, threshold_age, m)}
            for q, m in margins.items() if m is not None
        },
    }
    if len(images.sources) > 1:
        report["by_source"] = figures_by_source(true_years, predicted, sources, threshold_age, margin)
    gender, race = images.gender[crops.index], images.race[crops.index]
    if (gender >= 0).any():
        report["by_gender"] = group_figures(true_years, predicted, gender, GENDERS, threshold_age, margin)
    if (race >= 0).any():
        report["by_race"] = group_figures(true_years, predicted, race, RACES, threshold_age, margin)
    report_json.write_text(json.dumps(report, indent=2) + "\n")
    plots = plot_paths(report_json)
    plot_error_by_age(true_years, predicted, plots["error by age"], model_path.name)
    marked = {"card MAE": margin} | {f"{float(q):.1%} minors": m for q, m in margins.items() if m is not None}
    plot_tradeoff(true_years, predicted, threshold_age, marked, plots["trade-off"])
    if markdown_path is not None:
        outputs["--markdown"].write_text(markdown_report(report))
    return report


def summary_lines(report: dict) -> list[str]:
    """A readable summary of an evaluation report."""
    e, p = report["errors"], report["policy"]
    k = report["key"]
    lines = [
        f"scored {report['scored']} of {report['images']} images ({report['unreadable']} unreadable, "
        f"{report['no_face']} without a face: {report['no_face_handling']}); "
        f"degradation: {report.get('degradation', 'none')}"
        + (f"; test-time {_views(report)}" if _views(report) else ""),
        f"MAE {e['mae']:.2f} years, RMSE {e['rmse']:.2f}, bias {e['bias']:+.2f}; "
        f"13-17 flagged when 10% of 25+ are: {pct_ci(k)} "
        f"(AUC 13-17 vs 25+ {cell(k['auc_13_17_vs_25_plus'], '.3f')})",
        "MAE by age band: " + ", ".join(
            f"{band} {v['mae']:.1f} (n={v['count']})" for band, v in e["bands"].items() if v["count"]
        ),
        f"ID check below {p['threshold_age']:g} + {p['margin_years']:.2f}: under-{p['threshold_age']:g}s flagged "
        f"{_pct(p['minors_flagged'])}, 13-17 {_pct(p['age_13_17_flagged'])}, 18-24 {_pct(p['age_18_24_flagged'])}, "
        f"25+ {_pct(p['age_25_plus_flagged'])}",
    ]
    for q, c in report["calibration"].items():
        lines.append(f"to flag {float(q):.1%} of minors: margin {c['margin_years']:.1f} years, "
                     f"25+ flagged {_pct(c['age_25_plus_flagged'])}")
    for name, f in report.get("by_source", {}).items():
        lines.append(f"{name}: {f['scored']} photos, MAE {f['errors']['mae']:.2f}, bias {f['errors']['bias']:+.2f}, "
                     f"13-17 flagged at 10% of 25+ {pct_ci(f['key'])}")
    return lines


def cell(x, fmt: str) -> str:
    """A Markdown table cell: ``x`` formatted with ``fmt``, or a dash where there is no figure."""
    return "–" if x is None else format(x, fmt)


def _pct(x) -> str:
    return cell(x, ".1%")


def pct_ci(k: dict) -> str:
    """The key figure with its bootstrap 95% interval: ``54.7% (95% CI 44.2–65.1%)``."""
    ci = k.get("age_13_17_flagged_ci95")
    if ci is None:
        return _pct(k["age_13_17_flagged"])
    return f"{_pct(k['age_13_17_flagged'])} (95% CI {ci[0]:.1%}–{ci[1]:.1%})"


def _key_sentence(k: dict) -> str:
    return (f"**Key figure**: {pct_ci(k)} of {k['age_13_17_count']} 13–17-year-olds are flagged "
            f"when the cut ({cell(k['cut_years'], '.1f')} years) flags 10% of {k['age_25_plus_count']} adults 25+; "
            f"AUC 13–17 vs 25+ {cell(k['auc_13_17_vs_25_plus'], '.3f')}.")


def _views(report: dict) -> str:
    """``"mean of 3 views, crop margins 0.1, 0.045, 0.16"`` where the card averages several framings; else ``""``."""
    margins = report.get("test_time_margins", [])
    if len(margins) < 2:
        return ""
    return f"mean of {len(margins)} views, crop margins {', '.join(f'{m:g}' for m in margins)}"


def _policy_row(label: str, p: dict) -> str:
    return (f"| {label} | {p['margin_years']:.2f} | {_pct(p['minors_flagged'])} | {_pct(p['age_13_17_flagged'])} | "
            f"{_pct(p['age_18_24_flagged'])} | {_pct(p['age_25_plus_flagged'])} |")


def markdown_report(report: dict) -> str:
    """The report's tables in Markdown, for docs (every figure comes from ``report``)."""
    e, p = report["errors"], report["policy"]
    lines = [
        f"{MARKDOWN_START}{Path(report['model']).name}` on `{report['data']}` (split: {report['split']}): "
        f"{report['scored']} of {report['images']} photos scored; {report['no_face']} without a detected face "
        f"({report['no_face_handling']}); degradation: {report.get('degradation', 'none')}."
        + (f" Each estimate is the {_views(report)} (the card's test-time views)." if _views(report) else ""),
        "",
        _key_sentence(report["key"]),
        "",
        "| age band | photos | MAE | RMSE | bias (pred − true) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| all | {e['count']} | {e['mae']:.2f} | {e['rmse']:.2f} | {e['bias']:+.2f} |",
    ]
    for band, v in e["bands"].items():
        if v["count"]:
            lines.append(f"| {band} | {v['count']} | {v['mae']:.2f} | {v['rmse']:.2f} | {v['bias']:+.2f} |")
    threshold = p["threshold_age"]
    lines += [
        "",
        f"ID check when the estimate < {threshold:g} + margin (share of each group asked for ID):",
        "",
        f"| margin | years | under {threshold:g} | 13–17 | 18–24 | 25+ |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        _policy_row("card MAE", p),
    ]
    for q, c in report["calibration"].items():
        lines.append(_policy_row(f"flags {float(q):.1%} of minors", c))
    if "by_source" in report:
        lines += [
            "",
            "By source (each source's own 10%-of-25+ cut for the key figure):",
            "",
            "| source | photos | MAE | bias | 13–17 MAE | 13–17 bias | 13–17 flagged at 10% of 25+ "
            "| AUC 13–17 vs 25+ |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, f in report["by_source"].items():
            e_s, teen, k = f["errors"], f["errors"]["bands"]["13-17"], f["key"]
            lines.append(f"| {name} | {e_s['count']} | {e_s['mae']:.2f} | {e_s['bias']:+.2f} "
                         f"| {cell(teen['mae'], '.2f')} "
                         f"| {cell(teen['bias'], '+.2f')} | {pct_ci(k)} "
                         f"| {cell(k['auc_13_17_vs_25_plus'], '.3f')} |")
    for key, title in (("by_gender", "gender"), ("by_race", "race group")):
        if key not in report:
            continue
        lines += [
            "",
            f"By {title}, at the card's margin ({p['margin_years']:.2f} years):",
            "",
            f"| {title} | photos | MAE | under {threshold:g} asked | 13–17 asked | 18–24 asked | 25+ asked |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, g in report[key].items():
            gp = g["policy"]
            lines.append(f"| {name} | {g['errors']['count']} | {g['errors']['mae']:.2f} | {_pct(gp['minors_flagged'])} "
                         f"| {_pct(gp['age_13_17_flagged'])} | {_pct(gp['age_18_24_flagged'])} "
                         f"| {_pct(gp['age_25_plus_flagged'])} |")
    return "\n".join(lines) + "\n"
