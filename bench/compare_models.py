"""Is a candidate model better than the shipped one? Paired on the same photos.

    python bench/compare_models.py BEFORE.csv AFTER.csv [--margins M_BEFORE M_AFTER] [--out docs/model/NAME]

BEFORE and AFTER are `agecheck evaluate --predictions` files of two models on the same photos
(same sources, split, ``--degrade`` and ``--seed``). Prints, for all photos and per source,
each model's key figure and MAE and the change with a paired bootstrap 95% interval
(`training.metrics.paired_change`): an interval that holds 0 means these photos cannot tell
the two models apart on that figure. With ``--margins`` (each model's card margin), also
how many minors each model's gate flags (estimate < 18 + margin; ``--threshold-age 21``
where the law says so: minors are then those under 21) and how many changed sides,
and the narrowest candidate margin whose gate flags as many minors as the model in use does
at its own, with the adults 25+ each gate flags then (the trade-off at the same protection).

The files may also be `bench/per_customer.py --customers` outputs of two models' replays of
the same till customers: then the app's own decisions are compared too (customers flagged
before and after, per age band, and how many changed sides), and customers that a model
never estimated are left out of the estimate figures. Where such a file gives each
customer's lowest median (``lowest_age``), ``--margins`` also reads the app's decisions at
those margins from it (a flag is sticky: a customer is asked at any limit above it) and finds
the narrowest candidate margin at which the candidate's till asks as many minors: any margin
from one replay per model, exact from each replay's own margin up (replay at
``--margin-years 0``; below it a customer who would have been flagged ``uncertain`` is missed).

With ``--margins``, UTKFace's photos are also split by the gender and race their file names
label: minors (under the threshold age) and adults 25+ each model asks in each group, and how many changed
sides (per photo, and at the till where the files are a till's), since a change that serves
one group worse can hide in the totals ("Fairness" in docs/MODEL.md).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from edge_app.margins import asked_below  # noqa: E402
from training.data import GENDERS, RACES, utkface_labels  # noqa: E402
from training.evaluate import PREDICTIONS_HEADER, cell  # noqa: E402
from training.metrics import gate_flags, paired_change, teens_and_adults  # noqa: E402


def bands(threshold_age: float = 18.0) -> tuple[tuple[str, float, float], ...]:
    """The age bands of the decision tables: the minors at ``threshold_age`` first, then the key figure's groups."""
    return ((f"under {threshold_age:g}", 0, threshold_age), ("13–17", 13, 18), ("18–24", 18, 25), ("25+", 25, 200))


class Scored(NamedTuple):
    """One photo or till customer of a predictions file.

    ``predicted_age`` is NaN where the cell is empty (a till customer never estimated);
    ``flagged`` is the app's decision in a per-customer file, None in an evaluate file;
    ``asked_below`` (per-customer files with ``lowest_age``) the limit above which the app
    asks the customer: the lowest median, -inf for one flagged for another reason (asked at
    any limit), +inf for one neither estimated nor flagged (never asked); None otherwise.
    """

    real_age: float
    predicted_age: float
    flagged: bool | None
    asked_below: float | None


def _asked_below(row: dict) -> float | None:
    """`edge_app.margins.asked_below` of a per-customer file's row: its reason and lowest median."""
    if "lowest_age" not in row:  # a customers file from before 2026-11-27, or an evaluate file
        return None
    return asked_below(row["reason"], float(row["lowest_age"]) if row["lowest_age"] else None)


