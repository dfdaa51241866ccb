"""Per-customer figures: validation photos as customers at a till, replayed through the real app.

    python bench/per_customer.py --data ../shared/datasets/utkface --data ../shared/datasets/appa-real \\
        --data ../shared/datasets/aaf [--per-source 100] [--degrade camera] [--detect-interval-ms MS] \\
        [--detector-side-px PX] [--detector-confidence C] [--sensor-noise SIGMA] [--margin-years M] \\
        [--out docs/per_customer] [--customers RUN/customers.csv] [--all-aged 13 18]

The model's figures elsewhere are per photo; the till decides per customer, from many
frames. No labelled till video exists here, so this builds one: each sampled validation
photo (corrupted by ``--degrade``, seeded) is one customer, shown in a 720p frame at a
till-like size, drifting and growing a little for ``--seconds`` (as someone stepping up to
the counter), then an empty gap so that they leave (the background, blotches of colour, is
one in which the app's detector finds no face). The clip is replayed by `agecheck
replay` (the real detector, tracker, quality gate and policy) and each customer's outcome
is read from the events: flagged (and why) if any alert came while they were in view.
Each customer's lowest median (the events' ``lowest_estimated_age``) also says what every
higher limit would have decided, since a flag is sticky: the bench ends with the till's own
key figure (13-17s asked where 10% of adults 25+ are) and whom each limit from the replay's
own up to 45 asks at the till (replay at ``--margin-years 0`` for the whole table from the
legal age up).
``--customers`` writes each customer's outcome (file name, true age, the app's last median
estimate, seen, flagged, why, lowest median) in `bench/compare_models.py`'s format, so that two models'
replays of the same customers can be compared one by one; it names dataset files, so it
belongs beside the run, not in the project. The clip and events stay in a temporary folder.
``--sensor-noise`` adds Gaussian noise to every frame of the clip, as a camera at high gain
in a dim shop does (``--degrade`` corrupts each photo before it is enlarged into the frame,
so its noise reaches the frame as blobs, not as a sensor's grain); ``--detector-side-px``
and ``--detector-confidence`` set the replay's ``[detector] max_input_side_px`` and
``min_detection_confidence``. ``--all-aged 13 18`` adds every other
validation photo of a 13-17-year-old to the drawn customers: 300 per source hold 54 of the
251, too few to tell two models apart at the till by the product's key group.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import photo_bench_parser, public_settings, run_bench, write_report  # noqa: E402
from edge_app.config import DetectorConfig, PolicyConfig, load_config  # noqa: E402
from edge_app.detect import FaceDetector  # noqa: E402
from edge_app.errors import AgecheckError  # noqa: E402
from edge_app.margins import asked_below  # noqa: E402
from edge_app.model_card import ModelCard  # noqa: E402
from training.data import GENDERS, RACES, LabelledImages, load_sources, read_rgb, select  # noqa: E402
from training.degrade import degrade  # noqa: E402
from training.evaluate import PREDICTIONS_HEADER, pct_ci  # noqa: E402
from training.metrics import TRADEOFF_LIMITS_YEARS, key_figure  # noqa: E402

BANDS = [("0-12", 0, 13), ("13-17", 13, 18), ("18-24", 18, 25), ("25+", 25, 200)]
WIDTH, HEIGHT = 1280, 720


def till_customers(images: LabelledImages, per_source: int, seed: int,
                   all_aged: tuple[float, float] | None = None) -> LabelledImages:
    """The validation photos among ``images`` that come to the till: ``per_source`` drawn per
    source (`select`), and with ``all_aged`` (from, below) every other one of those ages, in file order."""
    if all_aged is not None and not all_aged[0] < all_aged[1]:
        raise AgecheckError(f"--all-aged {all_aged[0]:g} {all_aged[1]:g}: expected the first age below the second")
    drawn = select(images, "val", per_source, seed)
    if all_aged is None:
        return drawn
    taken = set(drawn.paths)
    in_band = (images.split == "val") & (images.age_years >= all_aged[0]) & (images.age_years < all_aged[1])
    return images.subset(np.flatnonzero(in_band | np.array([path in taken for path in images.paths])))


def band_rows(customers: list[dict]) -> list[dict]:
    """Per age band of `BANDS` with customers: how many, and the shares never detected, flagged
    (for any reason) and flagged for each reason. Each customer: ``age``, ``seen``, ``flagged``, ``reason``."""
    rows = []
    for name, lo, hi in BANDS:
        group = [c for c in customers if lo <= c["age"] < hi]
        if not group:
            continue

        def share(test, group=group):
            return sum(test(c) for c in group) / len(group)

        rows.append({
            "band": name, "customers": len(group), "never_seen": share(lambda c: not c["seen"]),
            "flagged": share(lambda c: c["flagged"]),
            "by_age": share(lambda c: c["reason"] == "age"),
            "face_unclear": share(lambda c: c["reason"] == "face_unclear"),
            "uncertain": share(lambda c: c["reason"] == "uncertain"),
        })
    return rows


def group_rows(customers: list[dict]) -> dict[str, list[dict]]:
    """`band_rows` per labelled gender and race group (UTKFace's labels; customers of the
    other sources, labelled ``None``, belong to none). Each customer: ``gender``, ``race``."""
    groups = [("gender", name) for name in GENDERS.values()] + [("race", name) for name in RACES.values()]
    return {name: band_rows(members) for key, name in groups
            if (members := [c for c in customers if c[key] == name])}


def flagged_table(first_column: str, groups: dict[str, list[dict]]) -> list[str]:
    """Markdown: per group (row) and age band (column), the share flagged and of how many."""
    lines = [f"| {first_column} | " + " | ".join(name for name, _, _ in BANDS) + " |",
             "| --- |" + " ---: |" * len(BANDS)]
    for group, rows in groups.items():
        cells = {r["band"]: f"{r['flagged']:.0%} of {r['customers']}" for r in rows}
        lines.append(f"| {group} | " + " | ".join(cells.get(name, "-") for name, _, _ in BANDS) + " |")
    return lines


def flagged_at(customer: dict, limit_years: float) -> bool:
    """Whether the app would have flagged ``customer`` had its limit (threshold + margin) been
    ``limit_years``, at or above the replay's own.

    `edge_app.margins.asked_below` of the customer's first alert's ``reason`` and lowest
    median over their tracks (``lowest``).
    """
    return asked_below(customer["reason"], customer["lowest"]) < limit_years


def till_tradeoff(customers: list[dict], replay_limit_years: float) -> list[dict]:
    """Per limit, the replay's own and each of `TRADEOFF_LIMITS_YEARS` above it: the share of
    each age band of `BANDS` the app would have flagged (`flagged_at`)."""
    rows = []
    for limit in [replay_limit_years, *(x for x in TRADEOFF_LIMITS_YEARS if x > replay_limit_years)]:
        row = {"limit_years": float(limit)}
        for name, lo, hi in BANDS:
            if group := [c for c in customers if lo <= c["age"] < hi]:
                row[name] = sum(flagged_at(c, limit) for c in group) / len(group)
        rows.append(row)
    return rows


def till_key(customers: list[dict]) -> dict:
    """The product's key figure for the whole app at this till, read from each customer's
    `asked_below` limit: every customer (a fail-safe flag asks at any limit, a customer never
    estimated at none) and, ``"by_age"``, only those estimated and flagged for no other reason.
    `training.metrics.key_figure`'s fields, and ``by_age_customers``."""
    true = np.array([c["age"] for c in customers], np.float64)
    below = np.array([asked_below(c["reason"], c["lowest"]) for c in customers], np.float64)
    by_age = np.isfinite(below)
    return key_figure(true, below) | {"by_age": key_figure(true[by_age], below[by_age]),
                                      "by_age_customers": int(by_age.sum())}


