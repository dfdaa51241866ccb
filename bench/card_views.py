"""Gives a shipped model's card test-time views, measuring every int8 figure of the card again with them.

    python bench/card_views.py --view-margins 0.045 0.16 --data ../shared/datasets/utkface \\
        --data ../shared/datasets/appa-real --data ../shared/datasets/aaf [--model models/age_resnet50_int8.tflite]

`agecheck export --view-margins` measures a model it exports with its views; the shipped
model's float weights are gone, so its card gets them here. On the card's own validation
photos (its sources, split and seed), clean and under the camera mix, each face is cut at the
card's margin and at each of ``--view-margins`` and its estimates averaged, as the app will
(`edge_app.crop.crop_face_views`). The card's margin (``mae``), its clean figures, bands,
calibration and trade-off table are replaced by those of the averaged estimates
(`training.export.int8_figures`); the float figures, of one view, stay and are marked so;
``views_added`` keeps the card's test time, crop, date and headline errors from before. The
.tflite is not touched.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import run_bench  # noqa: E402
from edge_app.config import DEFAULT_AGE_MODEL  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.model_card import ModelCard, write_card  # noqa: E402
from training.data import load_sources, mean_over_views, select  # noqa: E402
from training.evaluate import predictor  # noqa: E402
from training.export import CARD_DEGRADATION, int8_figures, test_time_text, view_crops, with_views  # noqa: E402

REPLACED = ("test_time", "crop", "date", "mae", "rmse", "clean_mae", "clean_rmse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--view-margins", type=float, nargs="+", required=True,
                        help="crop margins cut besides the card's own, e.g. 0.045 0.16")
    parser.add_argument("--data", action="append", required=True, help="the card's sources (repeat)")
    parser.add_argument("--model", default=str(DEFAULT_AGE_MODEL), help="the .tflite whose card gets the views")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    model = Path(args.model)
    card = ModelCard.load(model)
    if card.crop.view_margins:
        raise AgecheckError(f"{card.path} already names views {list(card.crop.view_margins)}: "
                            "this measures a card of one view")
    predict, settings, _ = predictor(model)
    settings = with_views(settings, tuple(args.view_margins))
    images = select(load_sources(list(args.data), settings.val_fraction, settings.seed), "val", 0, settings.seed)
    expected = {source["name"] for source in card.data.get("training_data", {}).get("sources", [])}
    if expected and set(images.sources) != expected:
        raise AgecheckError(f"--data holds sources {sorted(images.sources)}; the card was measured on "
                            f"{sorted(expected)}")
    scored = {}
    for name, degradation in (("clean", None), ("camera", (CARD_DEGRADATION, settings.seed))):
        views = view_crops(images, settings, None, degradation)
        index = views[0].index
        scored[name] = (images.age_years[index].astype(np.float64), mean_over_views(predict, views),
                        images.source[index])
    threshold_age = float(card.data.get("calibration", {}).get("threshold_age", 18.0))
    measured = int8_figures(*scored["clean"], *scored["camera"], threshold_age)
    data = {key: value for key, value in card.data.items() if key not in ("card_version", "tflite_sha256")}
    before = {key: data.get(key) for key in REPLACED}
    data.update(measured)
    data.update(
        test_time=test_time_text(settings.crop, mirror="mirror" in str(before["test_time"])),
        crop=settings.crop.to_dict(),
        date=datetime.date.today().isoformat(),
        float_figures="of one view (the card's margin), measured before the views were added",
        views_added={"how": "python bench/card_views.py --view-margins "
                            + " ".join(f"{m:g}" for m in args.view_margins)
                            + "".join(f" --data {Path(d).name}" for d in args.data),
                     "photos": len(scored["clean"][0]), "before": before},
    )
    write_card(model, data)
    written = ModelCard.load(model)
    print(f"{written.path}: test time {data['test_time']}")
    print(f"margin (MAE under the camera mix) {before['mae']:.3f} -> {written.mae_years:.3f} years; "
          f"clean MAE {before['clean_mae'] or float('nan'):.3f} -> {data['clean_mae']:.3f}; key figure under the "
          f"camera mix now {data['camera']['key']['age_13_17_flagged'] or float('nan'):.1%}")

if __name__ == "__main__":
    main()
