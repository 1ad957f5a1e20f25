"""The periodic `<prefix>/stats` topic: the daemon's status and the device telemetry, every interval.

QoS 0, not retained and not through the outbox: a stats message is only worth its latest value, so
while the broker is away they are skipped rather than queued. One thread of its own (`stats`),
started and stopped by the daemon.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edged.observability.telemetry import Telemetry

log = logging.getLogger(__name__)


class RawPublisher(Protocol):
    """What StatsPublisher needs of edged.publish.mqtt.MqttPublisher."""

    def publish_raw(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 0) -> Any: ...


class StatsPublisher:
    """Publishes {"ts", "status": status(), "telemetry": readings} to `topic` every `interval_s`.

    QoS 0, not retained and not through the outbox: a stats message is only worth its latest value, so
    while the broker is away they are skipped rather than queued.
    """

    def __init__(
        self,
        publisher: RawPublisher,
        topic: str,
        interval_s: float,
        status: Callable[[], dict[str, Any]],
        telemetry: Telemetry,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.interval_s = interval_s
        self.status = status
        self.telemetry = telemetry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def payload(self) -> dict[str, Any]:
        status = dict(self.status())
        # The daemon's status may already carry the telemetry (for /stats): send it once, at the top.
        telemetry = status.pop("telemetry", None) or self.telemetry.readings()
        return {"ts": round(time.time(), 3), "status": status, "telemetry": telemetry}

    def publish_once(self) -> bool:
        """One message now; False when the broker is not connected (nothing is queued)."""
        try:
            body = json.dumps(self.payload(), default=str, separators=(",", ":"))
        except Exception:
            log.exception("stats: building the payload failed")
            return False
        return self.publisher.publish_raw(self.topic, body, retain=False, qos=0) is not None

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return  # stats_interval_s: 0 disables the topic
        self._thread = threading.Thread(target=self._loop, name="stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        # First message soon after start (once connected) so dashboards fill quickly, then every interval.
        wait = min(2.0, self.interval_s)
        while not self._stop.wait(wait):
            wait = self.interval_s if self.publish_once() else min(2.0, self.interval_s)
