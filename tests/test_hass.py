"""Home Assistant MQTT discovery on a real mosquitto through the real MqttPublisher: retained configs
with the keys HA reads, states, availability through the last will, removal, re-announce after a
broker restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edged import __version__
from edged.config.models import HassConfig
from edged.hass import HassDiscovery, event_text
from edged.mqtt_testing import Message, Mosquitto, Subscriber, running_publisher
from edged.publish.mqtt import MqttPublisher

DEVICE = "gate-01"
PREFIX = f"edged/{DEVICE}"
HA = "homeassistant"

# Keys Home Assistant's MQTT sensor / binary_sensor discovery schemas accept (full names, no abbreviations)
COMMON = {
    "name",
    "unique_id",
    "state_topic",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "value_template",
    "icon",
    "device_class",
}
ALLOWED = {
    "sensor": COMMON | {"state_class", "unit_of_measurement", "suggested_display_precision"},
    "binary_sensor": COMMON | {"payload_on", "payload_off"},
}

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
    pub: MqttPublisher, tmp_path: Path, clock: Clock, status: Callable[[], dict[str, Any]]
) -> HassDiscovery:
    return HassDiscovery(
        pub,
        HassConfig(enabled=True, state_interval_s=10),
        DEVICE,
        PREFIX,
        status=status,
        state_path=tmp_path / "state" / "hass.json",
        clock=clock,
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
    "cameras": {"gate": {"state": "streaming", "fps": 12.46}, "yard": {"state": "backoff", "fps": 0.0}}
}


def test_discovery_configs_have_the_keys_home_assistant_reads(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path, Clock(), lambda: STATUS)
    hass.set_cameras(["gate", "yard"])
    hass.tick()
    got = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    configs = {t: json.loads(p) for t, p in got.items() if t.startswith(HA)}
    assert sorted(configs) == sorted(
        f"{HA}/{comp}/{DEVICE}/{cam}_{key}/config"
        for cam in ("gate", "yard")
        for comp, key in [
            ("sensor", "last_text"),
            ("sensor", "detections"),
            ("sensor", "fps"),
            ("binary_sensor", "online"),
        ]
    )
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == 8
    for topic, c in configs.items():
        component, cam = topic.split("/")[1], topic.split("/")[3].split("_")[0]
        assert set(c) <= ALLOWED[component], f"{topic}: keys HA does not know: {set(c) - ALLOWED[component]}"
        assert c["state_topic"] == f"{PREFIX}/{cam}/state"
        assert c["availability_topic"] == f"{PREFIX}/status"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["name"].startswith(cam + " ") and c["value_template"].startswith("{{ value_json.")
        assert c["device"] == {
            "identifiers": [DEVICE],
            "name": DEVICE,
            "manufacturer": "edged",
            "model": "edged edge inference daemon",
            "sw_version": __version__,
        }
    online = configs[f"{HA}/binary_sensor/{DEVICE}/gate_online/config"]
    assert (online["payload_on"], online["payload_off"], online["device_class"]) == (
        "ON",
        "OFF",
        "connectivity",
    )
    assert configs[f"{HA}/sensor/{DEVICE}/gate_fps/config"]["state_class"] == "measurement"
    assert configs[f"{HA}/sensor/{DEVICE}/gate_detections/config"]["state_class"] == "total_increasing"

    # Each template's field is in the state message, with the values HA will show.
    gate = json.loads(got[f"{PREFIX}/gate/state"])
    assert gate == {
        "online": "ON",
        "state": "streaming",
        "fps": 12.46,
        "detections": 0,
        "last_text": None,
        "last_event_at": None,
        "last_event_id": None,
    }
    assert json.loads(got[f"{PREFIX}/yard/state"])["online"] == "OFF"
    for c in configs.values():
        field = c["value_template"].removeprefix("{{ value_json.").removesuffix(" }}")
        assert field in gate


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
        assert state["last_text"] == "KA 1234, MH 42" and state["detections"] == 8  # 2 events x (2 + 2)
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
        assert json.loads(sub.messages[-1].payload)["detections"] == 12
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
    topic = json.loads(
        retained(mosquitto, f"{HA}/sensor/{DEVICE}/gate_fps/config")[f"{HA}/sensor/{DEVICE}/gate_fps/config"]
    )["availability_topic"]
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
    assert len([t for t in retained(mosquitto, f"{HA}/#") if "/dock_" in t]) == 4
    with Subscriber(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"]) as sub:
        hass.set_cameras(["gate", "yard"])  # a reload dropped "dock"
        hass.tick()
        until(
            sub,
            lambda ms: len([m for m in ms if "dock" in m.topic and m.payload == b""]) == 5,
            "dock cleared",
        )
    left = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    assert not [t for t in left if "dock" in t], "HA would still show the removed camera"
    assert len([t for t in left if t.startswith(HA)]) == 8

    # edged restarts with "yard" removed from the config while it was down: the saved set says to clear it.
    again = make(publisher, tmp_path, clock, lambda: STATUS)
    again.set_cameras(["gate"])
    again.tick()
    left = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    assert sorted(t.split("/")[3] for t in left if t.startswith(HA)) == [
        "gate_detections",
        "gate_fps",
        "gate_last_text",
        "gate_online",
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
    assert len([t for t in got if t.startswith(HA)]) == 4 and f"{PREFIX}/gate/state" in got


def test_event_text_prefers_read_text_and_caps_length() -> None:
    assert event_text(EVENT) == "KA 1234, MH 42"
    assert (
        event_text({"detections": [{"label": "car", "children": {}}, {"label": "person"}]}) == "car, person"
    )
    long = event_text({"detections": [{"label": "x" * 400}]})
    assert len(long) == 255 and long.endswith("…")
    assert event_text({"detections": []}) == ""
