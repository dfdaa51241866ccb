"""`agecheck`: one command for every job. Bad input is one ``Error:`` line and a non-zero exit."""

from __future__ import annotations

import functools
import sys

import click

from edge_app.errors import AgecheckError


def user_errors(function):
    """Turn `AgecheckError` into click's one-line ``Error: ...`` and exit status 1."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except AgecheckError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), default="auto", show_default=True,
              help="auto: JSON lines under systemd, text otherwise.")
def main(verbose: bool, log_format: str) -> None:
    """agecheck: tell the cashier when a customer may be under the legal age."""
    from edge_app.logs import setup_logging

    setup_logging(verbose, log_format)


def _app_config(config_path, model, threshold_age, margin_years, display, source=None, loop=None):
    """The config file's settings with the command line's flags on top."""
    from edge_app.config import load_config

    config = load_config(config_path)
    config = config.override("source", source=source, loop=loop)
    config = config.override("age_model", model_path=model)
    config = config.override("policy", threshold_age=threshold_age, margin_years=margin_years)
    return config.override("output", display=display)


def _common_options(function):
    options = [
        click.option("--config", "config_path", type=click.Path(), help="TOML config file (flags win)."),
        click.option("--model", type=click.Path(), help="Age model .tflite (its .json card beside it)."),
        click.option("--threshold-age", type=float, help="Legal age for alcohol (default 18)."),
        click.option("--margin-years", type=float, help="Margin over the threshold (default: the card's MAE)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command()
@click.option("--source", help="Camera index (0), device (/dev/video2), video file or stream URL.")
@click.option("--loop/--no-loop", default=None, help="Restart a file source at its end.")
@click.option("--display/--no-display", default=True, show_default=True, help="Show the cashier's window.")
@click.option("--events", type=click.Path(), help="Events as JSON lines, rotated by size.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics on 127.0.0.1.")
@_common_options
@user_errors
def run(source, loop, display, events, metrics_port, config_path, model, threshold_age, margin_years):
    """Watch a live camera (or a looping file) and alert the cashier.

    SIGTERM or Ctrl-C stops it cleanly; SIGHUP re-reads --config (a bad file is refused and
    the running config kept). Under systemd it reports readiness and feeds the watchdog.
    """
    from edge_app.service import run_service

    run_service(
        lambda: _app_config(config_path, model, threshold_age, margin_years, display, source, loop),
        events_path=events,
        metrics_port=metrics_port,
    )


@main.command()
@click.argument("video", required=False, type=click.Path())
@click.option("--output", type=click.Path(), help="Annotated video (.mp4 or .avi).")
@click.option("--events", type=click.Path(), help="Events as JSON lines.")
@click.option("--summary", type=click.Path(), help="Run summary as JSON.")
@click.option("--display/--no-display", default=False, show_default=True, help="Show frames while replaying.")
@_common_options
@user_errors
def replay(video, output, events, summary, display, config_path, model, threshold_age, margin_years):
    """Replay a recorded video as fast as the machine allows.

    With no VIDEO, replays the bundled sample clip and writes all outputs to a new folder.
    """
    import time
    from pathlib import Path

    import cv2

    from edge_app.config import DEFAULT_SAMPLE_CLIP
    from edge_app.pipeline import Hooks, Outputs
    from edge_app.pipeline import run as run_pipeline

    folder = None
    if video is None:
        video = str(DEFAULT_SAMPLE_CLIP)
        if not (output or events or summary):
            folder = Path(f"agecheck-output-{time.strftime('%Y%m%d-%H%M%S')}")
            output, events, summary = folder / "annotated.mp4", folder / "events.jsonl", folder / "summary.json"
    config = _app_config(config_path, model, threshold_age, margin_years, display, source=str(video), loop=False)
    outputs = Outputs(*(Path(p) if p else None for p in (output, events, summary)))
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    progress = _LazyProgress(total)
    try:
        result = run_pipeline(config, outputs, hooks=Hooks(on_frame=progress.update))
    finally:
        progress.close()
    click.echo(
        f"{result.frames} frames, {result.faces} faces, {result.tracks} tracks, {result.alerts} alerts; "
        f"{result.processing_fps:.1f} fps processing ({result.video_fps:.1f} fps video)"
    )
    if folder is not None:
        click.echo(f"outputs in {folder}/ (annotated.mp4, events.jsonl, summary.json)")


@main.command()
@_common_options
@user_errors
def card(config_path, model, threshold_age, margin_years):
    """What the age model's card says, and whom each margin asks for ID.

    The trade-off table is measured on the card's validation photos under the camera mix,
    as its margin is: pick [policy] margin_years from it. The gate in force (the config's and
    the flags' threshold and margin) is in bold.
    """
    from pathlib import Path

    from edge_app.model_card import ModelCard, tradeoff_lines

    config = _app_config(config_path, model, threshold_age, margin_years, display=False)
    if not Path(config.age_model.model_path).is_file():
        raise AgecheckError(f"age model {config.age_model.model_path} does not exist; expected a .tflite "
                            "with its .json card beside it")
    card = ModelCard.load(config.age_model.model_path)
    data, policy = card.data, config.policy
    margin = card.mae_years if policy.margin_years is None else policy.margin_years
    key = data.get("camera", {}).get("key", {}).get("age_13_17_flagged")
    click.echo(f"{card.path.with_suffix('.tflite').name}: {data['architecture']}, {data['input_size']} px input, "
               f"card of {data.get('date', '?')}")
    if "test_time" in data:
        click.echo(f"  each estimate: {data['test_time']}")
    for source in data.get("training_data", {}).get("sources", []):
        click.echo(f"  trained on {source.get('name', '?')}: {source.get('licence', 'licence not stated')}")
    click.echo(f"MAE {card.mae_years:.2f} years on its validation photos under the camera mix (clean: "
               f"{data.get('clean_mae', float('nan')):.2f}); the default margin is that MAE")
    if key is not None:
        click.echo(f"key figure under the camera mix: {key:.0%} of 13-17s flagged where 10% of adults 25+ are")
    click.echo(f"gate in force: ask for ID when the estimate is below {policy.threshold_age:g} + {margin:.2f} = "
               f"{policy.threshold_age + margin:.2f}")
    click.echo("\nwho was asked for ID, by limit (validation photos under the camera mix, one photo per person):")
    for line in tradeoff_lines(card, policy.threshold_age, margin):
        click.echo(line)


@main.command()
@click.argument("events", nargs=-1, required=True, type=click.Path())
@_common_options
@user_errors
def margins(events, config_path, model, threshold_age, margin_years):
    """Whom each margin would have asked at your till, read back from its EVENTS files.

    Beside the card's per-photo shares asked (under the legal age in force, 13-17, 18-24, 25+:
    what a margin protects), the share of the till's own customers each margin would have
    asked (what it costs there).
    """
    from pathlib import Path

    from edge_app.margins import margin_lines, read_till_events
    from edge_app.model_card import ModelCard

    config = _app_config(config_path, model, threshold_age, margin_years, display=False)
    customers = read_till_events(events)
    card = ModelCard.load(config.age_model.model_path) if Path(config.age_model.model_path).is_file() else None
    policy = config.policy
    margin = policy.margin_years if policy.margin_years is not None else (card.mae_years if card else None)
    if margin is None:
        raise AgecheckError(f"age model {config.age_model.model_path} does not exist and no margin was given; "
                            "expected --model with its card, or --margin-years")
    click.echo(customers.summary())
    click.echo(f"gate in force: ask for ID when the estimate is below {policy.threshold_age:g} + {margin:.2f} = "
               f"{policy.threshold_age + margin:.2f}")
    if card is not None and card.tradeoff:
        click.echo("(card): the card's validation photos under the camera mix, one photo per person")
    click.echo("")
    for line in margin_lines(customers, policy.threshold_age, margin, card):
        click.echo(line)


class _LazyProgress:
    """A progress bar that appears with the first frame, so start-up errors print alone."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.bar = max(total, 1), 0, None

    def update(self, summary, stats=None) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=self.total, label="replaying", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(summary.frames - self.done)
        self.done = summary.frames

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _register_training() -> None:
    from training.cli import register

    register(main)


_register_training()
