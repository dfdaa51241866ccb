"""A bench's outputs: its markdown table as ``OUT.md`` and its figures as ``OUT.json``.

These files go into ``docs/``, so they name files, never local paths (`public_settings`),
and ``OUT`` keeps any dots in its name (``paired_margin6.92``): the suffixes are appended.
Bad input ends a bench with one ``error: ...`` line (`run_bench`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edge_app.config import DEFAULT_AGE_MODEL
from edge_app.errors import AgecheckError


def photo_bench_parser(doc: str, per_source: int, model: bool = True) -> argparse.ArgumentParser:
    """The options every bench over validation photos takes: ``--data`` (repeatable), ``--per-source``,
    ``--seed``, ``--out`` and, unless ``model`` is False, one ``--model``; described by ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", action="append", required=True,
                        help="a dataset folder (repeat for several sources); its validation part is used")
    parser.add_argument("--per-source", type=int, default=per_source,
                        help="validation photos drawn per source (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="which photos are drawn, and every random choice")
    if model:
        parser.add_argument("--model", default=str(DEFAULT_AGE_MODEL), help="a .tflite age model with its card")
    parser.add_argument("--out", default=None, help="path without suffix for .md and .json")
    return parser


def public_settings(args: argparse.Namespace, *path_keys: str) -> dict:
    """``vars(args)`` with each of ``path_keys`` (a path, a list of paths or None) cut to file names."""
    settings = dict(vars(args))
    for key in path_keys:
        value = settings[key]
        if isinstance(value, (list, tuple)):
            settings[key] = [Path(v).name for v in value]
        elif value is not None:
            settings[key] = Path(value).name
    return settings


def write_report(out: str | Path | None, lines: list[str], result: dict, indent: int = 1) -> None:
    """Write ``lines`` to ``OUT.md`` and ``result`` to ``OUT.json``; nothing when ``out`` is None."""
    if out is None:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    Path(f"{out}.json").write_text(json.dumps(result, indent=indent) + "\n")


def run_bench(measure: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """``measure(args)``; bad input (`AgecheckError`) ends it with one ``error: ...`` line, exit status 1."""
    try:
        measure(args)
    except AgecheckError as error:
        raise SystemExit(f"error: {error}") from None
