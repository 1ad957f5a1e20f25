"""What edged announces to Home Assistant per camera: the entity table (docs/mqtt.md shows it) and the
image entity of the thumbnails. Data only; discovery.py turns it into discovery configs and sends them.
"""

from __future__ import annotations

from typing import Any

# Entities of earlier releases, deleted from HA when announcing: key -> component.
REMOVED_ENTITIES = {"fps": "sensor"}

# HA drops JSON attributes with these names (homeassistant/components/mqtt/entity.py,
# MQTT_ATTRIBUTES_BLOCKED); the state message's `state` is one of them, so every entity's attributes
# template passes it on as `camera_state` (the other fields as they are).
ATTRIBUTES_TEMPLATE = "{{ dict(value_json, camera_state=value_json.state) | tojson }}"

_FPS = {"unit_of_measurement": "fps", "state_class": "measurement", "suggested_display_precision": 1}

# key -> (component, entity name suffix, extra discovery fields); all read the camera's state topic.
ENTITIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "last_text": (
        "sensor",
        "last text",
        {"value_template": "{{ value_json.last_text }}", "icon": "mdi:text-recognition"},
    ),
    "detections": (
        "sensor",
        "detections",
        {
            "value_template": "{{ value_json.detections }}",
            "state_class": "total_increasing",
            "icon": "mdi:counter",
        },
    ),
    "source_fps": (
        "sensor",
        "source fps",
        {"value_template": "{{ value_json.source_fps }}", **_FPS, "icon": "mdi:camera-timer"},
    ),
    "processed_fps": (
        "sensor",
        "processed fps",
        {"value_template": "{{ value_json.processed_fps }}", **_FPS, "icon": "mdi:speedometer"},
    ),
    "drop_ratio": (
        "sensor",
        "dropped",
        {
            "value_template": "{{ (value_json.drop_ratio * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "suggested_display_precision": 0,
            "icon": "mdi:filter-remove",
        },
    ),
    "online": (
        "binary_sensor",
        "online",
        {
            "value_template": "{{ value_json.online }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "connectivity",
        },
    ),
}


def snapshot_entity(camera: str, prefix: str) -> dict[str, Any]:
    """The camera's snapshot image entity (with `mqtt.commands`): shows the JPEG the snapshot button
    asks for, published (not retained) on `<prefix>/<camera>/snapshot`."""
    return {
        "name": f"{camera} last snapshot",
        "image_topic": f"{prefix}/{camera}/snapshot",
        "content_type": "image/jpeg",
        "icon": "mdi:camera",
    }


def image_entity(camera: str, prefix: str) -> dict[str, Any]:
    """The camera's image entity: HA subscribes to every label's retained thumbnail topic of the camera
    (a wildcard is a valid subscribe topic there), so it shows whichever thumbnail came last."""
    return {
        "name": f"{camera} last thumbnail",
        "image_topic": f"{prefix}/{camera}/+/thumbnail",
        "content_type": "image/jpeg",
        "icon": "mdi:image-search",
    }
