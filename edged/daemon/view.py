"""What the daemon keeps for the people looking at it: event thumbnails, the plotted history, recent events.

Built by the daemon (edged.daemon.daemon) from the config, before the result sink, which is given its
parts (`history`, `recent`, `thumbnails`) and feeds them on the cameras' delivery threads; the health
server reads them on HTTP threads (/history and /events/<id>.jpg). It owns the thumbnail worker
thread: `start()` with the daemon, `stop()` after the cameras and their deliveries stopped (nothing
reaches the sink any more), so every thumbnail an event already names gets written.
"""

from __future__ import annotations

import logging
from typing import Any

from edged.config.schema import Config
from edged.observability.history import History
from edged.observability.metrics import Metrics
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.recent import RecentEvents
from edged.publish.thumbnails.thumbnailer import Thumbnailer

log = logging.getLogger(__name__)


class OperatorView:
    def __init__(self, cfg: Config, metrics: Metrics, publisher: MqttPublisher | None) -> None:
        """`publisher`: where thumbnails go over MQTT (thumbnails.publish), None without MQTT."""
        self.history = History()
        self.recent = RecentEvents()
        self.thumbnails = _thumbnailer(cfg, metrics, publisher)

    def start(self) -> None:
        if self.thumbnails is not None:
            self.thumbnails.start()

    def stop(self) -> None:
        if self.thumbnails is not None:
            self.thumbnails.stop()

    def history_view(self) -> dict[str, Any]:
        """/history: the per-camera points and the recent events (newest first)."""
        return {**self.history.columns(), "events": self.recent.newest_first()}

    def thumbnail(self, name: str) -> bytes | None:
        return self.thumbnails.get(name) if self.thumbnails is not None else None


def _thumbnailer(cfg: Config, metrics: Metrics, publisher: MqttPublisher | None) -> Thumbnailer | None:
    """The thumbnail worker (not started) as configured; None when off or its folder is unusable."""
    tc = cfg.thumbnails
    if not tc.enabled:
        return None
    directory = tc.dir or cfg.state_dir / "thumbnails"

    def publish(topic: str, data: bytes) -> bool:
        # Retained, so Home Assistant's image entity shows the last one after it restarts; QoS 0 and
        # outside the outbox: a thumbnail missed while the broker is away is not worth replaying.
        return publisher is not None and publisher.publish_raw(topic, data, retain=True, qos=0) is not None

    try:
        return Thumbnailer(
            tc,
            directory,
            metrics.registry,
            cameras=list(cfg.cameras),
            prefix=cfg.topic_prefix,
            publish=publish if publisher is not None else None,
        )
    except OSError as e:  # events matter more than their pictures: run on without them
        log.error("thumbnails.dir %s: %s; events will name no thumbnail", directory, e.strerror or e)
        return None
