"""Training commands for the `agecheck` group. TensorFlow is imported only when they run."""

from __future__ import annotations

import os

import click

from edge_app.crop import CropSettings
from edge_app.errors import AgecheckError


def _need_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise AgecheckError(
            "this command needs TensorFlow: pip install 'agecheck[train]'"
        ) from None


def register(group: click.Group) -> None:
    """Add ``train``, ``export``, ``evaluate`` and ``eda`` to ``group``."""
    from edge_app.cli import user_errors

    @group.command()
    @click.option("--data", "data_dir", required=True, type=click.Path(), help="Labelled photos.")
    @click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder.")
    @click.option("--weights", default="imagenet", show_default=True,
                  help="imagenet, none (from scratch) or a ResNet50 notop weights file.")
    @click.option("--image-size", default=224, show_default=True, type=int)
    @click.option("--epochs", default=10, show_default=True, type=int)
    @click.option("--batch-size", default=32, show_default=True, type=int)
    @click.option("--learning-rate", default=1e-4, show_default=True, type=float)
    @click.option("--warmup-epochs", default=0.0, show_default=True, type=float,
                  help="Linear warm-up, then cosine decay; 0 keeps the rate constant.")
    @click.option("--val-fraction", default=0.2, show_default=True, type=float,
                  help="Used when the layout has no split of its own.")
    @click.option("--seed", default=42, show_default=True, type=int)
    @click.option("--precision", default="auto", show_default=True,
                  type=click.Choice(["auto", "bfloat16", "float32"]))
    @click.option("--crop-margin", default=CropSettings().margin, show_default=True, type=float)
    @click.option("--augment/--no-augment", default=True, show_default=True)
    @click.option("--max-images", default=0, show_default=True, type=int,
                  help="Use only the first N images (smoke runs); 0 uses all.")
    @click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
    @user_errors
    def train(data_dir, out_dir, crop_margin, resume, **options):
        """Train the ResNet50 age regressor on labelled face photos."""
        _need_tensorflow()
        from training.train import TrainConfig
        from training.train import train as run_training

        try:
            crop = CropSettings(margin=crop_margin)
        except ValueError as error:
            raise AgecheckError(f"--crop-margin: {error}") from None
        config = TrainConfig(data_dir=data_dir, out_dir=out_dir, crop=crop, **options)
        report = run_training(config, resume=resume)
        click.echo(
            f"best validation MAE {report['best_val_mae']:.2f} years at epoch {report['best_epoch']} "
            f"(predicting the mean: {report['dummy_val_mae']:.2f}); "
            f"{report['unreadable']} unreadable images skipped, "
            f"{report['no_face_used_whole']} without a detected face used whole"
        )

    @group.command()
    @click.option("--model", "model_path", required=True, type=click.Path(), help="RUN/model.keras")
    @click.option("--data", "data_dir", required=True, type=click.Path(),
                  help="The labelled photos the model was trained on (its validation split is used).")
    @click.option("--out", "out_path", required=True, type=click.Path(), help="models/NAME.tflite")
    @click.option("--calibration-images", default=300, show_default=True, type=int)
    @click.option("--max-mae-increase", default=0.5, show_default=True, type=float,
                  help="Refuse the int8 model if its MAE is this much worse than the float model's.")
    @click.option("--threshold-age", default=18.0, show_default=True, type=float)
    @click.option("--data-licence", default=None, help="Licence text for the card (default: by layout).")
    @user_errors
    def export(model_path, data_dir, out_path, **options):
        """Quantize a trained model to int8 TFLite and write its model card."""
        _need_tensorflow()
        from training.export import export as run_export

        card = run_export(model_path, data_dir, out_path, **options)
        margins = card["calibration"]["margin_years_to_flag_share_of_minors"]
        click.echo(
            f"wrote {out_path}: int8 validation MAE {card['mae']:.2f} years "
            f"(float {card['float_mae']:.2f}); margins to flag 95/99/99.5% of minors: "
            + "/".join("n/a" if m is None else f"{m:.1f}" for m in margins.values())
        )

    @group.command()
    @click.option("--model", "model_path", required=True, type=click.Path(), help=".tflite or .keras")
    @click.option("--data", "data_dir", required=True, type=click.Path())
    @click.option("--split", default="all", show_default=True, type=click.Choice(["all", "train", "val"]),
                  help="val: the validation images the model card was measured on.")
    @click.option("--detect-faces", is_flag=True,
                  help="Uncropped photos: leave out (and list) photos with no detected face.")
    @click.option("--predictions", "predictions_csv", default="predictions.csv", show_default=True,
                  type=click.Path())
    @click.option("--report", "report_json", default="report.json", show_default=True, type=click.Path())
    @click.option("--threshold-age", default=18.0, show_default=True, type=float)
    @click.option("--margin", "margin_years", default=None, type=float,
                  help="Margin over the threshold (default: the card's MAE).")
    @click.option("--markdown", "markdown_path", default=None, type=click.Path(),
                  help="Also write the report's tables as Markdown (for docs).")
    @user_errors
    def evaluate(markdown_path, **options):
        """Measure a model's error and its ID-check policy on labelled photos."""
        if options["model_path"].endswith(".keras"):
            _need_tensorflow()
        from pathlib import Path

        from training.evaluate import evaluate as run_evaluate
        from training.evaluate import markdown_report, summary_lines

        report = run_evaluate(**options)
        for line in summary_lines(report):
            click.echo(line)
        if markdown_path:
            Path(markdown_path).write_text(markdown_report(report))

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
