"""Home Assistant MQTT discovery on a real mosquitto through the real MqttPublisher: retained configs
with the keys HA reads, states, availability through the last will, removal, re-announce after a
broker restart."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edged import __version__
from edged.publish.event import event_text
from edged.publish.hass.discovery import HassDiscovery, status_page_url
from edged.publish.mqtt.publisher import MqttPublisher
from tests.support.broker import Mosquitto
from tests.support.clients import Message, Subscriber, running_publisher

DEVICE = "gate-01"
PREFIX = f"edged/{DEVICE}"
HA = "homeassistant"

# Keys of Home Assistant's MQTT discovery schemas (full names, no abbreviations), from the "Configuration
# Variables" of https://www.home-assistant.io/integrations/{sensor,binary_sensor,switch,button}.mqtt/
# and the device / origin sections of https://www.home-assistant.io/integrations/mqtt/.
COMMON = {
    "name",
    "unique_id",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "icon",
    "device_class",
    "json_attributes_topic",
    "json_attributes_template",
}
ALLOWED = {
    "sensor": COMMON
    | {"state_topic", "value_template", "state_class", "unit_of_measurement", "suggested_display_precision"},
    "binary_sensor": COMMON | {"state_topic", "value_template", "payload_on", "payload_off"},
    "switch": COMMON
    | {
        "state_topic",
        "command_topic",
        "value_template",
        "payload_on",
        "payload_off",
        "state_on",
        "state_off",
    },
    "button": COMMON | {"command_topic", "payload_press"},
    # https://www.home-assistant.io/integrations/image.mqtt/
    "image": COMMON | {"image_topic", "content_type", "image_encoding", "url_topic", "url_template"},
}
# Attribute names HA drops from json_attributes (homeassistant/components/mqtt/entity.py,
# MQTT_ATTRIBUTES_BLOCKED, as of 2025).
HA_BLOCKED_ATTRIBUTES = {
    "assumed_state", "available", "device_class", "device_info", "entity_category", "entity_picture",
    "entity_registry_enabled_default", "extra_state_attributes", "force_update", "icon", "friendly_name",
    "name", "should_poll", "state", "supported_features", "unique_id", "unit_of_measurement",
}  # fmt: skip
DEVICE_KEYS = {
    "identifiers",
    "connections",
    "name",
    "manufacturer",
    "model",
    "model_id",
    "sw_version",
    "hw_version",
    "serial_number",
    "configuration_url",
    "suggested_area",
    "via_device",
}
SENSORS = [
    ("sensor", "last_text"),
    ("sensor", "detections"),
    ("sensor", "source_fps"),
    ("sensor", "processed_fps"),
    ("sensor", "drop_ratio"),
    ("binary_sensor", "online"),
]
URL = "http://gate-01.local:8089/"

EVENT = {
    "id": f"{DEVICE}:gate:abc:17",
    "captured_at": "2026-01-31T12:34:56.789Z",
    "detections": [
        {"label": "text", "score": 0.9, "children": {"text_rec": [{"label": "KA 1234", "score": 0.98}]}},
        {"label": "text", "score": 0.8, "children": {"text_rec": [{"label": "MH 42", "score": 0.95}]}},
    ],
}


def wait_connected(pub: MqttPublisher, up: bool = True, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while pub.connected != up:
        assert time.monotonic() < deadline, f"publisher never became connected={up} ({pub.last_error})"
        time.sleep(0.05)


@pytest.fixture
def publisher(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[MqttPublisher]:
    with running_publisher(mosquitto, tmp_path / "outbox", device=DEVICE, prefix=PREFIX) as pub:
        wait_connected(pub)
        yield pub


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    pub: MqttPublisher,
    tmp_path: Path,
    clock: Clock,
    status: Callable[[], dict[str, Any]],
    commands: bool = False,
) -> HassDiscovery:
    return HassDiscovery(
        pub,
        DEVICE,
        PREFIX,
        state_interval_s=10,
        status=status,
        state_path=tmp_path / "state" / "hass.json",
        clock=clock,
        commands=commands,
        configuration_url=URL,
    )


def retained(broker: Mosquitto, topics: str | list[str], settle_s: float = 1.0) -> dict[str, bytes]:
    """What the broker holds once publishing settled: its retained messages, updated by whatever arrives
    during `settle_s` (a retained publish that reaches a subscriber live carries no retain flag, so a
    check right after publishing would otherwise miss it). Empty payloads are deletions: left out."""
    latest: dict[str, bytes] = {}
    with Subscriber(broker, topics) as sub:
        time.sleep(settle_s)
        for m in sub.messages:
            latest[m.topic] = m.payload
    return {t: p for t, p in latest.items() if p}


def until(sub: Subscriber, pred: Callable[[list[Message]], bool], what: str) -> None:
    assert sub.wait_for(pred, 10), f"{what}; got {[(m.topic, m.payload[:80]) for m in sub.messages]}"


STATUS: dict[str, Any] = {
    "cameras": {
        "gate": {"state": "streaming", "source_fps": 12.46, "processed_fps": 2.5, "drop_ratio": 0.8},
        "yard": {"state": "backoff", "source_fps": 0.0, "processed_fps": 0.0, "drop_ratio": 0.0},
    }
}


def test_discovery_configs_have_the_keys_home_assistant_reads(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path, Clock(), lambda: STATUS, commands=True)
    hass.set_cameras(["gate", "yard"])
    hass.tick()
    got = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    configs = {t: json.loads(p) for t, p in got.items() if t.startswith(HA)}
    assert sorted(configs) == sorted(
        f"{HA}/{comp}/{DEVICE}/{cam}_{key}/config"
        for cam in ("gate", "yard")
        for comp, key in [*SENSORS, ("switch", "enabled"), ("button", "snapshot"), ("image", "snapshot")]
    )
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == 18
    for topic, c in configs.items():
        component, cam = topic.split("/")[1], topic.split("/")[3].split("_")[0]
        assert set(c) <= ALLOWED[component], f"{topic}: keys HA does not know: {set(c) - ALLOWED[component]}"
        assert c["availability_topic"] == f"{PREFIX}/status"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["name"].startswith(cam + " ")
        if component in ("sensor", "binary_sensor"):
            assert c["state_topic"] == c["json_attributes_topic"] == f"{PREFIX}/{cam}/state"
            assert "value_json." in c["value_template"]
        assert set(c["device"]) <= DEVICE_KEYS
        assert c["device"] == {
            "identifiers": [f"edged_{DEVICE}"],  # not the bare name another MQTT device may use
            "name": DEVICE,
            "manufacturer": "edged",
            "model": "edged edge inference daemon",
            "sw_version": __version__,
            "configuration_url": URL,
        }
    switch = configs[f"{HA}/switch/{DEVICE}/gate_enabled/config"]
    assert switch["command_topic"] == f"{PREFIX}/gate/set/enabled"
    assert switch["state_topic"] == f"{PREFIX}/gate/enabled"
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")
    button = configs[f"{HA}/button/{DEVICE}/gate_snapshot/config"]
    assert button["command_topic"] == f"{PREFIX}/gate/set/snapshot"
    # What the button asks for is shown by an image entity on the topic the JPEG goes to.
    snapshot = configs[f"{HA}/image/{DEVICE}/gate_snapshot/config"]
    assert (snapshot["image_topic"], snapshot["content_type"]) == (f"{PREFIX}/gate/snapshot", "image/jpeg")
    for fps in ("source_fps", "processed_fps"):
        assert configs[f"{HA}/sensor/{DEVICE}/gate_{fps}/config"]["unit_of_measurement"] == "fps"
    assert configs[f"{HA}/sensor/{DEVICE}/gate_drop_ratio/config"]["unit_of_measurement"] == "%"
    online = configs[f"{HA}/binary_sensor/{DEVICE}/gate_online/config"]
    assert (online["payload_on"], online["payload_off"], online["device_class"]) == (
        "ON",
        "OFF",
        "connectivity",
    )
    assert configs[f"{HA}/sensor/{DEVICE}/gate_processed_fps/config"]["state_class"] == "measurement"
    assert configs[f"{HA}/sensor/{DEVICE}/gate_detections/config"]["state_class"] == "total_increasing"

    # Each template's field is in the state message, with the values HA will show.
    gate = json.loads(got[f"{PREFIX}/gate/state"])
    assert gate == {
        "online": "ON",
        "state": "streaming",
        "source_fps": 12.46,
        "processed_fps": 2.5,
        "drop_ratio": 0.8,
        "detections": 0,
        "last_text": None,
        "last_event_at": None,
        "last_event_id": None,
    }
    assert json.loads(got[f"{PREFIX}/yard/state"])["online"] == "OFF"
    for c in configs.values():
        if "value_template" in c:
            assert re.search(r"value_json\.(\w+)", c["value_template"]).group(1) in gate  # type: ignore[union-attr]
        if "json_attributes_topic" in c:
            # Every field of the state becomes an attribute, as the docs say: rendered with HA's
            # template engine (Jinja2, sandboxed), minus the names HA blocks.
            attrs = ha_attributes(c["json_attributes_template"], gate)
            assert attrs == {**{k: v for k, v in gate.items() if k != "state"}, "camera_state": "streaming"}


def ha_attributes(template: str, state: dict[str, Any]) -> dict[str, Any]:
    """What HA makes of a state message with this json_attributes_template: the template rendered on
    `value_json`, parsed as JSON, the blocked names dropped."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    rendered = ImmutableSandboxedEnvironment().from_string(template).render(value_json=state)
    return {k: v for k, v in json.loads(rendered).items() if k not in HA_BLOCKED_ATTRIBUTES}


