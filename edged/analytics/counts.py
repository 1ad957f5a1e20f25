"""Crossing counts per camera, line, direction and label: kept by the daemon, read by /metrics, /stats,
the status page and Home Assistant, zeroed by the reset command.

One `LineCounts` per daemon (the supervisor's), handed to each camera's analytics: a camera restarted
by a reload keeps the counts of the lines it still has. Counts are not persisted: they start at zero
with the process (Home Assistant's `total_increasing` sensors and Prometheus' increase() take a reset
to zero as a new cycle). Threads: `add` runs on the cameras' delivery threads, `reset` on the main loop,
the readers on HTTP threads; one lock guards it all (each call is a few dict operations).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

DIRECTIONS = ("in", "out")


class LineCounts:
    def __init__(self, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        # camera -> line -> direction -> label -> count
        self._counts: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
        self._since: dict[str, dict[str, float]] = {}  # camera -> line -> wall time counting started

    def configure(self, camera: str, lines: Iterable[str]) -> None:
        """The camera's lines (at its start): new ones start at zero, ones no longer configured go."""
        names = list(lines)
        now = self._clock()
        with self._lock:
            old = self._counts.get(camera, {})
            self._counts[camera] = {n: old.get(n) or {d: {} for d in DIRECTIONS} for n in names}
            since = self._since.get(camera, {})
            self._since[camera] = {n: since.get(n, now) for n in names}
            if not names:
                self._counts.pop(camera, None)
                self._since.pop(camera, None)

    def add(self, camera: str, line: str, direction: str, label: str) -> dict[str, int]:
        """Count one crossing; the line's totals per direction after it."""
        with self._lock:
            per = self._counts.setdefault(camera, {}).setdefault(line, {d: {} for d in DIRECTIONS})
            per[direction][label] = per[direction].get(label, 0) + 1
            return {d: sum(per[d].values()) for d in DIRECTIONS}

    def reset(self, camera: str, line: str | None = None) -> list[str]:
        """Zero the camera's lines (or one of them); the names reset ([] if none matched)."""
        now = self._clock()
        with self._lock:
            lines = self._counts.get(camera, {})
            names = [n for n in lines if line is None or n == line]
            for n in names:
                lines[n] = {d: {} for d in DIRECTIONS}
                self._since[camera][n] = now
            return names

    def lines(self, camera: str) -> dict[str, dict[str, Any]]:
        """line -> {"in": n, "out": m, "by_label": {label: {"in": .., "out": ..}}, "since": wall time}."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for name, per in self._counts.get(camera, {}).items():
                labels = sorted(set(per["in"]) | set(per["out"]))
                out[name] = {
                    "in": sum(per["in"].values()),
                    "out": sum(per["out"].values()),
                    "by_label": {lb: {d: per[d].get(lb, 0) for d in DIRECTIONS} for lb in labels},
                    "since": self._since.get(camera, {}).get(name),
                }
            return out

    def samples(self) -> list[tuple[str, str, str, int]]:
        """(camera, line, direction, total) of every configured line."""
        with self._lock:
            return [
                (cam, line, d, sum(per[d].values()))
                for cam, lines in self._counts.items()
                for line, per in lines.items()
                for d in DIRECTIONS
            ]


class AnalyticsCollector(Collector):
    """/metrics: `edged_line_crossings_total{camera,line,direction}` from the counts (every configured
    line at zero from the start) and `edged_zone_objects{camera,zone,label}` from the cameras' zones."""

    def __init__(self, counts: LineCounts, occupancy: Any) -> None:
        self.counts = counts
        self.occupancy = occupancy  # () -> {camera: {zone: {label: objects inside}}}

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        crossings = CounterMetricFamily(
            "edged_line_crossings",
            "Tracks that crossed a line, per direction (since start or the last reset command)",
            labels=["camera", "line", "direction"],
        )
        for cam, line, direction, n in self.counts.samples():
            crossings.add_metric([cam, line, direction], n)
        yield crossings
        objects = GaugeMetricFamily(
            "edged_zone_objects",
            "Tracked objects inside a zone, per label",
            labels=["camera", "zone", "label"],
        )
        for cam, zones in self.occupancy().items():
            for zone, labels in zones.items():
                for label, n in labels.items():
                    objects.add_metric([cam, zone, label], n)
        yield objects