def till_key_line(key: dict) -> str:
    """One sentence of `till_key`."""
    def share(k):
        if k["age_13_17_flagged"] is None:
            return "– (no 13-17s or no adults 25+)"
        return f"{pct_ci(k)} of {k['age_13_17_count']} 13-17s"

    return ("The till's own key figure, read from each customer's lowest median (13-17s asked where 10% of "
            f"adults 25+ are; fail-safe flags count as asked at every limit): {share(key)}; by age alone (the "
            f"{key['by_age_customers']} customers estimated and not flagged for another reason): "
            f"{share(key['by_age'])}.")


def tradeoff_lines(customers: list[dict], rows: list[dict], threshold_age: float) -> list[str]:
    """Markdown: `till_tradeoff`'s rows, the replay's own in bold, and how many of the replay's
    decisions its reading gives back at the replay's limit (all, but for a lowest median within
    0.005 years of it: events give it to 0.01)."""
    replay_limit = rows[0]["limit_years"]
    agree = sum(flagged_at(c, replay_limit) == c["flagged"] for c in customers)
    bands = [name for name, _, _ in BANDS if name in rows[0]]
    lines = [f"Whom each limit asks at the till, read from each customer's lowest median (a flag is sticky; "
             f"exact from the replay's limit, {replay_limit:.2f}, up: there it gives back the replay's decision "
             f"for {agree} of {len(customers)} customers):", "",
             f"| limit (years) | margin at {threshold_age:g} | " + " | ".join(bands) + " |",
             "| ---: | ---: |" + " ---: |" * len(bands)]
    for row in rows:
        cells = [f"{row['limit_years']:.2f}", f"{row['limit_years'] - threshold_age:.2f}",
                 *(f"{row[name]:.1%}" for name in bands)]
        if row is rows[0]:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def gate_lines(customers: list[dict], replayed: dict) -> list[str]:
    """Why the quality gate refused faces over the replay, and the light the estimates were made in.

    ``replayed`` is the replay's summary; a customer's ``refused_as`` is what the gate last
    refused their face for, on a ``face_unclear`` alert.
    """
    faces, refused = replayed["faces"], replayed["faces_refused_by_reason"]
    unclear = [c for c in customers if c["reason"] == "face_unclear"]
    by_reason = ", ".join(f"{reason.replace('_', ' ')} {sum(c.get('refused_as') == reason for c in unclear)}"
                          for reason in refused)
    estimates = replayed["age_estimates"]
    return [
        f"The gate refused {sum(refused.values()) / max(faces, 1):.1%} of {faces} face sightings ("
        + ", ".join(f"{reason.replace('_', ' ')} {n / max(faces, 1):.1%}" for reason, n in refused.items())
        + f"); the {len(unclear)} customers flagged `face_unclear` were last refused as {by_reason}. Of "
        f"{estimates} age estimates, {replayed['age_estimates_too_dark'] / max(estimates, 1):.1%} were of faces "
        f"too dark and {replayed['age_estimates_too_bright'] / max(estimates, 1):.1%} too bright "
        "(`edge_app.quality`).",
    ]


