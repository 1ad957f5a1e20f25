"""Which frames a camera takes, when a realtime file's frame is due, and the jittered reconnect delay.

Pure helpers of `edged.capture.worker` (no threads, no I/O): `Pacer` is owned and called by one
camera's capture thread only.
"""

from __future__ import annotations

import random

# Live sources: a frame this early (fraction of the interval) still counts as on time (clock jitter).
LIVE_SLACK = 0.2
# Realtime file playback further behind than this re-anchors instead of bursting to catch up.
MAX_LAG_S = 1.0


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """The backoff `delay` spread over [delay/2, delay]: cameras that failed together (a switch or an RTSP
    server restarting) do not all reopen at the same instant."""
    return delay * (0.5 + 0.5 * (rng or random).random())


class Pacer:
    """Decides which frames are taken, and when a realtime file's frame is due."""

    def __init__(self, fps: float, nominal_fps: float | None, live: bool) -> None:
        self.live = live
        self.interval = 1.0 / fps
        # A file without a known rate plays at the configured fps, one image per interval.
        self.rate = nominal_fps or fps
        self.ratio = min(1.0, fps / self.rate)
        self._last_bucket = -1
        self._next_due: float | None = None
        self._t0: float | None = None

    def take(self, index: int, now: float) -> bool:
        if self.live:
            if self._next_due is None:
                self._next_due = now
            if now < self._next_due - LIVE_SLACK * self.interval:
                return False
            self._next_due += self.interval
            if self._next_due < now:  # the source paused: restart the grid instead of bursting
                self._next_due = now + self.interval
            return True
        # Integer buckets of the output rate; the epsilon keeps 3 * (1/3) from landing in bucket 0.
        bucket = int(index * self.ratio + 1e-9)
        if bucket == self._last_bucket:
            return False
        self._last_bucket = bucket
        return True

    def due(self, index: int, now: float) -> float:
        """Monotonic time at which a realtime file shows frame `index`."""
        if self._t0 is None or now - (self._t0 + index / self.rate) > MAX_LAG_S:
            self._t0 = now - index / self.rate
        return self._t0 + index / self.rate
