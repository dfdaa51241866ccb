"""How a customer's estimates should add up at the till: every ``[tracker]`` schedule read from one replay.

    python bench/aggregation.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf --per-source 300 --all-aged 13 18 [--out docs/model/aggregation]

The app flags a customer once the median of their last ``window`` estimates falls below the
limit (threshold + margin); it reports a median from the ``min_estimates``-th estimate on
(taken on consecutive frames), then re-estimates once per ``estimate_interval_ms``. This
bench builds `bench/per_customer.py`'s till (the same arguments give the same clip) and
replays it through the app in-process with every face estimated on every frame the quality
gate lets through (`Hooks.on_estimates` records each estimate). For each schedule it then
reads what the tracker and policy would have seen: the estimates the schedule takes, their
running median and its lowest value (a flag is sticky, so that is the limit above which the
customer is asked), ``uncertain`` when the middle half of the window spreads more than
``[policy] max_spread_years`` (asked at any limit), ``face_unclear`` when no median came
within ``unclear_after_s`` of the track's start. Per schedule: the till's key figure (13-17s
asked where 10% of adults 25+ are; `bench/per_customer.till_key`'s reading), paired with the
app's defaults on the same customers (bootstrap 95% interval), on all customers and on each
half of them (by the CRC-32 of the photo's name), so that a schedule picked on one half is
scored on the other; and how soon the first median came. The clip stays in a temporary folder.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.per_customer import detector_settings, till_parser, track_owners, write_customers, write_till  # noqa: E402
from bench.report import public_settings, run_bench, write_report  # noqa: E402
from edge_app.config import PolicyConfig, TrackerConfig, load_config  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.margins import asked_below  # noqa: E402
from edge_app.model_card import ModelCard  # noqa: E402
from edge_app.pipeline import Hooks, run  # noqa: E402
from training.metrics import paired_change, teens_and_adults  # noqa: E402

MIN_ESTIMATES = (1, 3, 5, 7)
INTERVALS_MS = (0, 100, 250, 500)
WINDOWS = (5, 15, 45)
FAR_YEARS = 1000.0
"""Stands for a limit of +-inf (asked at none, or at every limit) where a bootstrap needs finite numbers."""


@dataclass(frozen=True)
class Reading:
    """What the tracker and policy make of one track's (or customer's) estimates under a schedule.

    Attributes:
        lowest_years: the lowest running median, None if none came.
        last_years: the last running median, None if none came.
        reason: ``uncertain`` or ``face_unclear`` for a fail-safe flag (asked at any limit), else None.
        first_ms: ms from the track's start to its first median, None if none came.
    """

    lowest_years: float | None
    last_years: float | None
    reason: str | None
    first_ms: float | None

    @property
    def asked_below(self) -> float:
        """The limit below which this customer is asked for ID (`edge_app.margins.asked_below`)."""
        return asked_below(self.reason, self.lowest_years)


def track_reading(times_ms: list[int], ages: list[float], start_ms: int, end_ms: int, schedule: dict,
                  policy: PolicyConfig) -> Reading:
    """A track's `Reading` under ``schedule`` (``min_estimates``, ``estimate_interval_ms``, ``window``).

    ``times_ms``/``ages``: every estimate of the track, in time order, as the tracker would
    have taken them had each face been due on every frame; ``start_ms``/``end_ms``: when the
    track began and was last in view. A flag is sticky, so a spread past
    ``policy.max_spread_years`` asks the customer at any limit (by age where the median is
    below it, else as ``uncertain``), as does a track without a median by ``unclear_after_s``.
    """
    taken: deque[float] = deque(maxlen=schedule["window"])
    last_ms, count, lowest, median, first_ms = None, 0, None, None, None
    unclear_ms = policy.unclear_after_s * 1000
    for t, age in zip(times_ms, ages, strict=True):
        if not (last_ms is None or count < schedule["min_estimates"]
                or t - last_ms >= schedule["estimate_interval_ms"]):
            continue
        taken.append(age)
        last_ms, count = t, count + 1
        if count < schedule["min_estimates"]:
            continue
        q1, median, q3 = (float(x) for x in np.percentile(taken, [25, 50, 75]))
        if first_ms is None:
            first_ms = t - start_ms
            if unclear_ms and first_ms >= unclear_ms:
                return Reading(None, None, "face_unclear", first_ms)  # flagged before its first median
        lowest = median if lowest is None else min(lowest, median)
        if policy.max_spread_years and q3 - q1 > policy.max_spread_years:
            return Reading(lowest, median, "uncertain", first_ms)
    if first_ms is None and unclear_ms and end_ms - start_ms >= unclear_ms:
        return Reading(None, None, "face_unclear", None)
    return Reading(lowest, median, None, first_ms)


def customer_reading(readings: list[Reading]) -> Reading:
    """One customer's tracks as one: the lowest median of all, a fail-safe flag of any, the first median's time."""
    medians = [r.lowest_years for r in readings if r.lowest_years is not None]
    lasts = [r.last_years for r in readings if r.last_years is not None]
    firsts = [r.first_ms for r in readings if r.first_ms is not None]
    reason = next((r.reason for r in readings if r.reason), None)
    return Reading(min(medians) if medians else None, lasts[-1] if lasts else None, reason,
                   min(firsts) if firsts else None)


def half_of(file_name: str) -> int:
    """0 or 1: which half of the customers a photo belongs to, by the CRC-32 of its name."""
    return zlib.crc32(file_name.encode()) % 2


def schedules() -> list[dict]:
    """Every schedule the bench reads, the app's defaults first."""
    default = TrackerConfig()
    own = {"min_estimates": default.min_estimates, "estimate_interval_ms": default.estimate_interval_ms,
           "window": default.window}
    grid = [{"min_estimates": m, "estimate_interval_ms": i, "window": w}
            for m, i, w in itertools.product(MIN_ESTIMATES, INTERVALS_MS, WINDOWS) if m <= w]
    return [own, *(s for s in grid if s != own)]