def background(rng: np.random.Generator) -> np.ndarray:
    """A soft, shop-like background (BGR): blurred blotches of muted colour."""
    coarse = rng.integers(60, 200, (9, 16, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC), (0, 0), 25)


def background_without_faces(rng: np.random.Generator, detector, tries: int = 100) -> tuple[np.ndarray, int]:
    """A `background` in which ``detector`` (the app's `FaceDetector` in image mode) finds no
    face, and how many were drawn before it.

    About a fifth of the blotches look like a face to BlazeFace (confidence 0.5-0.7). Until
    2026-11-27 the bench kept them: the phantom, refused as blurred, was flagged
    ``face_unclear`` and counted against the customer in view.
    """
    for drawn in range(tries):
        back = background(rng)
        if len(detector.detect(cv2.cvtColor(back, cv2.COLOR_BGR2RGB))) == 0:
            return back, drawn
    raise AgecheckError(f"the detector found a face in each of {tries} backgrounds drawn; expected most without")


def customer_frames(photo_bgr, back, frames: int, rng: np.random.Generator):
    """The photo placed in the frame, drifting sideways and growing by 10% over ``frames``."""
    height0 = rng.uniform(200, 360)  # a face about half the photo: ~30-55 px between the eyes
    x0, drift = rng.uniform(350, 800), rng.uniform(-60, 60)
    for i in range(frames):
        t = i / max(frames - 1, 1)
        h = int(height0 * (1 + 0.1 * t))
        w = int(h * photo_bgr.shape[1] / photo_bgr.shape[0])
        x, y = int(x0 + drift * t), int(HEIGHT * 0.45 - h / 2)
        frame = back.copy()
        photo = cv2.resize(photo_bgr, (w, h), interpolation=cv2.INTER_AREA)
        # cut to the frame: a wide photo drawn far right, or a tall one, runs off its edges
        frame[max(y, 0) : y + h, x : x + w] = photo[max(-y, 0) : HEIGHT - y, : WIDTH - x]
        yield frame


