"""The frame rate of the last few seconds, as the cashier's window and the STATUS line show it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RecentRate:
    """Frames per second over the last ``window_s`` seconds.

    The run's `Summary.processing_fps` averages over its whole life: after a week a
    kiosk's slowdown would barely move it. The frame loop ticks one of these per frame and
    hands its rate to the overlay's corner and to `FrameStats.recent_fps` (the STATUS line).
    """

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self._clock = window_s, clock
        self._times: deque[float] = deque()

    def tick(self) -> float:
        """Count one frame now; returns the recent rate (0 until two frames were seen)."""
        now = self._clock()
        self._times.append(now)
        while now - self._times[0] > self.window_s:
            self._times.popleft()
        span = now - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0
