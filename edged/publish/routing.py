"""Where a camera's results go: events built once, then to stdout, the MQTT outbox and Home Assistant.

`frames` mode publishes one event per frame with detections on <prefix>/<camera>/detections;
`tracks` mode (camera tracking.events) one event per track change on <prefix>/<camera>/tracks.
Either way the frame's analytics events (line crossings, zone changes) go to
<prefix>/<camera>/crossings/<line> and <prefix>/<camera>/zones/<zone> (edged.publish.scene).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from edged.observability.history import History
from edged.observability.metrics import Metrics
from edged.publish.event import EventBuilder
from edged.publish.hass.discovery import HassDiscovery
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.recent import RecentEvents
from edged.publish.scene import SceneEventBuilder
from edged.publish.stdout import StdoutSink
from edged.publish.thumbnails.thumbnailer import Thumbnailer
from edged.publish.tracks import TrackEventBuilder
from edged.types import Detection, FrameResult


class ResultSink:
    def __init__(
        self,
        device: str,
        metrics: Metrics,
        *,
        events_mode: Callable[[str], str],
        stdout: StdoutSink | None = None,
        publisher: MqttPublisher | None = None,
    ):
        self.metrics = metrics
        self.events_mode = events_mode  # camera -> "frames" | "tracks" (read per result: reloads change it)
        self.stdout = stdout
        self.publisher = publisher
        self.hass: HassDiscovery | None = None
        # The operator's view (status page): thumbnails named in events, the plot's history, recent events.
        self.thumbnails: Thumbnailer | None = None
        self.history: History | None = None
        self.recent: RecentEvents | None = None
        self.frames = EventBuilder(device)
        self.tracks = TrackEventBuilder(device)
        self.scene = SceneEventBuilder(device)
        self._detections: dict[tuple[str, str], Any] = {}

    def __call__(self, result: FrameResult) -> None:
        camera = result.frame.camera
        for stage, count in count_by_stage(result).items():
            key = (camera, stage)
            counter = self._detections.get(key)
            if counter is None:  # metric children looked up once per (camera, stage), not per frame
                counter = self._detections[key] = self.metrics.detections.labels(camera, stage)
            counter.inc(count)
        if self.history is not None:
            self.history.record(result)
        for scene_event in result.analytics:  # line crossings and zone changes (edged.analytics)
            self._emit(camera, self.scene.build(scene_event, result), scene_event.topic)
        if self.events_mode(camera) == "tracks":
            if self.thumbnails is not None:
                self.thumbnails.observe(result)
            for event in self.tracks.build(result):
                if self.thumbnails is not None:
                    self.thumbnails.attach_track(event)
                self._emit(camera, event, "tracks")
            return
        if result.detections:  # one message per frame *with detections*
            event = self.frames.build(result)
            if self.thumbnails is not None:
                self.thumbnails.attach(event, result)
            self._emit(camera, event, "detections")

    def _emit(self, camera: str, event: dict[str, Any], channel: str) -> None:
        if self.recent is not None:
            self.recent.add(event)
        if self.stdout is not None:
            self.stdout.publish(camera, event)
        if self.publisher is not None:
            self.publisher.publish(camera, event, channel)
        if self.hass is not None and channel == "detections":
            self.hass.on_event(camera, event)
        elif self.hass is not None and channel.startswith(("crossings/", "zones/")):
            self.hass.touch(camera)  # its counts and occupancy changed: publish the state soon


def count_by_stage(result: FrameResult) -> dict[str, int]:
    counts: dict[str, int] = {}

    def walk(dets: Iterable[Detection], stage: str) -> None:
        for d in dets:
            counts[stage] = counts.get(stage, 0) + 1
            for child_stage, kids in d.children.items():
                walk(kids, child_stage)

    walk(result.detections, next(iter(result.latency_ms), "detections"))
    return counts
