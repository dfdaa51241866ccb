"""How a model holds off its training distribution: clean and every degradation, per source.

    python bench/robustness.py --model models/age_resnet50_int8.tflite \\
        --data ../shared/datasets/utkface --data ../shared/datasets/appa-real --data ../shared/datasets/aaf \\
        --out docs/model/robustness [--max-images 600] [--label NAME]

Runs `agecheck evaluate --split val --degrade NAME` (the same function) for the clean photos
and each corruption of `training.degrade`, and writes ``OUT.json`` and ``OUT.md``: MAE,
bias and the key figure (13-17 flagged when 10% of 25+ are) per corruption, overall and per
source, and the share of photos where the detector found no face. Clean uses every validation
photo; each corruption a seeded sample of at most ``--max-images`` per source (the same
photos for every corruption), as a 2-core CPU allows. Predictions (file names) go to a
temporary folder, never into the project.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import run_bench, write_report  # noqa: E402
from training.degrade import DEGRADATIONS  # noqa: E402
from training.evaluate import cell, evaluate  # noqa: E402


def row(label: str, report: dict, sources: list[str]) -> str:
    e, k = report["errors"], report["key"]
    cells = [label, str(report["scored"]), f"{report['no_face'] / report['scored']:.1%}", f"{e['mae']:.2f}",
             f"{e['bias']:+.2f}", cell(k["age_13_17_flagged"], ".0%")]
    by_source = report.get("by_source", {})
    for name in sources:
        s = by_source.get(name)
        cells += ["–", "–"] if s is None else [f"{s['errors']['mae']:.2f}", cell(s["key"]["age_13_17_flagged"], ".0%")]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--out", required=True, help="path without suffix; .json and .md are written")
    parser.add_argument("--max-images", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default=None, help="the model's name in the table")
    parser.add_argument("--only", nargs="*", default=None, help="a subset of the degradations")
    run_bench(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    """Everything after the arguments: the measurements, the printed and written tables."""
    names = args.only if args.only is not None else list(DEGRADATIONS)
    results, sources = {}, [Path(d).name for d in args.data]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["none", *names]:
            started = time.monotonic()
            report = evaluate(
                args.model, args.data, Path(tmp) / "p.csv", Path(tmp) / "r.json", split="val",
                degradation=None if name == "none" else name, seed=args.seed,
                max_images=0 if name == "none" else args.max_images,
            )
            keep = ("scored", "no_face", "errors", "key", "policy", "by_source", "degradation")
            results[name] = {k: report[k] for k in keep if k in report}
            print(f"{name}: MAE {report['errors']['mae']:.2f}, bias {report['errors']['bias']:+.2f}, key "
                  f"{cell(report['key']['age_13_17_flagged'], '.0%')} ({time.monotonic() - started:.0f} s)", flush=True)
    label = args.label or Path(args.model).name
    header = ["condition", "photos", "no face found†", "MAE", "bias", "13–17 flagged*"]
    for name in sources:
        header += [f"{name} MAE", f"{name} 13–17*"]
    lines = [
        f"`{label}` on the validation parts of {', '.join(sources)}; clean: every photo; each corruption: "
        f"a seeded sample of at most {args.max_images} photos per source (seed {args.seed}).",
        "",
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in header[1:]) + " |",
    ]
    lines += [row("clean" if name == "none" else name, r, sources) for name, r in results.items()]
    lines += ["", "\\* 13–17 flagged when the cut flags 10% of adults 25+ (the product's key figure).",
              "† the detector found no face in the corrupted photo; it is scored whole (as an already-cropped "
              "photo), where the app would give no estimate at all."]
    write_report(args.out, lines, {"model": label, "max_images": args.max_images, "seed": args.seed,
                                   "results": results}, indent=2)
    print(f"wrote {args.out}.md and {args.out}.json")


if __name__ == "__main__":
    main()
