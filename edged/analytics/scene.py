"""One camera's scene analytics: its lines, zones and ground calibration over the tracker's output.

`SceneAnalytics.update()` takes a frame's tracked detections (`attrs["track_id"]`, from
edged.pipeline.tracker), the ids of the tracks that ended on it and the frame's time, and returns the
frame's `SceneEvent`s: line crossings (counted in the daemon's `LineCounts`), zone entries, exits and
loitering. It keeps per track only what these need: how often it was detected, its latest detection,
the first frame it went undetected, its recent ground positions for the speed.

Time is seconds on the camera's clock (the runner passes capture time, or frame number / fps for files
read faster than real time), so dwell and speed follow the video, not the processing.

Threads: `update` runs on the camera's delivery lane, one frame at a time in capture order; `status`,
`occupancy` and `shapes` are read from HTTP and metrics threads and only touch copies that
`update` replaces whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edged.analytics.counts import LineCounts
from edged.analytics.events import SceneEvent
from edged.analytics.geometry import Point, anchor_point
from edged.analytics.lines import Crossing, Line
from edged.analytics.speed import GroundMap, SpeedTrack
from edged.analytics.zones import Zone, ZoneChange
from edged.config.analytics import DIRECTIONS, AnalyticsConfig, frame_problems
from edged.observability.snapshot import Shape
from edged.types import Detection

log = logging.getLogger(__name__)

SPEED_ANCHOR = "bottom_center"  # where a box meets the ground plane the calibration describes


@dataclass
class _Seen:
    label: str
    last: Detection
    hits: int = 0
    gone: tuple[int, float] | None = None  # (seq, t) of the first frame it went undetected
    speed: SpeedTrack | None = None


@dataclass
class _Snapshot:
    """What readers on other threads see: replaced whole after each update."""

    occupancy: dict[str, dict[str, int]] = field(default_factory=dict)
    tracks: int = 0


class SceneAnalytics:
    def __init__(self, camera: str, cfg: AnalyticsConfig, counts: LineCounts) -> None:
        self.camera = camera
        self.cfg = cfg
        self.counts = counts
        self.lines = [Line(n, c) for n, c in cfg.lines.items()]
        self.zones = [Zone(n, c) for n, c in cfg.zones.items()]
        self.ground = GroundMap(cfg.calibration) if cfg.calibration is not None else None
        self.problems: list[str] = []  # found at the first frame (its size), shown in /stats
        self._size: tuple[int, int] | None = None
        self._tracks: dict[int, _Seen] = {}
        self._anchors = sorted({ln.cfg.anchor for ln in self.lines} | {z.cfg.anchor for z in self.zones})
        self._snap = _Snapshot({z.name: z.occupancy() for z in self.zones})
        self.frames = 0
        self.cost_s = 0.0  # host CPU time of update(), summed (status() gives the mean per frame)
        counts.configure(camera, [ln.name for ln in self.lines])

    # --- the per-frame work ---------------------------------------------------------------------

    def update(
        self,
        detections: Sequence[Detection],
        seq: int,
        t: float,
        ended: Iterable[int] = (),
        frame_size: tuple[int, int] | None = None,
        held: bool = False,
    ) -> list[SceneEvent]:
        """The events of frame `seq` (time `t`, seconds): `detections` are the tracked top-level ones,
        `ended` the tracks the tracker ended on this frame, `frame_size` (width, height); `held`: the
        detector did not run on it (motion gating), so tracks without a detection were not missed."""
        start = time.thread_time()  # host CPU of this thread: what the analytics cost, waits aside
        if frame_size is not None and frame_size != self._size:
            self._check_size(frame_size)
        events: list[SceneEvent] = []
        tracked = [d for d in detections if isinstance(d.attrs.get("track_id"), int)]
        ground = self._ground_points(tracked)
        present: set[int] = set()
        for i, det in enumerate(tracked):
            tid: int = det.attrs["track_id"]
            present.add(tid)
            seen = self._tracks.get(tid)
            if seen is None:
                seen = self._tracks[tid] = _Seen(det.label, det)
                if self.ground is not None:
                    seen.speed = SpeedTrack(self.cfg.speed_window_s)
            seen.last, seen.hits, seen.gone = det, seen.hits + 1, None
            if seen.speed is not None:
                seen.speed.add(t, ground[i])
            anchors = {a: anchor_point(det.box, a) for a in self._anchors}
            for line in self.lines:
                if line.wants(seen.label):
                    for c in line.observe(tid, seen.hits, anchors[line.cfg.anchor], seq, t):
                        events.append(self._crossing_event(line, c, seen, seq, t))
            for zone in self.zones:
                if zone.wants(seen.label):
                    change = zone.observe(tid, seen.label, anchors[zone.cfg.anchor], seq, t)
                    if change is not None:
                        events.append(self._zone_event(zone, change, seen, seq, t))
        if not held:
            for tid, seen in self._tracks.items():
                if tid not in present and seen.gone is None:
                    seen.gone = (seq, t)
        for zone in self.zones:
            for change in zone.loiterers(seq, t):
                events.append(self._zone_event(zone, change, self._tracks[change.track_id], seq, t))
        for tid in ended:
            gone = self._tracks.pop(tid, None)
            if gone is None:
                continue
            for line in self.lines:
                line.forget(tid)
            for zone in self.zones:
                change = zone.end(tid, gone.gone or (seq, t))
                if change is not None:
                    events.append(self._zone_event(zone, change, gone, seq, t))
        self._snap = _Snapshot({z.name: z.occupancy() for z in self.zones}, len(self._tracks))
        self.frames += 1
        self.cost_s += time.thread_time() - start
        return events

    def _ground_points(self, tracked: Sequence[Detection]) -> list[Point]:
        if self.ground is None or not tracked:
            return []
        return self.ground.to_ground([anchor_point(d.box, SPEED_ANCHOR) for d in tracked])

    def _crossing_event(self, line: Line, c: Crossing, seen: _Seen, seq: int, t: float) -> SceneEvent:
        totals = self.counts.add(self.camera, line.name, c.direction, seen.label)
        return SceneEvent(
            "crossing",
            line.name,
            c.track_id,
            seen.label,
            seq,
            t,
            c.at_seq,
            c.at_t,
            seen.last,
            direction="in" if c.direction == "in" else "out",
            point=c.point,
            speed_kmh=_speed(seen, c.at_t),
            counts=totals,
        )

    def _zone_event(self, zone: Zone, ch: ZoneChange, seen: _Seen, seq: int, t: float) -> SceneEvent:
        # The speed going in (over the window before the entry), going out (before the exit), or now.
        at = t if ch.kind == "loiter" else ch.at_t
        return SceneEvent(
            ch.kind,
            zone.name,
            ch.track_id,
            seen.label,
            seq,
            t,
            ch.at_seq,
            ch.at_t,
            seen.last,
            point=anchor_point(seen.last.box, zone.cfg.anchor),
            since_t=ch.since_t,
            dwell_s=round(ch.dwell_s, 3),
            speed_kmh=_speed(seen, at),
            reason=ch.reason,
            occupancy=zone.occupancy(),
        )

    def _check_size(self, size: tuple[int, int]) -> None:
        """Lines or zones outside the frame: one log line (the config could not know the frame size)."""
        self._size = size
        found = frame_problems(self.cfg, *size)
        self.problems = [f"analytics.{'.'.join(str(p) for p in loc)}: {msg}" for loc, msg in found]
        if self.problems:
            log.warning(
                "camera %s: %d analytics problem(s) with its %dx%d frames (set the camera's width and "
                "height for check-config to find them): %s",
                self.camera,
                len(self.problems),
                size[0],
                size[1],
                "; ".join(self.problems),
            )

    # --- what the daemon reads ----------------------------------------------------------------

    def reset(self, line: str | None = None) -> list[str]:
        """Zero this camera's line counts (or one line's); the names reset."""
        return self.counts.reset(self.camera, line)

    def occupancy(self) -> dict[str, dict[str, int]]:
        return self._snap.occupancy

    def status(self) -> dict[str, Any]:
        """For /stats, the status page and Home Assistant: counts, occupancy, geometry, cost."""
        counts = self.counts.lines(self.camera)
        occupancy = self._snap.occupancy
        return {
            "lines": {
                ln.name: {
                    **counts.get(ln.name, {"in": 0, "out": 0, "by_label": {}, "since": None}),
                    "in_direction": ln.cfg.in_direction,
                    "points": [list(p) for p in ln.points],
                }
                for ln in self.lines
            },
            "zones": {
                z.name: {
                    "occupancy": sum(occupancy.get(z.name, {}).values()),
                    "by_label": occupancy.get(z.name, {}),
                    "points": [list(p) for p in z.polygon],
                }
                for z in self.zones
            },
            "calibrated": self.ground is not None,
            "tracks": self._snap.tracks,
            "cost_ms": round(1000 * self.cost_s / self.frames, 3) if self.frames else None,
            "problems": list(self.problems),
        }

    def shapes(self) -> list[Shape]:
        """The lines with their counts and the zones with their occupancy, to draw on the snapshot."""
        counts = self.counts.lines(self.camera)
        occupancy = self._snap.occupancy
        out = [
            Shape(
                tuple(ln.points),
                False,
                f"{ln.name}: in {counts.get(ln.name, {}).get('in', 0)} out {counts.get(ln.name, {}).get('out', 0)}",
                DIRECTIONS[ln.cfg.in_direction],
            )
            for ln in self.lines
        ]
        out += [
            Shape(tuple(z.polygon), True, f"{z.name}: {sum(occupancy.get(z.name, {}).values())} inside")
            for z in self.zones
        ]
        return out


def _speed(seen: _Seen, at: float) -> float | None:
    if seen.speed is None:
        return None
    kmh = seen.speed.kmh(at)
    return round(kmh, 2) if kmh is not None else None
