"""Analytics events as MQTT payloads: a line crossing (`edged.crossing/1`, on <prefix>/<camera>/crossings/<line>)
and a zone entry, exit or loitering (`edged.zone/1`, on <prefix>/<camera>/zones/<zone>).

Built once from the frame's `SceneEvent`s (edged.analytics) and stored in the outbox as they are, like
every event: a replay sends the same bytes. `id` is stable and unique: "<device>:<camera>:<run>:x:<line>:
<track>:<frame>" for a crossing, "...:z:<zone>:<track>:<type>:<frame>" for a zone event, with `run` as in
detection events and an epoch when the camera's frame numbers start again (a restart of the camera).
crossing.schema.json and zone.schema.json in this package are the payloads' JSON Schemas.
"""

from __future__ import annotations

import threading
from typing import Any

from edged.analytics.events import SceneEvent
from edged.publish.event import RUN_ID, iso_utc_ms
from edged.types import Detection, FrameResult

CROSSING_SCHEMA_ID = "edged.crossing/1"
ZONE_SCHEMA_ID = "edged.zone/1"


def texts(d: Detection) -> list[str]:
    """What the later stages read on the detection (e.g. its plate), in chain order."""
    return [k.label for kids in d.children.values() for k in kids if k.label]


class SceneEventBuilder:
    def __init__(self, device: str, run_id: str = RUN_ID) -> None:
        self.device = device
        self.run_id = run_id
        self._last_seq: dict[str, int] = {}
        self._epoch: dict[str, int] = {}
        self._lock = threading.Lock()

    def _run(self, camera: str, seq: int) -> str:
        with self._lock:
            last = self._last_seq.get(camera)
            if last is not None and seq < last:  # the camera's frames count from 0 again
                self._epoch[camera] = self._epoch.get(camera, 0) + 1
            self._last_seq[camera] = seq
            epoch = self._epoch.get(camera, 0)
        return self.run_id if epoch == 0 else f"{self.run_id}.{epoch}"

    def build(self, ev: SceneEvent, result: FrameResult) -> dict[str, Any]:
        frame = result.frame
        camera = frame.camera
        run = self._run(camera, ev.seq)

        def wall(t: float) -> str:
            return iso_utc_ms(frame.t_wall - (ev.t - t))

        common: dict[str, Any] = {
            "device": self.device,
            "camera": camera,
            "track_id": ev.track_id,
            "label": ev.label,
            "seq": ev.seq,
            "captured_at": iso_utc_ms(frame.t_wall),
            "captured_ts": round(frame.t_wall, 3),
            "at_seq": ev.at_seq,
            "at": wall(ev.at_t),
            "point": [round(ev.point[0], 1), round(ev.point[1], 1)] if ev.point is not None else None,
            "speed_kmh": ev.speed_kmh,
            "texts": texts(ev.detection),
            "detection": ev.detection.to_dict(),
        }
        if ev.kind == "crossing":
            return {
                "schema": CROSSING_SCHEMA_ID,
                "id": f"{self.device}:{camera}:{run}:x:{ev.name}:{ev.track_id}:{ev.at_seq}",
                "type": "crossing",
                "line": ev.name,
                "direction": ev.direction,
                **common,
                "counts": dict(ev.counts),
            }
        out = {
            "schema": ZONE_SCHEMA_ID,
            "id": f"{self.device}:{camera}:{run}:z:{ev.name}:{ev.track_id}:{ev.kind}:{ev.at_seq}",
            "type": ev.kind,
            "zone": ev.name,
            **common,
            "since": wall(ev.since_t) if ev.since_t is not None else None,
            "dwell_s": ev.dwell_s,
            "occupancy": {"total": sum(ev.occupancy.values()), "by_label": dict(ev.occupancy)},
        }
        if ev.reason is not None:
            out["reason"] = ev.reason
        return out
