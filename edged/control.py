"""Run-time control of the daemon over MQTT: enable/disable a camera, send a snapshot, and the retained
`<prefix>/<camera>/enabled` states. A mixin of edged.app.Daemon, kept apart from the lifecycle code."""

from __future__ import annotations

import logging

from edged.commands import Command, CommandQueue, ModelCommand, SetEnabled, Snapshot
from edged.config import Config
from edged.publish.mqtt import MqttPublisher
from edged.runtime import CameraRunner
from edged.updates import ModelUpdates

log = logging.getLogger("edged")


class CommandControl:
    # Provided by the Daemon this is mixed into.
    cfg: Config
    cameras: dict[str, CameraRunner]
    publisher: MqttPublisher | None
    commands: CommandQueue | None
    _enabled_override: dict[str, bool]
    _announced: bool
    updates: ModelUpdates

    def _start_camera(self, name: str) -> None:
        raise NotImplementedError

    def snapshot(self, camera: str) -> bytes | None:
        raise NotImplementedError

    def execute(self, command: Command) -> None:
        if isinstance(command, ModelCommand):  # live model update (edged.updates)
            self.updates.execute(command)
            return
        name = command.camera
        if name not in self.cfg.cameras:  # removed by a reload since it was queued
            log.warning("MQTT command for camera %s dropped: no such camera any more", name)
            return
        if isinstance(command, SetEnabled):
            self._set_enabled(name, command.enabled)
        elif isinstance(command, Snapshot):
            self._publish_snapshot(name)

    def _set_enabled(self, name: str, enabled: bool) -> None:
        self._enabled_override[name] = enabled
        running = name in self.cameras
        if enabled and not running:
            log.info("command: starting camera %s", name)
            self._start_camera(name)
        elif not enabled and running:
            log.info("command: stopping camera %s", name)
            self.cameras.pop(name).stop()
        else:
            log.info("command: camera %s is already %s", name, "running" if running else "stopped")
        self._publish_enabled(name)

    def _publish_snapshot(self, name: str) -> None:
        jpg = self.snapshot(name)
        if jpg is None:
            log.warning("command: no snapshot of camera %s (stopped, or no frame yet)", name)
            return
        topic = f"{self.cfg.topic_prefix}/{name}/snapshot"
        if self.publisher is None or self.publisher.publish_raw(topic, jpg, retain=False, qos=0) is None:
            log.warning("command: snapshot of camera %s not sent: broker not connected", name)
            return
        log.info("command: snapshot of camera %s sent to %s (%d bytes)", name, topic, len(jpg))

    def _publish_enabled(self, name: str) -> None:
        if self.publisher is not None:
            state = "ON" if name in self.cameras else "OFF"
            self.publisher.publish_raw(f"{self.cfg.topic_prefix}/{name}/enabled", state, retain=True, qos=1)

    def _announce_enabled(self) -> None:
        """Publish every camera's retained enabled state once per connection (and after a reload)."""
        if self.commands is None or self.publisher is None:
            return
        if not self.publisher.connected:
            self._announced = False
            return
        if not self._announced:
            self._announced = True
            for name in self.cfg.cameras:
                self._publish_enabled(name)
