"""What the status page plots: a short in-memory history per camera (its recent events: publish/recent.py).

`History` keeps, per camera, one point per `interval_s` (default 10 s) for `span_s` (default an hour):
processed frames per second and the p50/p99 of the capture-to-result latency over that interval. The
open interval is reported too (over the time it has run so far), so the plot has a point from the
first frame on. Nothing is persisted: a restart starts an empty plot.

Threading: `record()` runs on camera pipeline threads (an append under a lock, nothing
else, so the per-frame path stays cheap); `columns()` runs on HTTP threads. Intervals are closed
lazily by whichever call comes next, so there is no thread of its own.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edged.types import FrameResult

MAX_SAMPLES = 4096  # latency samples kept per interval (a uniform sample beyond it)


@dataclass
class _Camera:
    start: float  # wall time the open interval began
    count: int = 0
    samples: list[float] = field(default_factory=list)
    points: deque[tuple[float, float, float | None, float | None]] = field(default_factory=deque)


def _point(
    t: float, count: int, samples: list[float], seconds: float
) -> tuple[float, float, float | None, float | None]:
    fps = count / seconds if seconds > 0 else 0.0
    if not samples:
        return (round(t, 1), round(fps, 3), None, None)
    p50, p99 = np.percentile(np.asarray(samples, dtype=np.float64), [50, 99])
    return (round(t, 1), round(fps, 3), round(float(p50), 2), round(float(p99), 2))


class History:
    def __init__(
        self, interval_s: float = 10.0, span_s: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.interval_s = interval_s
        self.points = max(1, int(span_s // interval_s))
        self.clock = clock
        self._cams: dict[str, _Camera] = {}
        self._lock = threading.Lock()

    def record(self, result: FrameResult) -> None:
        """One processed frame (pipeline thread)."""
        latency = result.latency_ms.get("total")
        now = self.clock()
        with self._lock:
            cam = self._cams.get(result.frame.camera)
            if cam is None:
                cam = self._cams[result.frame.camera] = _Camera(start=now)
            self._roll(cam, now)
            cam.count += 1
            if latency is not None:
                if len(cam.samples) < MAX_SAMPLES:
                    cam.samples.append(float(latency))
                else:  # reservoir sampling keeps the percentiles honest at any frame rate
                    j = random.randrange(cam.count)
                    if j < MAX_SAMPLES:
                        cam.samples[j] = float(latency)

    def _roll(self, cam: _Camera, now: float) -> None:
        elapsed = int((now - cam.start) // self.interval_s)
        if elapsed <= 0:
            return
        end = cam.start + self.interval_s
        cam.points.append(_point(end, cam.count, cam.samples, self.interval_s))
        # Intervals with no frame at all are points too: the plot must show the camera at 0 fps.
        for i in range(1, min(elapsed, self.points)):
            cam.points.append((round(end + i * self.interval_s, 1), 0.0, None, None))
        while len(cam.points) > self.points:
            cam.points.popleft()
        cam.start += elapsed * self.interval_s
        cam.count, cam.samples = 0, []

    def columns(self) -> dict[str, Any]:
        """{"interval_s", "span_s", "cameras": {name: {"t": [...], "processed_fps": [...], "p50_ms": [...],
        "p99_ms": [...]}}}: columns, oldest first, the last one being the open interval."""
        now = self.clock()
        out: dict[str, Any] = {}
        with self._lock:
            for name, cam in self._cams.items():
                self._roll(cam, now)
                pts = list(cam.points)
                open_s = now - cam.start
                if open_s >= 1.0 or not pts:
                    pts.append(_point(now, cam.count, cam.samples, max(open_s, 1e-3)))
                out[name] = {
                    "t": [p[0] for p in pts],
                    "processed_fps": [p[1] for p in pts],
                    "p50_ms": [p[2] for p in pts],
                    "p99_ms": [p[3] for p in pts],
                }
        return {"interval_s": self.interval_s, "span_s": self.interval_s * self.points, "cameras": out}
