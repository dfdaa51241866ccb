"""Which test-time views serve a model: every set of crop margins, chosen on half the photos and scored on the other.

    python bench/view_margins.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf --out docs/model/view_margins [--model M] [--margins 0 0.03 ...]

The app averages a face's estimates over the card's framing and its ``crop.view_margins``
(`edge_app.crop.crop_face_views`). Here the model's card photos (its sources, validation split
and seed; ``--split all`` for every photo), clean and under the camera mix seeded as the card's,
are each detected once and cut at the card's own margin and at every ``--margins``; each cut
is estimated once (the card's own view margins are always cut), and every set of the card's
framing plus up to ``--max-views`` − 1 others is averaged, as `bench/card_views.py
--view-margins` would give them to a card.

Sets are ranked by the key figure under the camera mix, the product's figure where a till
needs it. With hundreds of sets and a few hundred teenagers the best one on all photos is
partly luck, so the photos are also split in two halves by the parity of the CRC-32 of their
file names: the best set on each half is scored on the other. A set that wins only where it
was chosen has fitted noise; the card's own set is scored on both halves beside it.
"""

from __future__ import annotations

import itertools
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from training.data import load_sources, select  # noqa: E402
from training.evaluate import predictor  # noqa: E402
from training.export import CARD_DEGRADATION, view_crops, with_views  # noqa: E402
from training.metrics import key_figure  # noqa: E402

CONDITIONS = ("clean", CARD_DEGRADATION)
DEFAULT_MARGINS = (0.0, 0.03, 0.045, 0.07, 0.13, 0.16, 0.2, 0.25, 0.3)


def main() -> None:
    parser = photo_bench_parser(__doc__, per_source=0)
    parser.add_argument("--margins", type=float, nargs="+", default=list(DEFAULT_MARGINS),
                        help="crop margins to try beside the card's own")
    parser.add_argument("--max-views", type=int, default=5, help="most views in a set, the card's framing included")
    parser.add_argument("--split", choices=("val", "all"), default="val", help="the card's validation photos, or all")
    run_bench(measure, parser.parse_args())


