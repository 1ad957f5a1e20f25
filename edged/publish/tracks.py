"""Per-track events (camera `tracking.events: tracks`): one message when an object appears, when what
the chain says about it changes (e.g. its plate text), and when it leaves — instead of one per frame."""

from __future__ import annotations

import threading
from typing import Any

from edged.publish.event import RUN_ID, iso_utc_ms
from edged.types import Detection, FrameResult

TRACK_SCHEMA_ID = "edged.track/1"


def _summary(d: Detection) -> tuple[str, ...]:
    """What subscribers care about changing: the labels of the secondary results."""
    return tuple(sorted(f"{stage}={k.label}" for stage, kids in d.children.items() for k in kids))


class TrackEventBuilder:
    def __init__(self, device: str, run_id: str = RUN_ID) -> None:
        self.device = device
        self.run_id = run_id
        self._published: dict[tuple[str, int], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def build(self, result: FrameResult) -> list[dict[str, Any]]:
        upd = result.tracks
        if upd is None:
            return []
        frame = result.frame
        out = []
        with self._lock:
            for track in upd.new:
                self._published[(frame.camera, track.id)] = _summary(track.last)
                out.append(self._event("new", result, track))
            for track in upd.updated:
                key = (frame.camera, track.id)
                summary = _summary(track.last)
                if key in self._published and summary != self._published[key]:
                    self._published[key] = summary
                    out.append(self._event("update", result, track))
            for track in upd.ended:
                self._published.pop((frame.camera, track.id), None)
                out.append(self._event("end", result, track))
        return out

    def _event(self, kind: str, result: FrameResult, track: Any) -> dict[str, Any]:
        frame = result.frame
        return {
            "schema": TRACK_SCHEMA_ID,
            # Stable across outbox replays, unique per track event: subscribers de-duplicate on it.
            "id": f"{self.device}:{frame.camera}:{self.run_id}:t{track.id}:{kind}:{frame.seq}",
            "type": kind,
            "device": self.device,
            "camera": frame.camera,
            "track_id": track.id,
            "seq": frame.seq,
            "captured_at": iso_utc_ms(frame.t_wall),
            "first_seq": track.first_seq,
            "last_seq": track.last_seq,
            "hits": track.hits,
            "detection": track.last.to_dict(),
        }
