"""Logging set-up: readable lines on a terminal, JSON lines for journald."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: bool = False, log_format: str = "auto") -> None:
    """Log to stderr; ``auto`` picks JSON under systemd (``INVOCATION_ID`` set), text otherwise."""
    if log_format == "auto":
        log_format = "json" if os.environ.get("INVOCATION_ID") else "text"
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    show_native_logs(verbose)


# What MediaPipe, LiteRT and OpenCV print from native code (model-loading chatter, dozens of
# "Sparsity tensors may not yet be fully supported" lines) is held back unless --verbose.
_native_logs_shown = False
_holding = threading.RLock()  # one hold of file descriptor 2 at a time (nested ones in a thread are fine)


def show_native_logs(show: bool) -> None:
    """Let native libraries' stderr through (``agecheck -v``), or hold it back (the default)."""
    global _native_logs_shown
    _native_logs_shown = show


@contextlib.contextmanager
def native_stderr_held():
    """Hold back what native code writes to file descriptor 2 inside the block.

    C++ libraries write to the descriptor, not to ``sys.stderr``, so it is pointed at a
    temporary file for the block. If the block raises, what was held back is written out
    before the error travels on: a failure is never hidden. With `show_native_logs` on,
    nothing is held.
    """
    if _native_logs_shown:
        yield
        return
    # The descriptor is the process's: two threads holding it at once would each restore what
    # the other had put there, and stderr could stay pointed at a deleted file for good (a file
    # looping on its reader thread reopens while the loop's thread closes the detector).
    with _holding:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                held.seek(0)
                os.write(2, held.read())
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
