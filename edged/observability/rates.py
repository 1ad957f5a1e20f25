"""Per-camera rates that say what they mean: `source_fps`, `processed_fps` and `drop_ratio`, all three
from the same counters over the same window, so `processed_fps <= source_fps` always.

- `source_fps`: frames the source delivered per second, counted as they leave the camera: processed,
  skipped by motion gating, or dropped (replaced by a newer frame before the chain took them, or
  failed in it). The few frames still in the camera (its slot, its frames in flight) are counted a
  moment later, when they leave;
- `processed_fps`: frames that went through the whole chain per second;
- `drop_ratio`: the share of the frames delivered in the window that were dropped, 0..1.

They come from the cumulative counters in a camera's status (`frames_processed`, `frames_skipped`,
`drops`) over a sliding window of about WINDOW_S seconds: every read adds a sample, and the rates are
taken against the oldest sample still in the window (or the newest one before it, when reads are
further apart than the window). Readers are the HTTP thread (/stats, /metrics), the stats publisher
and the main loop (Home Assistant), hence the lock. `reset()` (at each camera start) starts the
window at zero, so the first read already averages since the start. The capture's own measure of
its hand-off rate over the last 5 s stays in the status as `fps`.

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
        self.samples: deque[tuple[float, int, int, int]] = deque([(now, 0, 0, 0)])

    def read(self, now: float, processed: int, skipped: int, dropped: int) -> tuple[float, float, float]:
        """(source_fps, processed_fps, drop_ratio) over the window."""
        last = self.samples[-1]
        if processed < last[1] or skipped < last[2] or dropped < last[3]:  # counters restarted
            self.samples.clear()
        self.samples.append((now, processed, skipped, dropped))
        # Keep one sample at or before the window's start as the base.
        while len(self.samples) > 2 and self.samples[1][0] <= now - WINDOW_S:
            self.samples.popleft()
        t0, p0, s0, d0 = self.samples[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0, 0.0
        dp, dd = processed - p0, dropped - d0
        delivered = dp + (skipped - s0) + dd  # every frame that left the camera in the window
        return delivered / dt, dp / dt, (dd / delivered if delivered > 0 else 0.0)


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
        skipped = int(status.get("frames_skipped") or 0)
        dropped = int(sum((status.get("drops") or {}).values()))
        with self._lock:
            meter = self._meters.get(camera)
            if meter is None:
                meter = self._meters[camera] = _Meter(self.clock())
            source, fps, ratio = meter.read(self.clock(), processed, skipped, dropped)
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
                "edged_camera_source_fps",
                f"Frames per second the source delivers (last {WINDOW_S:g} s)",
                labels=["camera"],
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
