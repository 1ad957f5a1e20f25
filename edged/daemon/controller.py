"""Run-time control of the daemon over MQTT: enable/disable a camera, send a snapshot, reset its line
counts, and the retained `<prefix>/<camera>/enabled` states.

A `Controller` is composed into the daemon (edged/daemon/daemon.py) when `mqtt.commands` is on: it
takes the commands that edged/daemon/commands.py parsed and queued, and acts on them through the
`Supervisor` (which owns the cameras and the run-time overrides) and the MQTT publisher. Threads: the
daemon's main loop only (`execute`, `announce`, `reannounce`), never paho's network thread, which only
queues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edged.daemon.commands import Command, ModelCommand, ResetCounts, SetEnabled, Snapshot
from edged.daemon.supervisor import Supervisor
from edged.daemon.switching import ModelSwitching
from edged.publish.mqtt.publisher import MqttPublisher

log = logging.getLogger("edged")


class Controller:
    def __init__(
        self,
        supervisor: Supervisor,
        publisher: MqttPublisher,
        prefix: str,
        snapshot: Callable[[str], bytes | None],
        switching: ModelSwitching,
        expiry_s: int | None = None,
        on_counts_reset: Callable[[str], None] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.switching = switching  # model commands: update, force, rollback (switches)
        self.publisher = publisher
        self.prefix = prefix
        self.snapshot = snapshot  # camera -> its annotated JPEG, or None
        self.on_counts_reset = on_counts_reset  # camera -> None: its counts changed (Home Assistant state)
        self._announced = False  # the retained <camera>/enabled states went out on this connection
        # MQTT 5 message expiry of the enabled states (mqtt.state_expiry_s): refreshed every third of it.
        self.expiry_s = expiry_s
        self._refreshed = 0.0
        self._published: set[str] = set()  # cameras whose enabled state is retained on the broker

    def execute(self, command: Command) -> None:
        if isinstance(
            command, ModelCommand
        ):  # a switch of a model's engine (edged.daemon.switching); never raises
            self.switching.execute(command)
            return
        name = command.camera
        if name not in self.supervisor.cfg.cameras:  # removed by a reload since it was queued
            log.warning("MQTT command for camera %s dropped: no such camera any more", name)
            return
        if isinstance(command, SetEnabled):
            self._set_enabled(name, command.enabled)
        elif isinstance(command, Snapshot):
            self._publish_snapshot(name)
        elif isinstance(command, ResetCounts):
            self._reset_counts(name, command.line)

    def _reset_counts(self, name: str, line: str | None) -> None:
        lines = sorted(self.supervisor.cfg.cameras[name].analytics.lines)
        if line is not None and line not in lines:
            log.warning(
                "MQTT command reset_counts for camera %s refused: no line %r (lines: %s)",
                name,
                line[:64],
                ", ".join(lines) or "none",
            )
            return
        done = self.supervisor.line_counts.reset(name, line)
        log.info("command: line counts of camera %s reset: %s", name, ", ".join(done) or "no lines")
        if self.on_counts_reset is not None:
            self.on_counts_reset(name)

    def _set_enabled(self, name: str, enabled: bool) -> None:
        sup = self.supervisor
        sup.enabled_override[name] = enabled
        running = name in sup.cameras
        if enabled and not running:
            log.info("command: starting camera %s", name)
            sup.start_camera(name)
        elif not enabled and running:
            log.info("command: stopping camera %s", name)
            sup.stop_camera(name)
        else:
            log.info("command: camera %s is already %s", name, "running" if running else "stopped")
        self._publish_enabled(name)

    def _publish_snapshot(self, name: str) -> None:
        jpg = self.snapshot(name)
        if jpg is None:
            log.warning("command: no snapshot of camera %s (stopped, or no frame yet)", name)
            return
        topic = f"{self.prefix}/{name}/snapshot"
        if self.publisher.publish_raw(topic, jpg, retain=False, qos=0) is None:
            log.warning("command: snapshot of camera %s not sent: broker not connected", name)
            return
        log.info("command: snapshot of camera %s sent to %s (%d bytes)", name, topic, len(jpg))

    def _publish_enabled(self, name: str) -> None:
        state = "ON" if name in self.supervisor.cameras else "OFF"
        topic = f"{self.prefix}/{name}/enabled"
        if self.publisher.publish_raw(topic, state, retain=True, qos=1, expiry_s=self.expiry_s) is not None:
            self._published.add(name)

    def announce(self) -> None:
        """Publish every camera's retained enabled state once per connection (and after a reload), and
        again every third of its expiry; a camera that left the config has its state deleted."""
        if not self.publisher.connected:
            self._announced = False
            return
        now = time.monotonic()
        due = self.expiry_s is not None and now - self._refreshed >= self.expiry_s / 3
        if not self._announced or due:
            self._announced = True
            self._refreshed = now
            for name in sorted(self._published - set(self.supervisor.cfg.cameras)):
                self.publisher.publish_raw(f"{self.prefix}/{name}/enabled", b"", retain=True, qos=1)
                self._published.discard(name)
            for name in self.supervisor.cfg.cameras:
                self._publish_enabled(name)

    def clear(self) -> None:
        """On a clean stop: delete the retained enabled states, which say what runs *now*."""
        for name in sorted(self._published):
            self.publisher.publish_raw(f"{self.prefix}/{name}/enabled", b"", retain=True, qos=1)
        self._published.clear()

    def reannounce(self) -> None:
        """Cameras may have come or gone (a reload): republish every enabled state on the next tick."""
        self._announced = False