def halves(file_names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks splitting photos by the parity of the CRC-32 of their names (stable across runs)."""
    odd = np.array([zlib.crc32(str(name).encode()) % 2 == 1 for name in file_names], bool)
    return ~odd, odd


def scores(true_years: np.ndarray, estimates: np.ndarray, parts: tuple[np.ndarray, np.ndarray]) -> dict:
    """MAE and key figure of one set's averaged estimates, on all photos and on each half."""
    def key(mask):
        return key_figure(true_years[mask], estimates[mask], ci95=False)["age_13_17_flagged"]

    return {"mae": float(np.abs(estimates - true_years).mean()), "key": key(np.ones(len(true_years), bool)),
            "key_half_a": key(parts[0]), "key_half_b": key(parts[1])}


def view_sets(count: int, max_views: int) -> list[tuple[int, ...]]:
    """Every set of cut indices holding cut 0 (the card's framing) and at most ``max_views`` cuts in all."""
    return [(0, *rest) for k in range(max_views) for rest in itertools.combinations(range(1, count), k)]


def measure(args) -> None:
    if args.max_views < 1:
        raise AgecheckError(f"--max-views {args.max_views}: expected 1 or more")
    model = Path(args.model)
    if not model.is_file():
        raise AgecheckError(f"--model {model}: no such file; expected a .tflite age model with its card")
    predict, settings, _ = predictor(model)
    card_crop, own = settings.crop, settings.crop.margin  # the card's crop, as the app reads it
    # the card's own views always among the cuts, so that its set is scored beside the others
    extra = sorted({round(m, 4) for m in (*args.margins, *card_crop.view_margins)} - {round(own, 4)})
    settings = with_views(settings, tuple(extra))
    margins = [own, *extra]
    images = select(load_sources(list(args.data), settings.val_fraction, settings.seed), args.split,
                    args.per_source, args.seed)
    if len(images) == 0:
        raise AgecheckError(f"no {args.split} photos in {', '.join(args.data)}")
    per_condition = {}
    for name in CONDITIONS:
        views = view_crops(images, settings, None, None if name == "clean" else (name, settings.seed))
        index = views[0].index
        per_condition[name] = (images.age_years[index].astype(np.float64),
                               np.stack([np.asarray(predict(view.images), np.float64) for view in views]),
                               halves(np.array([images.paths[i].name for i in index])))
    rows = []
    for chosen in view_sets(len(margins), args.max_views):
        row = {"margins": [margins[i] for i in chosen]}
        for name, (true_years, estimates, parts) in per_condition.items():
            row[name] = scores(true_years, estimates[list(chosen)].mean(axis=0), parts)
        rows.append(row)
    result = summary(rows, card_crop.views, per_condition)
    result["settings"] = public_settings(args, "data", "model")
    lines = markdown(result)
    write_report(args.out, lines, result)
    print("\n".join(lines))


def _rank(row: dict, key: str) -> float:
    value = row[CARD_DEGRADATION][key]
    return -1.0 if value is None else value


def summary(rows: list[dict], card_views, per_condition: dict) -> dict:
    """The rows worth a table: the card's set, one view, the best sets chosen each way, every single cut."""
    card_margins = sorted(round(view.margin, 4) for view in card_views)
    card = next((r for r in rows if sorted(round(m, 4) for m in r["margins"]) == card_margins), None)
    true_years, _, parts = per_condition[CARD_DEGRADATION]
    return {
        "photos": len(true_years),
        "halves": [int(part.sum()) for part in parts],
        "sets": len(rows),
        "card": card,
        "one_view": rows[0],
        "best_on_half_a": max(rows, key=lambda r: _rank(r, "key_half_a")),
        "best_on_half_b": max(rows, key=lambda r: _rank(r, "key_half_b")),
        "best_on_all": max(rows, key=lambda r: _rank(r, "key")),
        "singles": [r for r in rows if len(r["margins"]) == 2],
    }


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown(result: dict) -> list[str]:
    def line(label: str, row: dict | None) -> str:
        if row is None:
            return f"| {label} | (not among the sets tried) | | | | | | |"
        clean, camera = row["clean"], row[CARD_DEGRADATION]
        views = ", ".join(f"{m:g}" for m in row["margins"])
        return (f"| {label} | {views} | {clean['mae']:.2f} | {_pct(clean['key'])} | {camera['mae']:.2f} | "
                f"{_pct(camera['key'])} | {_pct(camera['key_half_a'])} | {_pct(camera['key_half_b'])} |")

    a, b = result["halves"]
    lines = [f"{result['photos']} photos ({a} in half A, {b} in half B), {result['sets']} sets of views, each "
             "the card's framing first; key figure: 13-17s flagged where 10% of adults 25+ are.", "",
             f"| set | crop margins | clean MAE | clean key | {CARD_DEGRADATION} MAE | {CARD_DEGRADATION} key "
             "| key, half A | key, half B |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
             line("the card's", result["card"]),
             line("one view", result["one_view"]),
             line("best on half A", result["best_on_half_a"]),
             line("best on half B", result["best_on_half_b"]),
             line("best on all photos", result["best_on_all"]),
             *(line("the framing and one more", row) for row in result["singles"])]
    card = result["card"]
    if card is not None:
        held_out = [(result["best_on_half_a"][CARD_DEGRADATION]["key_half_b"], card[CARD_DEGRADATION]["key_half_b"]),
                    (result["best_on_half_b"][CARD_DEGRADATION]["key_half_a"], card[CARD_DEGRADATION]["key_half_a"])]
        lines += ["", "Chosen on one half and scored on the other, the best set against the card's: "
                  + "; ".join(f"{_pct(best)} against {_pct(own)}" for best, own in held_out) + "."]
    return lines


if __name__ == "__main__":
    main()
