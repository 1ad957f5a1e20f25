"""Home Assistant entities of a camera's scene analytics (docs/mqtt.md has the table); data only, discovery.py
sends them with the camera's other entities.

Per line: sensors `<line> in` and `<line> out` (counts since start or the last reset; total_increasing,
so HA's statistics take a reset as a new cycle) and an `event` entity `<line> crossing` (event types
`in`, `out`; attributes the track, its label, what was read on it, its speed). Per zone: a sensor
`<zone> occupancy` (objects inside), a binary_sensor `<zone> occupied` (device class occupancy) and an
`event` entity `<zone> activity` (enter, exit, loiter). With `mqtt.commands`, a button `reset counts`
(the set/reset_counts command). Sensors read the camera's retained state (`lines`, `zones` keys, which
`analytics_state` fills); event entities subscribe to the camera's crossings/<line> and zones/<zone>
topics, whose payloads (edged.crossing/1, edged.zone/1) a value template turns into HA's
`{"event_type": ...}` form.

Names may hold '-' and `in` is a Jinja operator, so templates index with brackets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Entity = tuple[str, str, dict[str, Any]]  # (component, name suffix, extra discovery fields)


@dataclass(frozen=True)
class CameraAnalytics:
    """The names HA needs of one camera's analytics."""

    lines: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()


def analytics_entities(camera: str, prefix: str, names: CameraAnalytics, commands: bool) -> dict[str, Entity]:
    """key -> entity of the camera's lines and zones (keys are unique per camera)."""
    out: dict[str, Entity] = {}
    base = f"{prefix}/{camera}"
    for line in names.lines:
        for direction in ("in", "out"):
            out[f"line_{line}_{direction}"] = (
                "sensor",
                f"{line} {direction}",
                {
                    "value_template": f"{{{{ value_json.lines['{line}']['{direction}'] }}}}",
                    "state_class": "total_increasing",
                    "icon": "mdi:arrow-right-bold" if direction == "in" else "mdi:arrow-left-bold",
                },
            )
        out[f"line_{line}_crossing"] = (
            "event",
            f"{line} crossing",
            {
                "state_topic": f"{base}/crossings/{line}",
                "event_types": ["in", "out"],
                "value_template": "{{ {'event_type': value_json.direction, 'track_id': value_json.track_id, "
                "'label': value_json.label, 'texts': value_json.texts, 'speed_kmh': value_json.speed_kmh, "
                "'at': value_json.at} | tojson }}",
                "icon": "mdi:transit-transfer",
            },
        )
    for zone in names.zones:
        out[f"zone_{zone}_occupancy"] = (
            "sensor",
            f"{zone} occupancy",
            {
                "value_template": f"{{{{ value_json.zones['{zone}']['occupancy'] }}}}",
                "state_class": "measurement",
                "icon": "mdi:account-group",
            },
        )
        out[f"zone_{zone}_occupied"] = (
            "binary_sensor",
            f"{zone} occupied",
            {
                "value_template": f"{{{{ 'ON' if value_json.zones['{zone}']['occupancy'] > 0 else 'OFF' }}}}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "occupancy",
            },
        )
        out[f"zone_{zone}_activity"] = (
            "event",
            f"{zone} activity",
            {
                "state_topic": f"{base}/zones/{zone}",
                "event_types": ["enter", "exit", "loiter"],
                "value_template": "{{ {'event_type': value_json.type, 'track_id': value_json.track_id, "
                "'label': value_json.label, 'texts': value_json.texts, 'dwell_s': value_json.dwell_s, "
                "'speed_kmh': value_json.speed_kmh, 'at': value_json.at} | tojson }}",
                "icon": "mdi:map-marker-radius",
            },
        )
    if commands and names.lines:
        out["reset_counts"] = (
            "button",
            "reset counts",
            {"command_topic": f"{base}/set/reset_counts", "payload_press": "PRESS", "icon": "mdi:counter"},
        )
    return out


def analytics_state(names: CameraAnalytics, cam_status: Mapping[str, Any]) -> dict[str, Any]:
    """The `lines` and `zones` keys of the camera's state message, from its /stats status (zeros for
    what the status does not hold yet, so every template has its value)."""
    status = cam_status.get("analytics") or {}
    lines = status.get("lines") or {}
    zones = status.get("zones") or {}
    return {
        "lines": {
            n: {"in": int(lines.get(n, {}).get("in", 0)), "out": int(lines.get(n, {}).get("out", 0))}
            for n in names.lines
        },
        "zones": {
            n: {
                "occupancy": int(zones.get(n, {}).get("occupancy", 0)),
                "by_label": dict(zones.get(n, {}).get("by_label", {})),
            }
            for n in names.zones
        },
    }