def customer_photo(path: Path, degradation: str, seed: int) -> np.ndarray | None:
    """The RGB photo at ``path`` as the till shows it: corrupted by ``degradation`` (seeded by
    ``seed`` and the file name) unless it is ``none``; None where it cannot be decoded."""
    rgb = read_rgb(path)
    return rgb if rgb is None or degradation == "none" else degrade(rgb, degradation, seed, path.name)


def till_writer(path: Path, fps: float) -> cv2.VideoWriter:
    """A 720p MJPG clip, compressed as the till bench's clip is."""
    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))


def write_customers(path: Path, customers: list[dict]) -> None:
    """One row per customer; ``predicted_age`` is empty for a customer never estimated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*PREDICTIONS_HEADER, "seen", "flagged", "reason", "lowest_age"])  # compare_models reads it
        for c in customers:
            writer.writerow([c["source"], c["file_name"], c["age"], "" if c["estimate"] is None else c["estimate"],
                             int(c["seen"]), int(c["flagged"]), c["reason"] or "",
                             "" if c["lowest"] is None else c["lowest"]])


def till_parser(doc: str):
    """The arguments of a synthetic till (this bench's and `bench/aggregation.py`'s)."""
    parser = photo_bench_parser(doc, per_source=100)
    parser.add_argument("--degrade", default="camera")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--gap-s", type=float, default=1.2)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--detect-interval-ms", type=float, default=None,
                        help="[detector] min_interval_ms for the replay (default: the app's)")
    parser.add_argument("--detector-side-px", type=int, default=None,
                        help="[detector] max_input_side_px for the replay (default: the app's; 0: off)")
    parser.add_argument("--detector-confidence", type=float, default=None,
                        help="[detector] min_detection_confidence for the replay (default: the app's)")
    parser.add_argument("--sensor-noise", type=float, default=0.0,
                        help="sigma of Gaussian noise added to every frame, as a camera at high gain in a dim shop")
    parser.add_argument("--all-aged", type=float, nargs=2, metavar=("FROM", "BELOW"), default=None,
                        help="every validation photo aged FROM to under BELOW joins the drawn ones "
                             "(13 18: every 13-17-year-old)")
    return parser


def main() -> None:
    parser = till_parser(__doc__)
    parser.add_argument("--margin-years", type=float, default=None,
                        help="the gate's margin for the replay (default: the model card's MAE)")
    parser.add_argument("--customers", default=None, help="write each customer's outcome here (CSV)")
    run_bench(measure, parser.parse_args())


def detector_settings(args: argparse.Namespace) -> dict:
    """The replay's ``[detector]`` settings that the arguments set."""
    return {key: value for key, value in (("min_interval_ms", args.detect_interval_ms),
                                          ("max_input_side_px", args.detector_side_px),
                                          ("min_detection_confidence", args.detector_confidence))
            if value is not None}


