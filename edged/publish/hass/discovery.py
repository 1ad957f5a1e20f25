"""Home Assistant MQTT discovery (opt-in, `mqtt.hass.enabled`): edged shows up in HA with no YAML there.

One HA device per edged host (identifiers `edged_<device>`, so it cannot collide with another MQTT
device of the same name; `configuration_url` links the status page when it is reachable) and these
entities per camera, all fed by one retained JSON state message per camera, `<prefix>/<camera>/state`,
which is also every sensor's `json_attributes_topic` (so its fields show as attributes; `state`, a name
HA reserves, as `camera_state`, through `json_attributes_template`):

    {"online": "ON", "state": "streaming", "source_fps": 14.9, "processed_fps": 2.2,
     "drop_ratio": 0.852, "detections": 12, "last_text": "KA 1234",
     "last_event_at": "2026-01-31T12:34:56.789Z", "last_event_id": "..."}

Entities (docs/mqtt.md has the table): sensors `last_text`, `detections` (objects: a read text is not
a second object), `source_fps`, `processed_fps`, `drop_ratio` (shown in %), binary_sensor `online`;
with `mqtt.commands` also a switch (`enabled`, on the existing set/enabled command and the retained
`<camera>/enabled` state), a button (`snapshot`, on set/snapshot) and an image entity (`snapshot`)
showing the JPEG the button gets published on `<camera>/snapshot`. The `fps` sensor of earlier
releases (the source rate, easily misread as the processing rate) is deleted from HA on announce.
With `thumbnails.publish`, an image entity `<camera> last thumbnail` shows the JPEGs on
`<prefix>/<camera>/+/thumbnail`.

Discovery configs are retained under `<discovery_prefix>/<component>/<device>/<camera>_<key>/config`,
so HA finds them whenever it (re)starts. Availability follows edged's `<prefix>/status` (retained
"online", and "offline" as the last will), so every entity turns unavailable when edged dies.

Everything goes out from `tick()`, which the daemon's main loop calls a few times a second: it announces
on every (re)connection (a broker without persistence forgets retained messages), publishes a camera's
state at most once a second after an event and every `state_interval_s` otherwise. With MQTT 5 each
state carries a message expiry (`expiry_s`) and is refreshed every third of it, so after a crash the
broker drops it within `expiry_s`; a clean stop deletes it at once (`clear_states`). `on_event()` runs on
the camera's pipeline thread and only records, so no frame ever waits on the broker. When a camera
leaves the config (reload, or between runs: the announced set is kept in `state_path`, hass/announced.py) its retained
configs and state are cleared with empty retained messages, which is how HA is told to delete entities.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edged import __version__
from edged.publish.event import event_text, iso_utc_ms
from edged.publish.hass.analytics import CameraAnalytics, analytics_entities, analytics_state
from edged.publish.hass.announced import AnnouncedRecord
from edged.publish.hass.entities import (
    ATTRIBUTES_TEMPLATE,
    ENTITIES,
    REMOVED_ENTITIES,
    image_entity,
    snapshot_entity,
)

log = logging.getLogger(__name__)

EVENT_STATE_GAP_S = 1.0  # at most one state message per camera per second from events


class RawPublisher(Protocol):
    """What HassDiscovery needs of edged.publish.mqtt.MqttPublisher."""

    @property
    def connected(self) -> bool: ...

    def publish_raw(
        self,
        topic: str,
        payload: bytes | str,
        retain: bool = False,
        qos: int = 0,
        expiry_s: int | None = None,
    ) -> Any: ...


@dataclass
class _CameraState:
    detections: int = 0
    last_text: str | None = None
    last_event_at: str | None = None
    last_event_id: str | None = None
    dirty: bool = True
    sent_at: float = field(default=-1e9)


def status_page_url(bind: str, port: int, enabled: bool = True) -> str | None:
    """The health server's status page as HA (another host) can reach it; None when it cannot: the
    server is off, bound to loopback only, or on a port picked at start (0)."""
    if not enabled or port == 0 or bind.startswith("127.") or bind in ("localhost", "::1"):
        return None
    host = socket.getfqdn() if bind in ("0.0.0.0", "::", "") else bind
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class HassDiscovery:
    def __init__(
        self,
        publisher: RawPublisher,
        device: str,
        prefix: str,
        *,
        discovery_prefix: str = "homeassistant",
        state_interval_s: float = 10.0,
        status: Callable[[], dict[str, Any]] | None = None,
        state_path: Path | None = None,
        sw_version: str = __version__,
        clock: Callable[[], float] = time.monotonic,
        thumbnails: bool = False,
        commands: bool = False,
        configuration_url: str | None = None,
        expiry_s: int | None = None,
    ) -> None:
        self.publisher = publisher
        self.device = device
        self.prefix = prefix.rstrip("/")
        self.discovery_prefix = discovery_prefix.strip("/")  # mqtt.hass.discovery_prefix
        self.state_interval_s = state_interval_s  # mqtt.hass.state_interval_s
        self.status = status
        self.sw_version = sw_version
        self.clock = clock
        self.thumbnails = thumbnails  # thumbnails are published: announce the image entity
        self.commands = commands  # offer the enabled switch and snapshot button (mqtt.commands)
        self.configuration_url = configuration_url
        # MQTT 5 message expiry of the retained states (mqtt.state_expiry_s): refreshed every third of it,
        # so a state outlives a crashed edged by at most that long.
        self.expiry_s = expiry_s
        self.refresh_s = min(state_interval_s, expiry_s / 3) if expiry_s else state_interval_s
        self.availability_topic = f"{self.prefix}/status"
        self._lock = threading.Lock()
        self._cameras: dict[str, _CameraState] = {}
        self._announced = False  # on the current connection
        self._last_periodic = -1e9
        # Lines and zones per camera (edged.publish.hass.analytics); topics announced per camera, so
        # entities of a line or zone removed since are cleared too.
        self._analytics: dict[str, CameraAnalytics] = {}
        self.announced = AnnouncedRecord(state_path, self.discovery_prefix, device)  # across restarts

    # -- what the daemon calls ----------------------------------------------------------------

    def set_cameras(self, cameras: Iterable[str]) -> None:
        """The configured cameras (at start and after each reload); changes go out on the next tick."""
        names = list(cameras)
        with self._lock:
            self._cameras = {n: self._cameras.get(n, _CameraState()) for n in names}
            self._announced = False

    def set_analytics(self, cameras: dict[str, CameraAnalytics]) -> None:
        """Each camera's line and zone names (at start and after each reload); announced on the next tick."""
        with self._lock:
            self._analytics = dict(cameras)
            self._announced = False

    def on_event(self, camera: str, event: dict[str, Any]) -> None:
        """Record an event (pipeline thread): cheap, no network."""
        with self._lock:
            st = self._cameras.get(camera)
            if st is None:
                return
            st.detections += len(event.get("detections", []))
            st.last_text = event_text(event)
            st.last_event_id = event.get("id")
            st.last_event_at = event.get("captured_at") or iso_utc_ms(time.time())
            st.dirty = True

    def touch(self, camera: str) -> None:
        """The camera's state changed without a detection event (analytics counts, occupancy): publish
        it soon (pipeline thread; only records)."""
        with self._lock:
            st = self._cameras.get(camera)
            if st is not None:
                st.dirty = True

    def tick(self) -> None:
        """Announce after a (re)connection; publish due states. Call often (main loop)."""
        if not self.publisher.connected:
            self._announced = False
            return
        now = self.clock()
        periodic = now - self._last_periodic >= self.refresh_s
        if not self._announced:
            if not self._announce():
                return  # lost the connection midway: retry on the next tick
            self._announced = True
            periodic = True
        with self._lock:
            due = [
                n
                for n, st in self._cameras.items()
                if periodic or (st.dirty and now - st.sent_at >= EVENT_STATE_GAP_S)
            ]
        if not due:
            return
        cams = self._camera_status()
        for name in due:
            self._publish_state(name, cams.get(name, {}), now)
        if periodic:
            self._last_periodic = now

    def clear(self) -> None:
        """Remove every entity of this device from HA (e.g. when hass is switched off for good)."""
        self.set_cameras([])
        self.tick()

    def clear_states(self) -> None:
        """On a clean stop: delete the retained states (an empty retained message), so none claims a
        camera streams while edged is down; the entities stay, unavailable through <prefix>/status."""
        with self._lock:
            names = list(self._cameras)
        for name in names:
            self._send(self.state_topic(name), b"")

    # -- discovery ----------------------------------------------------------------------------

    def state_topic(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/state"

    def device_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "identifiers": [f"edged_{self.device}"],
            "name": self.device,
            "manufacturer": "edged",
            "model": "edged edge inference daemon",
            "sw_version": self.sw_version,
        }
        if self.configuration_url:
            info["configuration_url"] = self.configuration_url
        return info

    def _topic(self, component: str, camera: str, key: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.device}/{camera}_{key}/config"

    def _entity(self, camera: str, key: str, suffix: str) -> dict[str, Any]:
        return {
            "name": f"{camera} {suffix}",
            "unique_id": f"edged_{self.device}_{camera}_{key}",
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": self.device_info(),
            "origin": {"name": "edged", "sw_version": self.sw_version},
        }

    def discovery(self, camera: str) -> dict[str, dict[str, Any]]:
        """topic -> discovery config of every entity of `camera`."""
        out: dict[str, dict[str, Any]] = {}
        state = self.state_topic(camera)
        for key, (component, suffix, extra) in ENTITIES.items():
            out[self._topic(component, camera, key)] = {
                **self._entity(camera, key, suffix),
                "state_topic": state,
                "json_attributes_topic": state,
                "json_attributes_template": ATTRIBUTES_TEMPLATE,  # `state` arrives as `camera_state`
                **extra,
            }
        if self.thumbnails:
            out[self.image_config_topic(camera)] = {
                **image_entity(camera, self.prefix),
                "unique_id": f"edged_{self.device}_{camera}_thumbnail",
                "availability_topic": self.availability_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": self.device_info(),
                "origin": {"name": "edged", "sw_version": self.sw_version},
            }
        names = self._analytics.get(camera)
        if names is not None:  # lines and zones (edged.publish.hass.analytics)
            for key, (component, suffix, extra) in analytics_entities(
                camera, self.prefix, names, self.commands
            ).items():
                entity = {**self._entity(camera, key, suffix), **extra}
                if component in ("sensor", "binary_sensor"):
                    entity = {
                        **entity,
                        "state_topic": state,
                        "json_attributes_topic": state,
                        "json_attributes_template": ATTRIBUTES_TEMPLATE,
                    }
                out[self._topic(component, camera, key)] = entity
        if self.commands:  # the commands edged.daemon.commands already serves, as HA controls
            base = f"{self.prefix}/{camera}"
            out[self._topic("switch", camera, "enabled")] = {
                **self._entity(camera, "enabled", "enabled"),
                "command_topic": f"{base}/set/enabled",
                "state_topic": f"{base}/enabled",  # retained ON/OFF, published by edged.daemon.controller
                "payload_on": "ON",
                "payload_off": "OFF",
                "icon": "mdi:cctv",
            }
            out[self._topic("button", camera, "snapshot")] = {
                **self._entity(camera, "snapshot", "snapshot"),
                "command_topic": f"{base}/set/snapshot",
                "payload_press": "PRESS",
                "icon": "mdi:camera",
            }
            # The JPEG the button asks for, shown in HA (the image entity reads <camera>/snapshot).
            out[self._topic("image", camera, "snapshot")] = {
                **self._entity(camera, "snapshot_image", "last snapshot"),
                **snapshot_entity(camera, self.prefix),
            }
        return out

    def image_config_topic(self, camera: str) -> str:
        return f"{self.discovery_prefix}/image/{self.device}/{camera}_thumbnail/config"

    def _all_topics(self, camera: str) -> list[str]:
        """Every discovery topic edged may have used for `camera` (for clearing)."""
        extra = [
            self._topic("switch", camera, "enabled"),
            self._topic("button", camera, "snapshot"),
            self._topic("image", camera, "snapshot"),
        ]
        earlier = self.announced.topics().get(camera, [])  # a line or zone since removed
        return list(dict.fromkeys([*self.discovery(camera), *extra, *self._removed_topics(camera), *earlier]))

    def _removed_topics(self, camera: str) -> list[str]:
        return [self._topic(comp, camera, key) for key, comp in REMOVED_ENTITIES.items()]

    def _announce(self) -> bool:
        with self._lock:
            names = list(self._cameras)
        gone = sorted(self.announced.names() - set(names))
        for name in gone:
            log.info("Home Assistant: removing camera %s (no longer configured)", name)
            for topic in self._all_topics(name):
                if not self._send(topic, b""):
                    return False
            if not self._send(self.state_topic(name), b""):
                return False
        for name in names:
            configs = self.discovery(name)
            # Entities this edged no longer offers (an old release's, or commands switched off).
            stale = [t for t in self._all_topics(name) if t not in configs]
            for topic in stale:
                if not self._send(topic, b""):
                    return False
            for topic, body in configs.items():
                if not self._send(topic, json.dumps(body, separators=(",", ":"))):
                    return False
        # Image entities announced earlier (by a run with thumbnails.publish) that should not be there now.
        for name in sorted(
            self.announced.names("image_cameras") - (set(names) if self.thumbnails else set())
        ):
            if not self._send(self.image_config_topic(name), b""):
                return False
        images = names if self.thumbnails else []  # cameras with an image entity
        self.announced.save(names, images, {n: sorted(self.discovery(n)) for n in names})
        log.info(
            "Home Assistant: announced %d camera(s) under %s/+/%s/",
            len(names),
            self.discovery_prefix,
            self.device,
        )
        return True

    def _camera_status(self) -> dict[str, Any]:
        if self.status is None:
            return {}
        try:
            cams = self.status().get("cameras", {})
        except Exception:  # the daemon's status must never break HA updates
            log.exception("Home Assistant: reading the daemon status failed")
            return {}
        return cams if isinstance(cams, dict) else {}

    def state(self, camera: str, cam_status: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            st = self._cameras.get(camera) or _CameraState()
            names = self._analytics.get(camera)
            extra = analytics_state(names, cam_status) if names is not None else {}
            return {
                "online": "ON" if cam_status.get("state") == "streaming" else "OFF",
                "state": cam_status.get("state", "stopped"),
                "source_fps": round(float(cam_status.get("source_fps") or 0.0), 2),
                "processed_fps": round(float(cam_status.get("processed_fps") or 0.0), 2),
                "drop_ratio": round(float(cam_status.get("drop_ratio") or 0.0), 3),
                "detections": st.detections,
                "last_text": st.last_text,
                "last_event_at": st.last_event_at,
                "last_event_id": st.last_event_id,
                **extra,
            }

    def _publish_state(self, camera: str, cam_status: dict[str, Any], now: float) -> None:
        body = json.dumps(self.state(camera, cam_status), separators=(",", ":"))
        if self._send(self.state_topic(camera), body, self.expiry_s):
            with self._lock:
                st = self._cameras.get(camera)
                if st is not None:
                    st.dirty = False
                    st.sent_at = now

    def _send(self, topic: str, payload: bytes | str, expiry_s: int | None = None) -> bool:
        return self.publisher.publish_raw(topic, payload, retain=True, qos=1, expiry_s=expiry_s) is not None