def key_on(true: np.ndarray, below: np.ndarray, default_below: np.ndarray, seed: int) -> dict:
    """The key figure of ``below`` and its paired change from ``default_below`` (infinite limits made far)."""
    change = paired_change(true, np.clip(default_below, -FAR_YEARS, FAR_YEARS), np.clip(below, -FAR_YEARS, FAR_YEARS),
                           seed=seed)
    return {"key": change["key_after"], "change": change["key_change"],
            "change_ci95": change["key_change_ci95"]}


def name(schedule: dict) -> str:
    return f"{schedule['min_estimates']} / {schedule['estimate_interval_ms']} ms / {schedule['window']}"


def share(value: float | None, sign: str = "") -> str:
    """A share as a percentage, ``-`` where there was none to take (no 13-17s or no adults 25+)."""
    return "-" if value is None else f"{value:{sign}.1%}"


def ranked(value: float | None) -> float:
    return -1.0 if value is None else value


class RecordedEvents:
    """An event sink that keeps the replay's records (`edge_app.alerts.EventSink`)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def send(self, record: dict) -> None:  # noqa: D102
        self.records.append(record)


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: the till, its replay, each schedule's reading and the tables."""
    if args.customers and Path(args.customers).exists() and not Path(args.customers).is_dir():
        raise AgecheckError(f"--customers {args.customers} is a file; expected a folder for one CSV per schedule")
    card = ModelCard.load(args.model)
    estimates: dict[int, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))

    def record(track_ids: np.ndarray, ages: np.ndarray, timestamp_ms: int) -> None:
        for track_id, age in zip(track_ids.tolist(), np.asarray(ages).tolist(), strict=True):
            estimates[track_id][0].append(timestamp_ms)
            estimates[track_id][1].append(age)

    events = RecordedEvents()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "till.avi"
        customers, _ = write_till(args, card, clip)
        config = load_config(None).override("detector", **detector_settings(args))
        config = config.override("source", source=str(clip), loop=False).override("age_model", model_path=args.model)
        # every due face every frame: each schedule below takes its own estimates from these
        config = config.override("tracker", estimate_interval_ms=0, min_estimates=1, window=1)
        config = config.override("output", display=False)
        replayed = run(config, sinks=[events], hooks=Hooks(on_estimates=record))
    owner = track_owners(events.records, customers)
    starts = {e["track_id"]: round(e["video_time_s"] * 1000) for e in events.records if e["type"] == "track_start"}
    ends = {e["track_id"]: round(e["video_time_s"] * 1000) - config.tracker.max_missing_ms
            for e in events.records if e["type"] == "track_end"}
    policy = config.policy
    true = np.array([c["age"] for c in customers], np.float64)
    halves = np.array([half_of(c["file_name"]) for c in customers])
    tracks_of: dict[int, list[int]] = defaultdict(list)
    for track_id in sorted(owner):
        tracks_of[owner[track_id]].append(track_id)
    readings = []
    for schedule in schedules():
        read = [customer_reading([track_reading(*estimates.get(i, ([], [])), starts[i], ends.get(i, starts[i]),
                                                schedule, policy) for i in tracks_of.get(k, [])])
                for k in range(len(customers))]
        firsts = [r.first_ms for r in read if r.first_ms is not None]
        readings.append({"schedule": schedule, "customers": read,
                         "below": np.array([r.asked_below for r in read], np.float64),
                         "first_median_ms": float(np.median(firsts)) if firsts else None})
    limit_years = PolicyConfig().threshold_age + card.mae_years  # the app's gate at the card's margin
    if args.customers:  # one file per schedule, in bench/per_customer.py's format
        for reading in readings:
            s = reading["schedule"]
            asked = (reading["below"] < limit_years).tolist()
            write_customers(Path(args.customers) / f"customers_{s['min_estimates']}_{s['estimate_interval_ms']}ms_"
                                                   f"{s['window']}.csv", [
                {**c, "estimate": r.last_years, "seen": bool(tracks_of.get(k)), "lowest": r.lowest_years,
                 "flagged": flagged, "reason": r.reason or ("age" if flagged else None)}
                for k, (c, r, flagged) in enumerate(zip(customers, reading["customers"], asked, strict=True))])
    default_below = readings[0]["below"]
    teens, adults = teens_and_adults(true)
    rows = []
    for reading in readings:
        below = reading["below"]
        row = {**reading["schedule"], "first_median_ms": reading["first_median_ms"],
               "all": key_on(true, below, default_below, args.seed),
               "halves": [key_on(true[halves == h], below[halves == h], default_below[halves == h], args.seed)
                          for h in (0, 1)],
               "at_card_margin": {"age_13_17_asked": float((below[teens] < limit_years).mean()),
                                  "age_25_plus_asked": float((below[adults] < limit_years).mean())}}
        rows.append(row)
    best = [max(rows, key=lambda r, h=h: ranked(r["halves"][h]["key"])) for h in (0, 1)]
    lines = [f"{len(customers)} customers (`bench/per_customer.py`'s till: {args.per_source} validation photos per "
             f"source{' and every other aged {:g} to under {:g}'.format(*args.all_aged) if args.all_aged else ''}, "
             f"`--degrade {args.degrade}`, "
             f"seed {args.seed}), "
             f"model `{Path(args.model).name}`; {replayed.age_estimates} estimates recorded over "
             f"{replayed.frames} frames. Schedule: min_estimates / estimate_interval_ms / window; the app's defaults "
             "first. Key figure: 13-17s asked where 10% of adults 25+ are, read from each customer's lowest median; "
             "change paired with the defaults on the same customers (95% interval).", "",
             f"| schedule | first median after (ms, median) | key figure | change | half A | half B | "
             f"13-17 / 25+ asked at 18 + {card.mae_years:.2f} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    shown = [rows[0], *sorted(rows[1:], key=lambda r: -ranked(r["all"]["key"]))]
    for row in shown:
        ci = row["all"]["change_ci95"] or (None, None)
        first = "-" if row["first_median_ms"] is None else f"{row['first_median_ms']:.0f}"
        lines.append(
            f"| {name(row)} | {first} | {share(row['all']['key'])} | {share(row['all']['change'], '+')} "
            f"({share(ci[0], '+')} to {share(ci[1], '+')}) | {share(row['halves'][0]['key'])} | "
            f"{share(row['halves'][1]['key'])} | {row['at_card_margin']['age_13_17_asked']:.0%} / "
            f"{row['at_card_margin']['age_25_plus_asked']:.0%} |")
    lines += ["", "Picked on one half, scored on the other (the defaults there: "
              f"{share(rows[0]['halves'][1]['key'])} on half B, {share(rows[0]['halves'][0]['key'])} on half A):",
              f"- best on half A: {name(best[0])}, on half B {share(best[0]['halves'][1]['key'])}",
              f"- best on half B: {name(best[1])}, on half A {share(best[1]['halves'][0]['key'])}"]
    print("\n".join(lines))
    settings = public_settings(args, "data", "model", "customers", "out")
    write_report(args.out, lines, {"rows": rows, "settings": settings})


def main() -> None:
    parser = till_parser(__doc__)
    parser.add_argument("--customers", default=None,
                        help="a folder for each schedule's customers (CSV, bench/per_customer.py's format: "
                             "bench/compare_models.py pairs two); they name dataset files: keep it outside the project")
    args = parser.parse_args()
    run_bench(measure, args)


if __name__ == "__main__":
    main()
