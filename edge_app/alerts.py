"""Where events go: a JSON-lines file (rotated by size) and the log. No images, ever."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger("agecheck.events")


class EventSink(Protocol):
    """Anything that takes event records (dicts already holding time fields)."""

    def send(self, record: dict) -> None:
        """Deliver one event record."""


class LogSink:
    """Alerts, track ends and the till's conditions as log lines (journald keeps them on a kiosk)."""

    def send(self, record: dict) -> None:  # noqa: D102
        if record["type"] in ("alert", "acknowledged", "track_end", "condition_began", "condition_ended"):
            log.info("%s", json.dumps(record, sort_keys=True))


class JsonlSink:
    """One JSON object per line, flushed per event, rotated past ``max_bytes``.

    Rotation renames ``events.jsonl`` to ``events.jsonl.1`` (``.1`` to ``.2``, ...), keeping
    ``backups`` old files, so a kiosk's disk never fills. ``max_bytes=0`` never rotates.
    """

    def __init__(self, path: str | Path, max_bytes: int = 0, backups: int = 3) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            from edge_app.errors import AgecheckError

            raise AgecheckError(f"events path {self.path} is a directory; expected a file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups = max_bytes, backups
        self._file = open(self.path, "a", encoding="utf-8")

    def send(self, record: dict) -> None:  # noqa: D102
        line = json.dumps(record, sort_keys=True) + "\n"
        if self.max_bytes and self._file.tell() + len(line) > self.max_bytes and self._file.tell() > 0:
            self._rotate()
        self._file.write(line)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink()
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        """Flush and close."""
        self._file.close()


def event_record(event, threshold_age: float, margin_years: float, live: bool) -> dict:
    """An `Event` as a JSON-ready dict with video time (files) or wall time (live)."""
    record = event.to_dict(threshold_age, margin_years)
    if live:
        record["wall_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    else:
        record["video_time_s"] = round(event.timestamp_ms / 1000, 3)
    return record
