"""Per-camera rates that say what they mean: `source_fps`, `processed_fps` and `drop_ratio`.

- `source_fps`: frames the source delivers per second (the capture's own measurement);
- `processed_fps`: frames that went through the whole chain per second;
- `drop_ratio`: the share of delivered frames that were not processed (replaced by a newer frame, or
  failed), 0..1.

The last two are computed from the cumulative counters in a camera's status (`frames_processed`,
`drops`) over a sliding window of about WINDOW_S seconds: every read adds a sample, and the rate is
taken against the oldest sample still in the window (or the newest one before it, when reads are
further apart than the window). Readers are the HTTP thread (/stats, /metrics), the stats publisher
and the main loop (Home Assistant), hence the lock. `reset()` (at each camera start) starts the
window at zero, so the first read already averages since the start.

Also a prometheus collector that serves the three numbers as gauges, computed at scrape time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

WINDOW_S = 10.0


class _Meter:
    def __init__(self, now: float) -> None:
        self.samples: deque[tuple[float, int, int]] = deque([(now, 0, 0)])

    def read(self, now: float, processed: int, dropped: int) -> tuple[float, float]:
        last = self.samples[-1]
        if processed < last[1] or dropped < last[2]:  # counters restarted: start a new window
            self.samples.clear()
        self.samples.append((now, processed, dropped))
        # Keep one sample at or before the window's start as the base.
        while len(self.samples) > 2 and self.samples[1][0] <= now - WINDOW_S:
            self.samples.popleft()
        t0, p0, d0 = self.samples[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0
        dp, dd = processed - p0, dropped - d0
        return dp / dt, (dd / (dp + dd) if dp + dd > 0 else 0.0)


class CameraRates:
    """The three numbers per camera, added to each camera's status dict by `with_rates`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._meters: dict[str, _Meter] = {}

    def reset(self, camera: str) -> None:
        with self._lock:
            self._meters[camera] = _Meter(self.clock())

    def with_rates(self, camera: str, status: dict[str, Any]) -> dict[str, Any]:
        """`status` (a CameraRunner.status()) plus source_fps, processed_fps and drop_ratio."""
        processed = int(status.get("frames_processed") or 0)
        dropped = int(sum((status.get("drops") or {}).values()))
        with self._lock:
            meter = self._meters.get(camera)
            if meter is None:
                meter = self._meters[camera] = _Meter(self.clock())
            fps, ratio = meter.read(self.clock(), processed, dropped)
        source = float(status.get("source_fps", status.get("fps")) or 0.0)
        return {
            **status,
            "source_fps": round(source, 2),
            "processed_fps": round(fps, 2),
            "drop_ratio": round(ratio, 3),
        }


class RatesCollector(Collector):
    """edged_camera_{source,processed}_fps and edged_camera_drop_ratio, read at scrape time."""

    def __init__(self, cameras: Callable[[], dict[str, dict[str, Any]]], names: Callable[[], Iterable[str]]):
        self.cameras = cameras  # camera -> status with rates (only running cameras)
        self.names = names  # every configured camera, so stopped ones show 0 instead of vanishing
        # A status that read counters back through registry.get_sample_value would walk every
        # collector, this one included: such a nested walk must not compute the statuses again.
        self._inside = threading.local()

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        if getattr(self._inside, "active", False):
            return
        self._inside.active = True
        try:
            cams = self.cameras()
        finally:
            self._inside.active = False
        families = {
            "source_fps": GaugeMetricFamily(
                "edged_camera_source_fps", "Frames per second the source delivers", labels=["camera"]
            ),
            "processed_fps": GaugeMetricFamily(
                "edged_camera_processed_fps",
                f"Frames per second through the whole chain (last {WINDOW_S:g} s)",
                labels=["camera"],
            ),
            "drop_ratio": GaugeMetricFamily(
                "edged_camera_drop_ratio",
                f"Share of delivered frames not processed, 0..1 (last {WINDOW_S:g} s)",
                labels=["camera"],
            ),
        }
        for name in self.names():
            st = cams.get(name, {})
            for key, family in families.items():
                family.add_metric([name], float(st.get(key) or 0.0))
        yield from families.values()
