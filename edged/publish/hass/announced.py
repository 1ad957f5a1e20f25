"""What Home Assistant discovery announced last, kept across restarts (`mqtt.hass` state file).

So cameras, lines and zones removed while edged was down still get their entities cleared at the next
announce. One JSON file (`state_path`, written to a temporary file and renamed); without a path the
record lives in memory for this run only. A record written under another discovery prefix or device
name is not ours to clear and reads as empty. Used by edged.publish.hass.discovery.HassDiscovery on
the thread that calls its `tick()` (the daemon's main loop); not thread-safe on its own.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("edged.publish.hass.discovery")


class AnnouncedRecord:
    def __init__(self, state_path: Path | None, discovery_prefix: str, device: str) -> None:
        self.state_path = state_path
        self.discovery_prefix = discovery_prefix
        self.device = device
        self._memory: dict[str, Any] | None = None  # without a state_path: this run's record only

    def names(self, key: str = "cameras") -> set[str]:
        """Cameras announced ("cameras"), or those announced with an image entity ("image_cameras")."""
        data = self._read()
        return set(data.get(key, [])) if data is not None else set()

    def topics(self) -> dict[str, list[str]]:
        """Discovery topics announced per camera (by this run, or the last one with a state_path)."""
        data = self._read()
        topics = data.get("topics", {}) if data is not None else {}
        return topics if isinstance(topics, dict) else {}

    def save(self, names: list[str], images: list[str], topics: dict[str, list[str]]) -> None:
        data = {
            "discovery_prefix": self.discovery_prefix,
            "device": self.device,
            "cameras": sorted(names),
            "image_cameras": sorted(images),
            "topics": dict(topics),
        }
        if self.state_path is None:
            self._memory = data
            return
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.state_path)
        except OSError as e:
            log.warning(
                "Home Assistant: cannot save %s (%s); removed cameras may linger in HA", self.state_path, e
            )

    def _read(self) -> dict[str, Any] | None:
        if self.state_path is None:
            return self._memory
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if data.get("discovery_prefix") != self.discovery_prefix or data.get("device") != self.device:
            return None  # announced elsewhere: not ours to clear under this prefix
        return data