def test_events_update_the_state_at_most_once_a_second(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    clock = Clock()
    hass = make(publisher, tmp_path, clock, lambda: STATUS)
    hass.set_cameras(["gate"])
    with Subscriber(mosquitto, f"{PREFIX}/gate/state") as sub:
        hass.tick()
        until(sub, lambda ms: len(ms) == 1, "the first state")
        clock.t += 1.5
        hass.on_event("gate", EVENT)
        hass.on_event("gate", EVENT)
        hass.tick()
        until(sub, lambda ms: len(ms) == 2, "state after the events")
        state = json.loads(sub.messages[-1].payload)
        # 2 events x 2 plates: a plate and the text read on it are one object, not two
        assert state["last_text"] == "KA 1234, MH 42" and state["detections"] == 4
        assert state["last_event_id"] == EVENT["id"] and state["last_event_at"] == EVENT["captured_at"]
        # retained: a client connecting later (HA after a restart) gets it too
        assert (
            retained(mosquitto, f"{PREFIX}/gate/state", 0.5)[f"{PREFIX}/gate/state"]
            == sub.messages[-1].payload
        )
        hass.on_event("gate", EVENT)
        clock.t += 0.5
        hass.tick()  # within a second of the last: held back
        clock.t += 0.6
        hass.tick()
        until(sub, lambda ms: len(ms) == 3, "held-back state")
        time.sleep(0.5)
        assert len(sub.messages) == 3
        assert json.loads(sub.messages[-1].payload)["detections"] == 6
        clock.t += 10
        hass.tick()  # periodic: fps and online change without events
        until(sub, lambda ms: len(ms) == 4, "periodic state")
    hass.on_event("unknown-camera", EVENT)  # ignored, no error


def test_availability_follows_the_daemon_status_and_last_will(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path, Clock(), lambda: STATUS)
    hass.set_cameras(["gate"])
    hass.tick()
    config = f"{HA}/sensor/{DEVICE}/gate_source_fps/config"
    topic = json.loads(retained(mosquitto, config)[config])["availability_topic"]
    assert retained(mosquitto, topic) == {topic: b"online"}
    publisher.stop(1.0)
    assert retained(mosquitto, topic) == {topic: b"offline"}


def test_removed_camera_configs_are_cleared_on_reload_and_across_restarts(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    clock = Clock()
    hass = make(publisher, tmp_path, clock, lambda: STATUS)
    hass.set_cameras(["gate", "yard", "dock"])
    hass.tick()
    assert len([t for t in retained(mosquitto, f"{HA}/#") if "/dock_" in t]) == 6
    with Subscriber(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"]) as sub:
        hass.set_cameras(["gate", "yard"])  # a reload dropped "dock"
        hass.tick()
        until(
            sub,
            # 6 entities, the switch, button and snapshot image (commands may have been on), the old fps
            # sensor, the state
            lambda ms: len([m for m in ms if "dock" in m.topic and m.payload == b""]) == 11,
            "dock cleared",
        )
    left = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    assert not [t for t in left if "dock" in t], "HA would still show the removed camera"
    assert len([t for t in left if t.startswith(HA)]) == 12

    # edged restarts with "yard" removed from the config while it was down: the saved set says to clear it.
    again = make(publisher, tmp_path, clock, lambda: STATUS)
    again.set_cameras(["gate"])
    again.tick()
    left = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    assert sorted(t.split("/")[3] for t in left if t.startswith(HA)) == [
        "gate_detections",
        "gate_drop_ratio",
        "gate_last_text",
        "gate_online",
        "gate_processed_fps",
        "gate_source_fps",
    ]
    assert f"{PREFIX}/yard/state" not in left


def test_reannounced_after_the_broker_lost_its_retained_messages(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path, Clock(), lambda: STATUS)
    hass.set_cameras(["gate"])
    hass.tick()
    mosquitto.restart()  # no persistence: every retained message is gone
    wait_connected(publisher, False)
    hass.tick()  # while disconnected: nothing to do, no error
    wait_connected(publisher, True)
    hass.tick()
    got = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    assert len([t for t in got if t.startswith(HA)]) == 6 and f"{PREFIX}/gate/state" in got


def test_event_text_prefers_read_text_and_caps_length() -> None:
    assert event_text(EVENT) == "KA 1234, MH 42"
    assert (
        event_text({"detections": [{"label": "car", "children": {}}, {"label": "person"}]}) == "car, person"
    )
    long = event_text({"detections": [{"label": "x" * 400}]})
    assert len(long) == 255 and long.endswith("…")
    assert event_text({"detections": []}) == ""


def test_the_old_fps_sensor_and_switched_off_commands_are_removed_from_ha(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    # What an earlier release (fps sensor) with mqtt.commands on (switch, button) left retained.
    old = {
        f"{HA}/sensor/{DEVICE}/gate_fps/config": b'{"name":"gate fps"}',
        f"{HA}/switch/{DEVICE}/gate_enabled/config": b'{"name":"gate enabled"}',
        f"{HA}/button/{DEVICE}/gate_snapshot/config": b'{"name":"gate snapshot"}',
    }
    for topic, body in old.items():
        publisher.publish_raw(topic, body, retain=True, qos=1)
    assert wait_for_retained(mosquitto, set(old))
    hass = make(publisher, tmp_path, Clock(), lambda: STATUS, commands=False)
    hass.set_cameras(["gate"])
    hass.tick()
    left = retained(mosquitto, f"{HA}/#")
    assert not set(old) & set(left), "HA would keep showing entities edged no longer serves"
    assert len(left) == len(SENSORS)


def wait_for_retained(broker: Mosquitto, topics: set[str]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if topics <= set(retained(broker, f"{HA}/#", 0.3)):
            return True
    return False


def test_status_page_url_only_when_ha_can_reach_it() -> None:
    assert status_page_url("127.0.0.1", 8089) is None  # loopback: HA on another host cannot open it
    assert status_page_url("0.0.0.0", 0) is None  # the port is picked at start
    assert status_page_url("192.168.1.20", 8089, enabled=False) is None
    assert status_page_url("192.168.1.20", 8089) == "http://192.168.1.20:8089/"
    assert status_page_url("fd00::5", 8089) == "http://[fd00::5]:8089/"
    wildcard = status_page_url("0.0.0.0", 8089)
    assert wildcard is not None and wildcard.endswith(":8089/") and "0.0.0.0" not in wildcard