def write_till(args: argparse.Namespace, card: ModelCard, clip: Path) -> tuple[list[dict], int]:
    """The till's clip written to ``clip``: (its customers in order of appearance, backgrounds drawn again).

    Each customer: ``age``, ``source``, ``file_name``, ``gender``, ``race``, ``start_s``,
    ``end_s`` (video time in view).
    """
    images = till_customers(load_sources(args.data, *card.validation_split), args.per_source, args.seed,
                            args.all_aged)
    rng = np.random.default_rng(args.seed)
    picks = rng.permutation(len(images))  # the sources take turns at the till
    in_view = int(args.seconds * args.fps)
    gap = int(args.gap_s * args.fps)
    noise_rng = np.random.default_rng([args.seed, 1])  # apart from the placements' draws
    # a bank of noise fields, one drawn per frame (drawing 2.8M normals per frame would cost
    # the bench more than the replay)
    noise = [np.round(noise_rng.normal(0, args.sensor_noise, (HEIGHT, WIDTH, 3))).astype(np.int16)
             for _ in range(16 if args.sensor_noise else 0)]

    def sensor(frame: np.ndarray) -> np.ndarray:
        if not noise:
            return frame
        return np.clip(frame + noise[noise_rng.integers(len(noise))], 0, 255).astype(np.uint8)

    app = load_config(None).override("detector", **detector_settings(args)).detector
    # Backgrounds are checked at the lower of the replay's confidence and the app's default, so
    # that a replay at a higher confidence gets the very clip of one at the default.
    checked = dataclasses.replace(app, min_detection_confidence=min(
        app.min_detection_confidence, DetectorConfig().min_detection_confidence))
    backgrounds_redrawn = 0
    with FaceDetector(checked, video=False) as detector:
        writer = till_writer(clip, args.fps)
        customers, frame_index = [], 0
        for i in picks:
            rgb = customer_photo(images.paths[i], args.degrade, args.seed)
            if rgb is None:
                continue
            back, redrawn = background_without_faces(rng, detector)
            backgrounds_redrawn += redrawn
            start = frame_index
            for frame in customer_frames(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), back, in_view, rng):
                writer.write(sensor(frame))
                frame_index += 1
            for _ in range(gap):
                writer.write(sensor(back))
                frame_index += 1
            customers.append({"age": float(images.age_years[i]), "source": str(images.source[i]),
                              "file_name": images.paths[i].name,
                              "gender": GENDERS.get(int(images.gender[i])), "race": RACES.get(int(images.race[i])),
                              "start_s": start / args.fps, "end_s": (start + in_view) / args.fps})
        writer.release()
    return customers, backgrounds_redrawn


