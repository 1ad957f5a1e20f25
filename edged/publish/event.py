"""The detection event: one JSON message per processed frame, schema `edged.detections/1`.

The payload is built once and stored in the outbox as is, so a replay after a reconnect or a restart
sends the very same bytes: nothing in it depends on the time of sending (no `published_at`).
`id` is "<device>:<camera>:<run>:<seq>": `run` is drawn once per process start (RUN_ID), so ids stay
unique when frame numbering restarts with the daemon; consumers de-duplicate QoS 1 redeliveries by it.
event.schema.json in this package is the JSON Schema of the payload.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

from edged.types import FrameResult

SCHEMA_ID = "edged.detections/1"
RUN_ID = uuid.uuid4().hex[:12]
MAX_TEXT_LEN = 255  # event_text's limit: Home Assistant rejects longer sensor states


def iso_utc_ms(t_wall: float) -> str:
    """2026-01-31T12:34:56.789Z"""
    return (
        datetime.fromtimestamp(t_wall, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class EventBuilder:
    """Turns FrameResults into event payloads for one device.

    A camera whose frame numbers go backwards (its source was reopened and counts from 0 again) gets a
    new epoch, written into the id as "<run>.<epoch>", so ids never repeat within a run either.
    """

    def __init__(self, device: str, run_id: str = RUN_ID) -> None:
        self.device = device
        self.run_id = run_id
        self._last_seq: dict[str, int] = {}
        self._epoch: dict[str, int] = {}
        self._lock = threading.Lock()

    def event_id(self, camera: str, seq: int) -> str:
        with self._lock:
            last = self._last_seq.get(camera)
            if last is not None and seq <= last:
                self._epoch[camera] = self._epoch.get(camera, 0) + 1
            self._last_seq[camera] = seq
            epoch = self._epoch.get(camera, 0)
        run = self.run_id if epoch == 0 else f"{self.run_id}.{epoch}"
        return f"{self.device}:{camera}:{run}:{seq}"

    def build(self, result: FrameResult) -> dict[str, Any]:
        frame = result.frame
        latency = {k: round(float(v), 2) for k, v in result.latency_ms.items()}
        if "total" not in latency:
            # Capture to event: the monotonic clock is immune to NTP steps during the frame's life.
            latency["total"] = round((time.monotonic_ns() - frame.t_mono_ns) / 1e6, 2)
        height, width = frame.shape[:2]
        return {
            "schema": SCHEMA_ID,
            "id": self.event_id(frame.camera, frame.seq),
            "device": self.device,
            "camera": frame.camera,
            "seq": frame.seq,
            "captured_at": iso_utc_ms(frame.t_wall),
            "captured_ts": round(frame.t_wall, 3),
            "latency_ms": latency,
            "frame": {"width": width, "height": height},
            "detections": [d.to_dict() for d in result.detections],
        }


def build_event(result: FrameResult, device: str, run_id: str = RUN_ID) -> dict[str, Any]:
    """One-off build (no epoch tracking across calls); the app uses an EventBuilder."""
    return EventBuilder(device, run_id).build(result)


@cache
def event_schema(name: str = "event") -> dict[str, Any]:
    """The JSON Schema of detection events ("event") or of per-track events ("track")."""
    text = resources.files("edged.publish").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def event_text(event: dict[str, Any]) -> str:
    """What a person wants to read from an event: the recognized texts, else the detection labels
    (Home Assistant's last-text sensor and the status page's event list show it)."""
    parts: list[str] = []
    for det in event.get("detections", []):
        kids = [k.get("label") for ks in (det.get("children") or {}).values() for k in ks]
        kids = [k for k in kids if k]
        if kids:
            parts.extend(str(k) for k in kids)
        elif det.get("label"):
            parts.append(str(det["label"]))
    text = ", ".join(parts)
    return text if len(text) <= MAX_TEXT_LEN else text[: MAX_TEXT_LEN - 1] + "…"
