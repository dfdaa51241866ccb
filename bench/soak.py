"""Soak: `agecheck run --loop` for a long time, sampling its memory and frame rate.

    python bench/soak.py [--minutes 20] [--clip samples/...gif] [--every-s 10] [--out docs/soak]

A kiosk runs for weeks: memory must not creep and the frame rate must hold. This starts the
real command as a subprocess (looping the clip, no window), reads its resident memory from
/proc every ``--every-s`` seconds and its frame rate from the STATUS lines it sends to a
systemd notify socket that this script holds, then stops it with SIGTERM. It prints a
Markdown summary and writes ``OUT.json`` (every sample) and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from edge_app.config import DEFAULT_SAMPLE_CLIP  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--clip", default=str(DEFAULT_SAMPLE_CLIP))
    parser.add_argument("--every-s", type=float, default=10)
    parser.add_argument("--warm-up-s", type=float, default=60)
    parser.add_argument("--out", default=None, help="path without suffix for .json and .md")
    args = parser.parse_args()
    if args.minutes * 60 < args.warm_up_s + 2 * args.every_s:
        parser.error(f"--minutes {args.minutes:g} leaves no two samples after the {args.warm_up_s:g} s warm-up "
                     f"(one every {args.every_s:g} s); expected at least "
                     f"{(args.warm_up_s + 2 * args.every_s) / 60:.2f} minutes or a shorter --warm-up-s")
    with tempfile.TemporaryDirectory() as tmp:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(Path(tmp) / "notify.sock"))
        notify.settimeout(0.2)
        env = dict(os.environ, NOTIFY_SOCKET=str(Path(tmp) / "notify.sock"), WATCHDOG_USEC="10000000")
        errors = open(Path(tmp) / "stderr.txt", "w+")  # noqa: SIM115 (read back if the run ends by itself)
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_app", "run", "--source", args.clip, "--loop", "--no-display"],
            env=env, stdout=subprocess.DEVNULL, stderr=errors,
        )
        samples, fps, started = [], None, time.monotonic()
        next_sample = started + args.every_s
        try:
            while time.monotonic() - started < args.minutes * 60:
                try:
                    message = notify.recv(4096).decode()
                    match = re.search(r"STATUS=([\d.]+) fps", message)
                    if match:
                        fps = float(match.group(1))
                except TimeoutError:
                    pass
                if process.poll() is not None:
                    errors.seek(0)
                    said = [line.strip() for line in errors if line.strip()]
                    raise SystemExit(f"error: agecheck run ended by itself with code {process.returncode}"
                                     + (f": {said[-1]}" if said else ""))
                if time.monotonic() >= next_sample:
                    samples.append({"t_s": round(time.monotonic() - started, 1),
                                    "rss_mb": round(rss_mb(process.pid), 1), "fps": fps})
                    next_sample += args.every_s
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            errors.close()
    warm = [s for s in samples if s["t_s"] >= args.warm_up_s]
    if not any(s["fps"] is not None for s in warm):
        raise SystemExit("error: agecheck run sent no STATUS line with a frame rate after the warm-up; "
                         "expected one every few seconds (see `agecheck run --source CLIP --loop`)")
    first, last = warm[0], warm[-1]
    peak = max(s["rss_mb"] for s in warm)
    fps_values = [s["fps"] for s in warm if s["fps"] is not None]
    growth = (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"]
    summary = {
        "minutes": args.minutes, "clip": Path(args.clip).name, "samples": len(samples), "exit_code": code,
        "rss_after_warm_up_mb": first["rss_mb"], "rss_at_end_mb": last["rss_mb"], "rss_peak_mb": peak,
        "rss_growth_after_warm_up": round(growth, 4),
        "fps_min": min(fps_values), "fps_max": max(fps_values),
        "fps_first_warm": fps_values[0], "fps_last": fps_values[-1],
    }
    lines = [
        f"`agecheck run --source {Path(args.clip).name} --loop --no-display` for {args.minutes:g} minutes "
        f"(sampled every {args.every_s:g} s; warm-up {args.warm_up_s:g} s; SIGTERM exit code {code}):",
        "",
        "| | after warm-up | at the end | peak / range |",
        "| --- | ---: | ---: | ---: |",
        f"| resident memory (MB) | {first['rss_mb']:.1f} | {last['rss_mb']:.1f} | peak {peak:.1f} |",
        f"| processing fps (its STATUS line) | {fps_values[0]:.1f} | {fps_values[-1]:.1f} "
        f"| {min(fps_values):.1f}–{max(fps_values):.1f} |",
        "",
        f"Memory growth after warm-up: {growth:+.1%}.",
    ]
    print("\n".join(lines))
    write_report(args.out, lines, {"summary": summary, "samples": samples})


if __name__ == "__main__":
    main()