def read_predictions(path: Path) -> dict[tuple[str, str], Scored]:
    """``{(source, file_name): Scored}`` of a predictions file (`agecheck evaluate --predictions`, or
    `bench/per_customer.py --customers`)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected an `agecheck evaluate --predictions` CSV")
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in PREDICTIONS_HEADER if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected {list(PREDICTIONS_HEADER)}")
        try:
            return {(r["source"], r["file_name"]): Scored(float(r["real_age"]), float(r["predicted_age"] or "nan"),
                                                          bool(int(r["flagged"])) if "flagged" in r else None,
                                                          _asked_below(r))
                    for r in reader}
        except ValueError as error:
            raise ValueError(f"{path}: line {reader.line_num}: {error}; expected numeric ages "
                             "(and, in a till customers file, flagged 0 or 1)") from None


def minors_flagged(true: np.ndarray, before: np.ndarray, after: np.ndarray, margins: tuple[float, float],
                   threshold_age: float = 18.0) -> dict:
    """Minors each gate flags at its own margin, and how many went from flagged to not (lost) or back."""
    minors = true < threshold_age
    was = gate_flags(before[minors], threshold_age, margins[0])
    now = gate_flags(after[minors], threshold_age, margins[1])
    return {"minors": int(minors.sum()), "flagged_before": int(was.sum()), "flagged_after": int(now.sum()),
            "lost": int((was & ~now).sum()), "gained": int((~was & now).sum())}


def matched_margin(true: np.ndarray, before: np.ndarray, after: np.ndarray, margins: tuple[float, float],
                   threshold_age: float = 18.0, step_years: float = 0.1) -> dict:
    """The narrowest AFTER margin (on a ``step_years`` grid) whose gate flags at least as many minors as
    BEFORE's gate at its own margin, and the adults 25+ each gate flags then.

    Two models' trade-off at the same protection: a candidate that reads everyone older asks
    fewer minors at the same margin, yet may ask fewer adults than the model in use once its
    margin is widened until it asks as many minors again.
    """
    minors, adults = true < threshold_age, teens_and_adults(true)[1]
    wanted = int(gate_flags(before[minors], threshold_age, margins[0]).sum())
    margin = 0.0
    if wanted:
        kth = np.sort(after[minors])[wanted - 1]  # the wanted-th lowest estimate must fall under the limit
        # the first grid step strictly above kth (the 1e-9: 26.2 - 18 is 8.1999... in binary)
        margin = max(0.0, round((np.floor((kth - threshold_age) / step_years + 1e-9) + 1) * step_years, 6))
    return {"margin_after": margin, "minors": int(minors.sum()), "minors_before": wanted,
            "minors_after": int(gate_flags(after[minors], threshold_age, margin).sum()),
            "adults": int(adults.sum()),
            "adults_before": int(gate_flags(before[adults], threshold_age, margins[0]).sum()),
            "adults_after": int(gate_flags(after[adults], threshold_age, margin).sum())}


def _decisions(scored: list[Scored], margin: float | None, threshold_age: float) -> tuple[np.ndarray, str] | None:
    """The app's decision per till customer, and how it was had: read at ``margin`` from the
    lowest medians where the file has them, else as replayed; None for an evaluate file."""
    if scored[0].flagged is None:
        return None
    if margin is not None and scored[0].asked_below is not None:
        return (gate_flags(np.array([s.asked_below for s in scored]), threshold_age, margin),
                f"read at margin {margin:g}")
    return np.array([s.flagged for s in scored]), "as replayed"


def decisions_changed(true: np.ndarray, before: np.ndarray, after: np.ndarray,
                      threshold_age: float = 18.0) -> list[dict]:
    """Per age band (`bands`): customers the app flagged before and after, and how many changed sides."""
    rows = []
    for name, lo, hi in bands(threshold_age):
        m = (true >= lo) & (true < hi)
        rows.append({"band": name, "customers": int(m.sum()), "flagged_before": int(before[m].sum()),
                     "flagged_after": int(after[m].sum()), "lost": int((before & ~after)[m].sum()),
                     "gained": int((~before & after)[m].sum())})
    return rows


def labelled_groups(keys: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """``{"black": mask, ...}``: UTKFace's photos among ``keys`` by the gender and race their names label."""
    labels = np.array([utkface_labels(name) if source == "utkface" else (-1, -1) for source, name in keys]
                      ).reshape(-1, 2)
    groups = {name: labels[:, 1] == code for code, name in RACES.items()}
    groups |= {name: labels[:, 0] == code for code, name in GENDERS.items()}
    return {name: mask for name, mask in groups.items() if mask.any()}


def asked_by_group(true: np.ndarray, before: np.ndarray, after: np.ndarray, groups: dict[str, np.ndarray],
                   threshold_age: float = 18.0) -> list[dict]:
    """Per group, minors and adults 25+ asked (``before``/``after``: bool per photo or customer), and changes."""
    rows = []
    for name, mask in groups.items():
        row = {"group": name}
        for label, people in (("minors", true < threshold_age), ("adults_25_plus", true >= 25)):
            m = mask & people
            row[label] = {"count": int(m.sum()), "before": int(before[m].sum()), "after": int(after[m].sum()),
                          "lost": int((before & ~after)[m].sum()), "gained": int((~before & after)[m].sum())}
        rows.append(row)
    return rows


