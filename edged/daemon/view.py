"""What the daemon keeps for the people looking at it: event thumbnails, the plotted history, recent events.

Built by the daemon (edged.daemon.daemon) from the config and handed to the result sink (which feeds it on the
camera pipeline threads) and to the health server (which reads it on HTTP threads: /history and
/events/<id>.jpg). It owns the thumbnail worker thread: `start()` after the publisher exists,
`stop()` after the cameras stopped, so every thumbnail an event already names gets written.
"""

from __future__ import annotations

import logging
from typing import Any

from edged.config.schema import Config
from edged.observability.history import History
from edged.observability.metrics import Metrics
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.recent import RecentEvents
from edged.publish.routing import ResultSink
from edged.publish.thumbnails.thumbnailer import Thumbnailer

log = logging.getLogger(__name__)


class OperatorView:
    def __init__(self, cfg: Config, metrics: Metrics, sink: ResultSink) -> None:
        self.history = History()
        self.recent = RecentEvents()
        self.thumbnails: Thumbnailer | None = None
        self._cfg = cfg
        self._metrics = metrics
        self._sink = sink
        sink.history = self.history
        sink.recent = self.recent

    def start(self, publisher: MqttPublisher | None) -> None:
        tc = self._cfg.thumbnails
        if not tc.enabled:
            return
        directory = tc.dir or self._cfg.state_dir / "thumbnails"

        def publish(topic: str, data: bytes) -> bool:
            # Retained, so Home Assistant's image entity shows the last one after it restarts; QoS 0 and
            # outside the outbox: a thumbnail missed while the broker is away is not worth replaying.
            return (
                publisher is not None and publisher.publish_raw(topic, data, retain=True, qos=0) is not None
            )

        try:
            self.thumbnails = Thumbnailer(
                tc,
                directory,
                self._metrics.registry,
                cameras=list(self._cfg.cameras),
                prefix=self._cfg.topic_prefix,
                publish=publish if publisher is not None else None,
            )
        except OSError as e:  # events matter more than their pictures: run on without them
            log.error("thumbnails.dir %s: %s; events will name no thumbnail", directory, e.strerror or e)
            return
        self.thumbnails.start()
        self._sink.thumbnails = self.thumbnails

    def stop(self) -> None:
        if self.thumbnails is not None:
            self._sink.thumbnails = None
            self.thumbnails.stop()

    def snapshot(self) -> dict[str, Any]:
        """/history: the per-camera points and the recent events (newest first)."""
        return {**self.history.snapshot(), "events": self.recent.snapshot()}

    def thumbnail(self, name: str) -> bytes | None:
        return self.thumbnails.get(name) if self.thumbnails is not None else None
