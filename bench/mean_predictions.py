"""Several models averaged, photo by photo: an ensemble's predictions file, for compare_models.

    python bench/mean_predictions.py A.csv B.csv [C.csv ...] --out MEAN.csv

Each input is an `agecheck evaluate --predictions` file of one model on the same photos (same
sources, split, ``--degrade`` and ``--seed``). MEAN.csv holds each photo's mean estimate in the
same format, so that `bench/compare_models.py SHIPPED.csv MEAN.csv` scores the ensemble against
the model in use, paired. Averaging pays only where the models err differently: the script
prints the correlation of each pair's errors (estimate minus true age), over all photos and
over the 13–17s, whose ranking against adults 25+ is the key figure.
"""

from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare_models import read_predictions  # noqa: E402
from training.evaluate import evaluate_wrote, write_predictions  # noqa: E402
from training.metrics import teens_and_adults  # noqa: E402


def mean_predictions(files: list[dict]) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """(keys, true ages, (models, photos) estimates) of `read_predictions` results on the same photos.

    Raises:
        ValueError: the files do not hold the same photos, or disagree on a photo's true age.
    """
    keys = sorted(files[0])
    for i, scored in enumerate(files[1:], 2):
        if set(scored) != set(keys):
            raise ValueError(f"file {i} holds {len(set(scored) - set(keys))} photos file 1 lacks and lacks "
                             f"{len(set(keys) - set(scored))} of its; expected the same photos in every file")
    true = np.array([files[0][k].real_age for k in keys])
    for i, scored in enumerate(files[1:], 2):
        if not np.array_equal(true, [scored[k].real_age for k in keys]):
            raise ValueError(f"file {i} gives other true ages than file 1; expected the same photos' predictions")
    return keys, true, np.array([[scored[k].predicted_age for k in keys] for scored in files])


def error_correlations(true: np.ndarray, estimates: np.ndarray) -> list[dict]:
    """Per pair of models: the correlation of their errors, over all photos and over the 13–17s."""
    teens, _ = teens_and_adults(true)
    rows = []
    for a, b in combinations(range(len(estimates)), 2):
        errors = estimates[[a, b]] - true
        rows.append({"files": (a + 1, b + 1), "all": float(np.corrcoef(errors)[0, 1]),
                     "13-17": float(np.corrcoef(errors[:, teens])[0, 1]) if teens.sum() > 2 else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, nargs="+", help="`agecheck evaluate --predictions` files")
    parser.add_argument("--out", type=Path, required=True, help="the mean's predictions file (CSV)")
    args = parser.parse_args(argv)
    try:
        if len(args.predictions) < 2:
            raise ValueError(f"{len(args.predictions)} predictions file given; expected 2 or more")
        if args.out.resolve() in {p.resolve() for p in args.predictions}:
            raise ValueError(f"--out {args.out} is one of the inputs; expected a new file name")
        files = [read_predictions(path) for path in args.predictions]
        if any(s.flagged is not None for scored in files for s in scored.values()):
            raise ValueError("a file is a till's customers file (bench/per_customer.py); expected "
                             "`agecheck evaluate --predictions` files, one estimate per photo")
        if args.out.is_dir():
            raise ValueError(f"--out {args.out} is a folder; expected a file name")
        if args.out.exists() and not evaluate_wrote(args.out, "--predictions"):
            raise ValueError(f"--out {args.out} holds a file that is not a predictions file and would be lost; "
                             "expected a new file name")
        keys, true, estimates = mean_predictions(files)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(args.out, [k[0] for k in keys], [k[1] for k in keys], true, estimates.mean(axis=0))
    print(f"{len(keys)} photos, mean of {len(files)} models written to {args.out}")
    for row in error_correlations(true, estimates):
        teens = "n/a" if row["13-17"] is None else f"{row['13-17']:.3f}"
        print(f"errors of files {row['files'][0]} and {row['files'][1]}: correlation {row['all']:.3f} "
              f"(13-17s: {teens})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