def compare(before: dict, after: dict, margins: tuple[float, float] | None = None,
            threshold_age: float = 18.0) -> dict[str, dict]:
    """`paired_change` (and `minors_flagged` with ``margins``) for all photos and for each source.

    The two files must hold the same photos with the same labels. Per-customer files add
    ``"decisions"`` (`decisions_changed`) to the ``"all"`` entry. The gates ask below
    ``threshold_age`` + margin, and minors are those under ``threshold_age``.
    """
    if before.keys() != after.keys():
        only_before, only_after = len(before.keys() - after.keys()), len(after.keys() - before.keys())
        raise ValueError(f"the files score different photos ({only_before} only in BEFORE, {only_after} only in "
                         "AFTER); expected the same sources, split, --degrade and --seed")
    if not before:
        raise ValueError("the files hold no photos")
    keys = sorted(before)
    true = np.array([before[k][0] for k in keys])
    if not np.array_equal(true, [after[k][0] for k in keys]):
        raise ValueError("the files label the same photos with different ages; expected the same data")
    decisions = till_matched = till_key = till_groups = None
    decided = [_decisions([scored[k] for k in keys], margin, threshold_age)
               for scored, margin in zip((before, after), margins or (None, None), strict=True)]
    if None not in decided:
        decisions = decisions_changed(true, decided[0][0], decided[1][0], threshold_age)
        decisions_at = {"before": decided[0][1], "after": decided[1][1]}
        if margins is not None:
            till_groups = asked_by_group(true, decided[0][0], decided[1][0], labelled_groups(keys), threshold_age)
    if before[keys[0]].asked_below is not None and after[keys[0]].asked_below is not None:
        # From the lowest medians: the till's own key figure (every customer, fail-safe flags
        # included), and with margins its own same protection.
        below_before = np.array([before[k].asked_below for k in keys])
        below_after = np.array([after[k].asked_below for k in keys])
        by_age = np.isfinite(below_before) & np.isfinite(below_after)  # estimated, flagged by age or not at all
        keep = ("key_before", "key_after", "key_change", "key_change_ci95")
        with np.errstate(invalid="ignore"):  # the infinities' MAE means nothing; only the key is kept
            change = paired_change(true, below_before, below_after)
        by_age_change = paired_change(true[by_age], below_before[by_age], below_after[by_age])
        till_key = {key: change[key] for key in keep} | {
            "by_age_customers": int(by_age.sum()), "by_age": {key: by_age_change[key] for key in keep}}
        if margins is not None:
            till_matched = matched_margin(true, below_before, below_after, margins, threshold_age)
    pred_before = np.array([before[k][1] for k in keys])
    pred_after = np.array([after[k][1] for k in keys])
    estimated = np.isfinite(pred_before) & np.isfinite(pred_after)
    keys = [keys[i] for i in np.flatnonzero(estimated)]
    true, pred_before, pred_after = true[estimated], pred_before[estimated], pred_after[estimated]
    if not keys:
        raise ValueError("no photo has an estimate from both models; expected predicted ages")
    sources = np.array([k[0] for k in keys])
    groups = {"all": np.ones(len(keys), bool)} | {s: sources == s for s in dict.fromkeys(sources.tolist())}
    results = {name: paired_change(true[m], pred_before[m], pred_after[m]) for name, m in groups.items()}
    if margins is not None:
        for name, m in groups.items():
            results[name]["gate"] = minors_flagged(true[m], pred_before[m], pred_after[m], margins, threshold_age)
        results["all"]["matched"] = matched_margin(true, pred_before, pred_after, margins, threshold_age)
        results["all"]["by_group"] = asked_by_group(
            true, gate_flags(pred_before, threshold_age, margins[0]), gate_flags(pred_after, threshold_age, margins[1]),
            labelled_groups(keys), threshold_age)
    results["all"]["not_estimated"] = int((~estimated).sum())
    results["all"]["threshold_age"] = threshold_age
    if decisions is not None:
        results["all"]["decisions"] = decisions
        results["all"]["decisions_at"] = decisions_at
    if till_matched is not None:
        results["all"]["till_matched"] = till_matched
    if till_key is not None:
        results["all"]["till_key"] = till_key
    if till_groups:
        results["all"]["till_by_group"] = till_groups
    return results


def _group_lines(rows: list[dict], what: str, threshold_age: float) -> list[str]:
    """A Markdown table of `asked_by_group` rows."""
    def cell_of(c):
        return f"{c['before']} → {c['after']} of {c['count']} ({c['lost']} lost, {c['gained']} gained)"

    lines = ["", f"{what}, by the gender and race UTKFace's file names label:", "",
             f"| group | minors (under {threshold_age:g}) asked | adults 25+ asked |", "| --- | ---: | ---: |"]
    return lines + [f"| {r['group']} | {cell_of(r['minors'])} | {cell_of(r['adults_25_plus'])} |" for r in rows]


