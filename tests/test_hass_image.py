"""Home Assistant's image entity for event thumbnails, on a real mosquitto: its discovery config has
only keys HA's MQTT image schema documents, its image_topic receives what the thumbnailer publishes,
and it is removed again when thumbnail publishing is switched off."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from edged.config.schema import ThumbnailsConfig
from edged.publish.hass.discovery import HassDiscovery
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.thumbnails.thumbnailer import Thumbnailer
from edged.types import Detection, Frame, FrameResult
from tests.support.broker import Mosquitto
from tests.support.clients import Subscriber, running_publisher

DEVICE = "gate-01"
PREFIX = f"edged/{DEVICE}"
IMAGE_CONFIG = f"homeassistant/image/{DEVICE}/gate_thumbnail/config"
# https://www.home-assistant.io/integrations/image.mqtt/ (full names, no abbreviations)
IMAGE_KEYS = {
    "name",
    "unique_id",
    "image_topic",
    "content_type",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "icon",
}


def wait_connected(pub: MqttPublisher) -> None:
    deadline = time.monotonic() + 10
    while not pub.connected:
        assert time.monotonic() < deadline, pub.last_error
        time.sleep(0.05)


def retained_configs(broker: Mosquitto) -> dict[str, Any]:
    latest: dict[str, bytes] = {}
    with Subscriber(broker, "homeassistant/#") as sub:
        time.sleep(1.0)  # retained messages arrive right after subscribing
        for m in sub.messages:
            latest[m.topic] = m.payload
    return {t: json.loads(p) for t, p in latest.items() if p}


def hass(pub: MqttPublisher, tmp_path: Path, thumbnails: bool) -> HassDiscovery:
    h = HassDiscovery(
        pub,
        DEVICE,
        PREFIX,
        status=lambda: {"cameras": {"gate": {"state": "streaming"}}},
        state_path=tmp_path / "hass.json",
        thumbnails=thumbnails,
    )
    h.set_cameras(["gate"])
    return h


def test_image_entity_shows_the_published_thumbnails_and_goes_when_switched_off(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with running_publisher(mosquitto, tmp_path / "outbox", device=DEVICE, prefix=PREFIX) as pub:
        wait_connected(pub)
        hass(pub, tmp_path, thumbnails=True).tick()
        configs = retained_configs(mosquitto)
        image = configs[IMAGE_CONFIG]
        assert set(image) <= IMAGE_KEYS, set(image) - IMAGE_KEYS
        assert image["image_topic"] == f"{PREFIX}/gate/+/thumbnail"
        assert image["content_type"] == "image/jpeg"
        assert image["availability_topic"] == f"{PREFIX}/status"
        assert image["unique_id"] == f"edged_{DEVICE}_gate_thumbnail"
        assert image["device"] == configs[f"homeassistant/sensor/{DEVICE}/gate_last_text/config"]["device"]

        # What HA subscribes to (the image_topic, wildcard and all) gets the thumbnail edged publishes.
        with Subscriber(mosquitto, image["image_topic"]) as ha:
            thumbs = Thumbnailer(
                ThumbnailsConfig(publish=True),
                tmp_path / "thumbs",
                CollectorRegistry(),
                cameras=["gate"],
                prefix=PREFIX,
                publish=lambda topic, data: pub.publish_raw(topic, data, retain=True) is not None,
            )
            thumbs.start()
            event: dict[str, Any] = {"id": f"{DEVICE}:gate:r:1"}
            image_data = np.full((240, 320, 3), 200, np.uint8)
            result = FrameResult(Frame("gate", 1, image_data), [Detection("text", 0.9, (40, 40, 200, 90))])
            thumbs.attach(event, result)
            thumbs.stop()
            assert ha.wait_for(lambda m: len(m) == 1)
            assert ha.messages[0].topic == f"{PREFIX}/gate/text/thumbnail"
            assert ha.messages[0].payload == thumbs.get(event["thumbnail"])

        # Publishing switched off (a restart with thumbnails.publish: false): HA is told to drop the entity.
        hass(pub, tmp_path, thumbnails=False).tick()
        configs = retained_configs(mosquitto)
        assert IMAGE_CONFIG not in configs
        assert f"homeassistant/sensor/{DEVICE}/gate_last_text/config" in configs
