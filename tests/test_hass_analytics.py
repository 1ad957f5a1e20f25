"""Home Assistant discovery of lines and zones, on a real mosquitto through the real MqttPublisher (as
tests/test_hass.py does for the camera entities): counters per direction, occupancy sensor and
binary_sensor per zone, `event` entities on the crossing and zone topics, the reset button; the state
keys their templates read; entities of a removed line cleared, also across a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from edged.publish.hass.analytics import CameraAnalytics
from edged.publish.hass.discovery import HassDiscovery
from edged.publish.mqtt.publisher import MqttPublisher
from tests.support.broker import Mosquitto
from tests.support.clients import running_publisher
from tests.test_hass import ALLOWED, COMMON, DEVICE, HA, PREFIX, Clock, retained, wait_connected

# Keys of HA's MQTT event schema ("Configuration Variables" of https://www.home-assistant.io/integrations/event.mqtt/).
EVENT_KEYS = COMMON | {"state_topic", "event_types", "value_template", "qos", "encoding"}

STATUS: dict[str, Any] = {
    "cameras": {
        "road": {
            "state": "streaming",
            "source_fps": 5.0,
            "processed_fps": 5.0,
            "drop_ratio": 0.0,
            "analytics": {
                "lines": {
                    "gate": {"in": 4, "out": 2, "by_label": {}},
                    "lane-2": {"in": 1, "out": 0, "by_label": {}},
                },
                "zones": {"bay": {"occupancy": 2, "by_label": {"car": 2}}},
            },
        }
    }
}
NAMES = CameraAnalytics(lines=("gate", "lane-2"), zones=("bay",))


@pytest.fixture
def publisher(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[MqttPublisher]:
    with running_publisher(mosquitto, tmp_path / "outbox", device=DEVICE, prefix=PREFIX) as pub:
        wait_connected(pub)
        yield pub


def make(pub: MqttPublisher, tmp_path: Path, commands: bool = True) -> HassDiscovery:
    return HassDiscovery(
        pub,
        DEVICE,
        PREFIX,
        state_interval_s=10,
        status=lambda: STATUS,
        state_path=tmp_path / "state" / "hass.json",
        clock=Clock(),
        commands=commands,
    )


def render(template: str, value_json: dict[str, Any]) -> str:
    """A value template as Home Assistant renders it (Jinja2; `tojson` is a Jinja built-in filter)."""
    return jinja2.Environment().from_string(template).render(value_json=value_json)


def test_line_and_zone_entities_have_the_keys_and_templates_home_assistant_reads(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path)
    hass.set_cameras(["road"])
    hass.set_analytics({"road": NAMES})
    hass.tick()
    got = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    configs = {t: json.loads(p) for t, p in got.items() if t.startswith(HA)}
    keys = {t.split("/")[1] + ":" + t.split("/")[3].removeprefix("road_") for t in configs}
    assert {
        "sensor:line_gate_in",
        "sensor:line_gate_out",
        "event:line_gate_crossing",
        "sensor:line_lane-2_in",
        "sensor:line_lane-2_out",
        "event:line_lane-2_crossing",
        "sensor:zone_bay_occupancy",
        "binary_sensor:zone_bay_occupied",
        "event:zone_bay_activity",
        "button:reset_counts",
    } <= keys
    state = json.loads(got[f"{PREFIX}/road/state"])
    assert state["lines"] == {"gate": {"in": 4, "out": 2}, "lane-2": {"in": 1, "out": 0}}
    assert state["zones"] == {"bay": {"occupancy": 2, "by_label": {"car": 2}}}
    for topic, c in configs.items():
        component = topic.split("/")[1]
        allowed = EVENT_KEYS if component == "event" else ALLOWED[component]
        assert set(c) <= allowed, f"{topic}: keys HA does not know: {set(c) - allowed}"
        assert c["availability_topic"] == f"{PREFIX}/status"
    sensor = configs[f"{HA}/sensor/{DEVICE}/road_line_lane-2_in/config"]
    assert sensor["state_topic"] == f"{PREFIX}/road/state" and sensor["state_class"] == "total_increasing"
    assert render(sensor["value_template"], state) == "1"  # a '-' in the name, `in` a Jinja word
    assert render(configs[f"{HA}/sensor/{DEVICE}/road_line_gate_out/config"]["value_template"], state) == "2"
    occupancy = configs[f"{HA}/sensor/{DEVICE}/road_zone_bay_occupancy/config"]
    assert render(occupancy["value_template"], state) == "2"
    occupied = configs[f"{HA}/binary_sensor/{DEVICE}/road_zone_bay_occupied/config"]
    assert occupied["device_class"] == "occupancy"
    assert render(occupied["value_template"], state) == occupied["payload_on"] == "ON"
    empty = {**state, "zones": {"bay": {"occupancy": 0, "by_label": {}}}}
    assert render(occupied["value_template"], empty) == occupied["payload_off"]
    button = configs[f"{HA}/button/{DEVICE}/road_reset_counts/config"]
    assert button["command_topic"] == f"{PREFIX}/road/set/reset_counts"

    # Event entities read the crossing and zone messages themselves (edged.crossing/1, edged.zone/1).
    crossing = configs[f"{HA}/event/{DEVICE}/road_line_gate_crossing/config"]
    assert crossing["state_topic"] == f"{PREFIX}/road/crossings/gate" and crossing["event_types"] == [
        "in",
        "out",
    ]
    message = {
        "direction": "out",
        "track_id": 7,
        "label": "car",
        "texts": ['K "9" 1'],
        "speed_kmh": 21.4,
        "at": "x",
    }
    rendered = json.loads(render(crossing["value_template"], message))
    assert rendered == {
        "event_type": "out",
        "track_id": 7,
        "label": "car",
        "texts": ['K "9" 1'],
        "speed_kmh": 21.4,
        "at": "x",
    }
    activity = configs[f"{HA}/event/{DEVICE}/road_zone_bay_activity/config"]
    assert activity["event_types"] == ["enter", "exit", "loiter"]
    zone_msg = {
        "type": "loiter",
        "track_id": 3,
        "label": "car",
        "texts": [],
        "dwell_s": 30.2,
        "speed_kmh": None,
        "at": "y",
    }
    assert json.loads(render(activity["value_template"], zone_msg))["event_type"] == "loiter"


def test_a_camera_without_analytics_keeps_its_state_and_entities(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path, commands=False)
    hass.set_cameras(["road"])
    hass.tick()
    got = retained(mosquitto, [f"{HA}/#", f"{PREFIX}/+/state"])
    assert not [t for t in got if "_line_" in t or "_zone_" in t or "reset_counts" in t]
    assert "lines" not in json.loads(got[f"{PREFIX}/road/state"])


def test_a_removed_line_and_zone_are_cleared_also_across_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher
) -> None:
    hass = make(publisher, tmp_path)
    hass.set_cameras(["road"])
    hass.set_analytics({"road": NAMES})
    hass.tick()
    assert len([t for t in retained(mosquitto, f"{HA}/#") if "lane-2" in t]) == 3
    hass.set_analytics({"road": CameraAnalytics(lines=("gate",), zones=("bay",))})  # a reload dropped lane-2
    hass.tick()
    left = retained(mosquitto, f"{HA}/#")
    assert not [t for t in left if "lane-2" in t] and [t for t in left if "line_gate_in" in t]
    # edged restarts with the zone gone from the config while it was down: the saved topics say to clear it.
    again = make(publisher, tmp_path)
    again.set_cameras(["road"])
    again.set_analytics({"road": CameraAnalytics(lines=("gate",))})
    again.tick()
    left = retained(mosquitto, f"{HA}/#")
    assert not [t for t in left if "zone_bay" in t] and [t for t in left if "line_gate_crossing" in t]


@pytest.mark.parametrize("payload", [b"", b"PRESS", b"all", b"ALL "])
def test_reset_command_payloads(payload: bytes) -> None:
    from edged.daemon.commands import ResetCounts, parse_command

    assert parse_command("road", "reset_counts", payload, ["road"]) == ResetCounts("road", None)
    assert parse_command("road", "reset_counts", b" gate\n", ["road"]) == ResetCounts("road", "gate")