def track_owners(events: list[dict], customers: list[dict]) -> dict[int, int]:
    """{track id: index of its customer}: each track belongs to the customer in view when it started."""
    starts = {e["track_id"]: e["video_time_s"] for e in events if e["type"] == "track_start"}
    owner = {}
    for track_id, t in starts.items():
        for k, c in enumerate(customers):
            if c["start_s"] - 0.05 <= t < c["end_s"] + 0.05:
                owner[track_id] = k
    return owner


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: photos, estimates, the printed and written tables."""
    card = ModelCard.load(args.model)
    detector = detector_settings(args)
    with tempfile.TemporaryDirectory() as tmp:
        clip, events_path = Path(tmp) / "till.avi", Path(tmp) / "events.jsonl"
        customers, backgrounds_redrawn = write_till(args, card, clip)
        config = []
        if detector:
            config = ["--config", str(Path(tmp) / "config.toml")]
            Path(config[1]).write_text("[detector]\n" + "".join(f"{k} = {v}\n" for k, v in detector.items()))
        subprocess.run([sys.executable, "-m", "edge_app", "replay", str(clip), "--model", args.model,
                        "--events", str(events_path), "--summary", str(Path(tmp) / "s.json"), *config,
                        *(["--margin-years", str(args.margin_years)] if args.margin_years is not None else [])],
                       check=True, capture_output=True, text=True)
        events = [json.loads(line) for line in events_path.read_text().splitlines()]
        replayed = json.loads((Path(tmp) / "s.json").read_text())
    owner = track_owners(events, customers)
    for c in customers:
        c.update(seen=False, flagged=False, reason=None, decided_s=None, estimate=None, lowest=None)
    for e in events:
        k = owner.get(e.get("track_id"))  # None for the till's conditions (poor light), which have no track
        if k is None:
            continue
        c = customers[k]
        c["seen"] = True
        if e.get("estimated_age") is not None:
            c["estimate"] = e["estimated_age"]  # the track's median as of its latest event
        if e.get("lowest_estimated_age") is not None:  # over all of the customer's tracks
            c["lowest"] = min(e["lowest_estimated_age"], c["lowest"] if c["lowest"] is not None else math.inf)
        if e["type"] == "alert" and not c["flagged"]:
            c.update(flagged=True, reason=e["reason"], decided_s=round(e["video_time_s"] - c["start_s"], 3),
                     refused_as=e.get("refused_as"))
    rows = band_rows(customers)
    sources = sorted({c["source"] for c in customers})
    by_source = {source: band_rows([c for c in customers if c["source"] == source]) for source in sources}
    by_group = group_rows(customers)
    margin = card.mae_years if args.margin_years is None else args.margin_years
    threshold_age = PolicyConfig().threshold_age  # the replay's: the bench does not set it
    tradeoff = till_tradeoff(customers, threshold_age + margin)
    lines = [
        f"{len(customers)} customers ({args.per_source} validation photos per source"
        f"{f' and every other one aged {args.all_aged[0]:g} to under {args.all_aged[1]:g}' if args.all_aged else ''}, "
        f"`--degrade {args.degrade}`, "
        f"seed {args.seed}{f', sensor noise {args.sensor_noise:g}' if args.sensor_noise else ''}"
        f"{f', detector input {args.detector_side_px} px' if args.detector_side_px is not None else ''}"
        f"{f', detector confidence {args.detector_confidence:g}' if args.detector_confidence is not None else ''}), "
        f"{args.seconds:g} s each at {args.fps:g} fps, model `{Path(args.model).name}` "
        f"(margin {margin:.2f}), face detection on {replayed['detections']} of {replayed['frames']} frames "
        f"({backgrounds_redrawn} backgrounds drawn again: the detector found a face in them):",
        "",
        "| true age | customers | never detected | flagged | by age | face_unclear | uncertain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['band']} | {r['customers']} | {r['never_seen']:.0%} | **{r['flagged']:.0%}** | "
                     f"{r['by_age']:.0%} | {r['face_unclear']:.0%} | {r['uncertain']:.0%} |")
    if len(sources) > 1:
        lines += ["", "Flagged per source (share of the source's customers of that age, and how many they were):", "",
                  *flagged_table("source", by_source)]
    if by_group:
        labelled = sum(c["gender"] is not None or c["race"] is not None for c in customers)
        lines += ["", f"Flagged per labelled group ({labelled} customers whose photos label gender and race: "
                  "UTKFace's):", "", *flagged_table("group", by_group)]
    decided = [c["decided_s"] for c in customers if c["decided_s"] is not None and c["reason"] == "age"]
    if decided:
        lines += ["", f"Alerts by age came {np.median(decided):.2f} s (median) after the customer appeared."]
    key = till_key(customers)
    lines += ["", *gate_lines(customers, replayed), "", till_key_line(key), "",
              *tradeoff_lines(customers, tradeoff, threshold_age)]
    print("\n".join(lines))
    if args.customers:
        write_customers(Path(args.customers), customers)
    settings = public_settings(args, "data", "model", "customers", "out")
    write_report(args.out, lines, {"rows": rows, "by_source": by_source, "by_group": by_group, "tradeoff": tradeoff,
                                   "till_key": key, "backgrounds_redrawn": backgrounds_redrawn, "settings": settings})


if __name__ == "__main__":
    main()
