"""Training commands for the `agecheck` group. TensorFlow is imported only when they run."""

from __future__ import annotations

import os

import click

from edge_app.crop import CropSettings
from edge_app.errors import AgecheckError
from training.degrade import DEGRADATIONS  # NumPy and OpenCV only

DEGRADATION_NAMES = tuple(DEGRADATIONS)


def _need_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise AgecheckError(
            "this command needs TensorFlow: pip install 'agecheck[train]'"
        ) from None


def _skipped(sources: dict) -> str:
    """What cropping left out, over every source of a pack's ``meta["sources"]``."""
    return (f"{sum(s['unreadable'] for s in sources.values())} unreadable images skipped, "
            f"{sum(s['no_face_used_whole'] for s in sources.values())} without a detected face used whole")


def register(group: click.Group) -> None:
    """Add ``train``, ``export``, ``evaluate`` and ``eda`` to ``group``."""
    from edge_app.cli import user_errors

    @group.command()
    @click.option("--data", "data_dirs", required=True, multiple=True, type=click.Path(),
                  help="Labelled photos; repeat for several sources (each keeps its own validation part).")
    @click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder.")
    @click.option("--weights", default="none", show_default=True,
                  help="none (from scratch), imagenet or a ResNet50 notop weights file.")
    @click.option("--init-model", default="", type=click.Path(),
                  help="Start from this regressor (an earlier run's model.keras, or an exported .tflite: "
                       "its int8 weights dequantised) instead of --weights: fine-tune it, at its own input "
                       "side or another --image-size (the weights carry over, but read far worse at a side they "
                       "were not trained at: docs/MODEL.md).")
    @click.option("--image-size", default=64, show_default=True, type=int)
    @click.option("--epochs", default=40, show_default=True, type=int)
    @click.option("--batch-size", default=64, show_default=True, type=int)
    @click.option("--learning-rate", default=1e-3, show_default=True, type=float)
    @click.option("--warmup-epochs", default=1.0, show_default=True, type=float,
                  help="Linear warm-up, then cosine decay; 0 keeps the rate constant.")
    @click.option("--weight-decay", default=0.0, show_default=True, type=float,
                  help="AdamW: shrink the kernels by rate x this per step, apart from the gradient; 0: Adam.")
    @click.option("--val-fraction", default=0.15, show_default=True, type=float,
                  help="Used for each source whose layout has no split of its own.")
    @click.option("--seed", default=42, show_default=True, type=int)
    @click.option("--precision", default="auto", show_default=True,
                  type=click.Choice(["auto", "bfloat16", "float32"]))
    @click.option("--crop-margin", default=CropSettings().margin, show_default=True, type=float)
    @click.option("--align/--no-align", default=True, show_default=True, help="Level the eyes in each crop.")
    @click.option("--augment/--no-augment", default=True, show_default=True,
                  help="Camera-like corruption on the fly (training/augment.py).")
    @click.option("--augment-strength", default=1.0, show_default=True, type=float)
    @click.option("--glasses-share", default=0.25, show_default=True, type=float,
                  help="Share of training crops given synthetic glasses (with --augment); 0: none.")
    @click.option("--mask-share", default=0.0, show_default=True, type=float,
                  help="Share of training crops given a synthetic face mask (with --augment); 0: none.")
    @click.option("--context", default=1.25, show_default=True, type=float,
                  help="Stored crops are this much wider than the model's framing.")
    @click.option("--lds-sigma-years", default=2.0, show_default=True, type=float,
                  help="Rare ages weigh more (label-distribution smoothing); 0 turns it off.")
    @click.option("--lds-power", default=0.5, show_default=True, type=float,
                  help="An age weighs its smoothed density ** -power: 0.5 inverse square root, 1 inverse.")
    @click.option("--source-weight-power", default=0.5, show_default=True, type=float,
                  help="Small sources weigh more per photo (count ** -power); 0 turns it off.")
    @click.option("--border-fill", default=0.0, show_default=True, type=float,
                  help="Share of crops whose framing, where it leaves the photo, is filled with varied "
                       "content instead of replicated edges (training/augment.py BorderFill); 0: never.")
    @click.option("--consistency", default=0.0, show_default=True, type=float,
                  help="Corrupt each crop twice; weight of the squared gap between the two estimates "
                       "in the loss (texture and light must not change the age); 0: one view.")
    @click.option("--rank-weight", default=0.0, show_default=True, type=float,
                  help="Weight in the loss of each batch's 13-17s read less than 7 years below its "
                       "adults 25+ (the key figure's ordering; training/model.py key_rank_term); 0: off.")
    @click.option("--max-images", default=0, show_default=True, type=int,
                  help="Use only the first N images of each source (smoke runs); 0 uses all.")
    @click.option("--resume", is_flag=True,
                  help="Continue an interrupted run in --out, with the settings it began with (--epochs may grow).")
    @click.option("--crops-only", is_flag=True,
                  help="Write the run's crop pack and config, then stop (fit elsewhere: python -m training.fit RUN).")
    @click.option("--time-budget-s", default=0.0, show_default=True, type=float,
                  help="Fit fewer epochs so that fitting ends within this many seconds; 0: all epochs.")
    @user_errors
    def train(data_dirs, out_dir, crop_margin, align, resume, crops_only, time_budget_s, **options):
        """Train the ResNet50 age regressor on labelled face photos."""
        _need_tensorflow()
        from training.train import TrainConfig
        from training.train import train as run_training

        try:
            crop = CropSettings(margin=crop_margin, align=align)
        except ValueError as error:
            raise AgecheckError(f"--crop-margin: {error}") from None
        config = TrainConfig(data_dirs=tuple(data_dirs), out_dir=out_dir, crop=crop, **options)
        report = run_training(config, resume=resume, crops_only=crops_only, time_budget_s=time_budget_s)
        if crops_only:
            click.echo(f"wrote {report['pack']} ({_skipped(report['sources'])}); "
                       f"fit it with: python -m training.fit {out_dir}")
            return
        click.echo(
            f"best validation MAE {report['best_val_mae']:.2f} years at epoch {report['best_epoch']} "
            f"(predicting the mean: {report['dummy_val_mae']:.2f}); by source: "
            + ", ".join(f"{name} {v['val_mae']:.2f}" for name, v in report["per_source"].items())
            + f"; {_skipped(report['pack']['sources'])}"
        )

    @group.command()
    @click.option("--model", "model_path", required=True, type=click.Path(), help="RUN/model.keras")
    @click.option("--data", "data_dirs", multiple=True, type=click.Path(),
                  help="The labelled photos the model was trained on (their validation parts are used); "
                       "default: the run's own.")
    @click.option("--out", "out_path", required=True, type=click.Path(), help="models/NAME.tflite")
    @click.option("--calibration-images", default=300, show_default=True, type=int)
    @click.option("--max-mae-increase", default=0.5, show_default=True, type=float,
                  help="Refuse the int8 model if its MAE is this much worse than the float model's.")
    @click.option("--threshold-age", default=18.0, show_default=True, type=float)
    @click.option("--data-licence", default=None, help="Licence text for the card (default: by source).")
    @click.option("--mirror/--no-mirror", default=True, show_default=True,
                  help="Ship the mean of each crop's and its mirror image's estimate (two passes per face).")
    @click.option("--view-margins", type=float, multiple=True,
                  help="Test-time views: further crop margins the app also cuts each face at, averaging the "
                       "estimates (repeat; e.g. --view-margins 0.045 --view-margins 0.16). The card's figures "
                       "are measured the same way.")
    @user_errors
    def export(model_path, data_dirs, out_path, **options):
        """Quantize a trained model to int8 TFLite and write its model card."""
        _need_tensorflow()
        from training.export import export as run_export

        card = run_export(model_path, list(data_dirs) or None, out_path, **options)
        margins = card["calibration"]["margin_years_to_flag_share_of_minors"]
        key = card["camera"]["key"]["age_13_17_flagged"]
        click.echo(
            f"wrote {out_path}: int8 validation MAE {card['mae']:.2f} years under the camera mix "
            f"(clean {card['clean_mae']:.2f}, float clean {card['float_mae']:.2f}); 13-17 flagged at 10% of 25+: "
            + ("n/a" if key is None else f"{key:.1%}") + "; margins to flag 95/99/99.5% of minors: "
            + "/".join("n/a" if m is None else f"{m:.1f}" for m in margins.values())
        )

    @group.command()
    @click.option("--model", "model_path", required=True, type=click.Path(), help=".tflite or .keras")
    @click.option("--data", "data_dirs", required=True, multiple=True, type=click.Path(),
                  help="Labelled photos; repeat for several sources (figures per source, too).")
    @click.option("--split", default="all", show_default=True, type=click.Choice(["all", "train", "val"]),
                  help="val: the validation images the model card was measured on.")
    @click.option("--detect-faces", is_flag=True,
                  help="Uncropped photos: leave out (and list) photos with no detected face.")
    @click.option("--predictions", "predictions_csv", default="predictions.csv", show_default=True,
                  type=click.Path(),
                  help="One row per photo. An earlier evaluation's file is rewritten; any other file refused.")
    @click.option("--report", "report_json", default="report.json", show_default=True, type=click.Path(),
                  help="The figures as JSON, plots beside it (NAME.error_by_age.png, NAME.tradeoff.png). An "
                       "earlier evaluation's report and plots are rewritten; any other file refused (a training "
                       "run's report.json, for one).")
    @click.option("--threshold-age", default=18.0, show_default=True, type=float)
    @click.option("--margin", "margin_years", default=None, type=float,
                  help="Margin over the threshold (default: the card's MAE).")
    @click.option("--markdown", "markdown_path", default=None, type=click.Path(),
                  help="Also write the report's tables as Markdown (for docs).")
    @click.option("--degrade", "degradation", default=None,
                  help="Corrupt each photo before detection: " + ", ".join(DEGRADATION_NAMES) + ".")
    @click.option("--seed", default=0, show_default=True, type=int, help="Seeds --degrade and --max-images.")
    @click.option("--max-images", default=0, show_default=True, type=int,
                  help="Score at most N photos of each source (a seeded sample); 0: all.")
    @user_errors
    def evaluate(data_dirs, **options):
        """Measure a model's error and its ID-check policy on labelled photos."""
        if options["model_path"].endswith(".keras"):
            _need_tensorflow()
        from training.evaluate import evaluate as run_evaluate
        from training.evaluate import summary_lines

        if options["degradation"] and options["degradation"] not in DEGRADATION_NAMES:
            raise AgecheckError(f"--degrade {options['degradation']!r}: expected one of {', '.join(DEGRADATION_NAMES)}")
        report = run_evaluate(data_dirs=list(data_dirs), **options)
        for line in summary_lines(report):
            click.echo(line)

    @group.command()
    @click.argument("data_dir", type=click.Path())
    @click.option("--out", "out_dir", required=True, type=click.Path())
    @user_errors
    def eda(data_dir, out_dir):
        """Age histogram, sample grid and summary of a labelled dataset."""
        from training.eda import run_eda

        summary = run_eda(data_dir, out_dir)
        click.echo(
            f"{summary['count']} photos ({summary['layout']}), mean age {summary['mean_age_years']:.1f}, "
            f"median {summary['median_age_years']:.1f}; by band: "
            + ", ".join(f"{b} {n}" for b, n in summary["bands"].items())
        )