def markdown(results: dict[str, dict], before_name: str, after_name: str) -> str:
    def points(v, ci):
        return "–" if v is None else f"{100 * v:+.1f} ({100 * ci[0]:+.1f} to {100 * ci[1]:+.1f})"

    threshold_age = results["all"].get("threshold_age", 18.0)

    lines = [f"Paired comparison on the same photos: before `{before_name}`, after `{after_name}`; "
             "changes are after − before with a paired bootstrap 95% interval (1000 resamples, seed 0).",
             "",
             "| photos | 13–17 / 25+ | key figure before → after | change, points "
             "| MAE before → after | change, years |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['age_13_17_count']} / {r['age_25_plus_count']} "
            f"| {cell(r['key_before'], '.1%')} → {cell(r['key_after'], '.1%')} "
            f"| {points(r['key_change'], r['key_change_ci95'])} "
            f"| {r['mae_before']:.2f} → {r['mae_after']:.2f} "
            f"| {r['mae_change']:+.2f} ({r['mae_change_ci95'][0]:+.2f} to {r['mae_change_ci95'][1]:+.2f}) |")
    if results["all"]["not_estimated"]:
        lines += ["", f"{results['all']['not_estimated']} left out of these figures: not estimated by one "
                  "model or both (never seen, or the quality gate refused every frame)."]
    if "till_key" in results["all"]:
        k = results["all"]["till_key"]
        age = k["by_age"]
        lines += ["", "The till's own key figure, read from each customer's lowest median (every customer, "
                  f"fail-safe flags included: 13–17s asked where 10% of adults 25+ are): {k['key_before']:.1%} → "
                  f"{k['key_after']:.1%}, change {points(k['key_change'], k['key_change_ci95'])} points; by age "
                  f"alone (the {k['by_age_customers']} customers both models estimated and neither flagged for "
                  f"another reason): {cell(age['key_before'], '.1%')} → {cell(age['key_after'], '.1%')}, "
                  f"change {points(age['key_change'], age['key_change_ci95'])} points."]
    if "decisions" in results["all"]:
        at = results["all"]["decisions_at"]
        lines += ["", f"The app's decisions, customer by customer (before {at['before']}, after {at['after']}; "
                  "read: from each customer's lowest median): flagged for an ID check (for any reason) "
                  "before and after, and those that changed sides:", "",
                  "| true age | customers | flagged before → after | lost | gained |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for d in results["all"]["decisions"]:
            lines.append(f"| {d['band']} | {d['customers']} | {d['flagged_before']} → {d['flagged_after']} "
                         f"| {d['lost']} | {d['gained']} |")
    if all("gate" in r for r in results.values()):
        lines += ["", f"Minors (under {threshold_age:g}) each model's gate flags at its own margin (estimate below "
                  f"{threshold_age:g} + margin), and those that changed sides:", "",
                  "| photos | minors | flagged before → after | lost | gained |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, r in results.items():
            g = r["gate"]
            lines.append(f"| {name} | {g['minors']} | {g['flagged_before']} → {g['flagged_after']} "
                         f"| {g['lost']} | {g['gained']} |")
        if results["all"].get("by_group"):
            lines += _group_lines(results["all"]["by_group"], "Per photo, each at its own margin", threshold_age)
        m = results["all"]["matched"]
        lines += ["", f"At the same protection: from margin {m['margin_after']:.1f} the candidate's estimates flag "
                  f"as many minors as before ({m['minors_after']} of {m['minors']}, before {m['minors_before']}); "
                  f"adults 25+ flagged then: {m['adults_before']} → {m['adults_after']} of {m['adults']}."]
    if "till_matched" in results["all"]:
        m = results["all"]["till_matched"]
        lines += ["", f"At the same protection at the till: from margin {m['margin_after']:.1f} the candidate's "
                  f"till asks as many minors as before ({m['minors_after']} of {m['minors']}, before "
                  f"{m['minors_before']}), for any reason; adults 25+ asked then: {m['adults_before']} → "
                  f"{m['adults_after']} of {m['adults']}."]
    if results["all"].get("till_by_group"):
        at = results["all"]["decisions_at"]
        lines += _group_lines(results["all"]["till_by_group"], f"At the till (before {at['before']}, after "
                              f"{at['after']}), customers asked for any reason", threshold_age)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="predictions CSV of the model in use")
    parser.add_argument("after", type=Path, help="predictions CSV of the candidate")
    parser.add_argument("--margins", type=float, nargs=2, metavar=("BEFORE", "AFTER"),
                        help="each model's margin in years (its card's mae): count the minors each gate flags")
    parser.add_argument("--threshold-age", type=float, default=18.0,
                        help="the legal age the gates serve: minors are those under it (21 where the law says so)")
    parser.add_argument("--out", type=Path, help="path without suffix for .json and .md")
    args = parser.parse_args(argv)
    try:
        if args.margins is not None and min(args.margins) < 0:
            raise ValueError(f"--margins {args.margins[0]} {args.margins[1]}: expected margins of 0 years or more")
        if not 1 <= args.threshold_age <= 120:
            raise ValueError(f"--threshold-age {args.threshold_age:g}: expected a legal age in years, 1 to 120")
        results = compare(read_predictions(args.before), read_predictions(args.after), args.margins,
                          args.threshold_age)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = markdown(results, *(f"{p.parent.name}/{p.name}" for p in (args.before, args.after)))
    print(table, end="")
    write_report(args.out, table.rstrip("\n").split("\n"), results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
