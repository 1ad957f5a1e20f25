"""The recent events, as published, for the status page's list: time, camera, what was read, thumbnail.

`RecentEvents` keeps the last `size` events (the few fields the page shows) in memory; nothing is
persisted. Threading: `add()` runs on the cameras' delivery threads (an append under a lock, nothing
else, so the per-frame path stays cheap); `newest_first()` runs on HTTP threads.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from edged.publish.event import event_text


class RecentEvents:
    def __init__(self, size: int = 50) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, event: dict[str, Any]) -> None:
        """An event as published (pipeline thread); kept as the few fields the page shows."""
        dets = event["detections"] if "detections" in event else [event.get("detection") or {}]
        thumb = event.get("thumbnail")
        what = None  # an analytics event: which line or zone, and what happened there
        if "line" in event:
            what = f"{event['line']} {event.get('direction', '')}".strip()
        elif "zone" in event:
            what = f"{event['zone']} {event.get('type', '')}".strip()
        row = {
            "id": event.get("id"),
            "type": event.get("type", "frame"),
            "what": what,
            "camera": event.get("camera"),
            "at": event.get("captured_at"),
            "text": event_text({"detections": dets}),
            "thumbnail": f"/events/{thumb}" if thumb else None,
        }
        with self._lock:
            self._events.append(row)

    def newest_first(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._events))
