"""MQTT commands: `<prefix>/<camera>/set/<command>` parsed into typed commands, queued for the main loop.

Commands arrive in paho's network thread. Parsing there is cheap and pure (`parse_command`); the work
(stopping a camera can take seconds, a snapshot encodes a JPEG) is handed to the daemon's main loop
through `CommandQueue`, so the network thread never stalls keepalives or PUBACKs.

Commands:
- `set/enabled`  payload ON/OFF/true/false/1/0 (case-insensitive, surrounding whitespace ignored):
  start or stop the camera's runner at run time. Nothing is persisted: a restart follows the config.
- `set/snapshot` any payload: publish the camera's current annotated JPEG to `<prefix>/<camera>/snapshot`.
- `set/reset_counts` payload empty, `PRESS` (Home Assistant's button) or `all`: zero the camera's line
  crossing counts; payload a line's name: that line's only (edged.analytics; checked in the main loop).
- `<prefix>/<model>/set/update|force|rollback`: a switch of the model's engine (edged.daemon.switching):
  the payload of update/force names a file already on the device; rollback takes any payload.

Anything else (unknown camera or command, payload over MAX_PAYLOAD bytes, bad UTF-8, a value that is not
a boolean) becomes a `CommandError`; the caller logs it as one warning line. Nothing here raises.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

MAX_PAYLOAD = 1024
# Enough for bursts from a dashboard; beyond it commands are refused (a flood must not grow memory).
QUEUE_SIZE = 64
_TRUE = frozenset({"on", "true", "1"})
_FALSE = frozenset({"off", "false", "0"})


@dataclass(frozen=True)
class SetEnabled:
    camera: str
    enabled: bool


@dataclass(frozen=True)
class Snapshot:
    camera: str


@dataclass(frozen=True)
class ResetCounts:
    camera: str
    line: str | None = None  # None: every line of the camera


@dataclass(frozen=True)
class ModelCommand:
    model: str
    action: Literal["update", "force", "rollback"]
    path: str = ""  # as sent; checked by edged.daemon.switching in the main loop (where it can reply)


MODEL_COMMANDS: tuple[Literal["update", "force", "rollback"], ...] = ("update", "force", "rollback")
Command = SetEnabled | Snapshot | ResetCounts | ModelCommand
_ALL_LINES = frozenset({"", "press", "all"})


@dataclass(frozen=True)
class CommandError:
    camera: str
    command: str
    reason: str


def _printable(text: str, limit: int = 80) -> str:
    """A topic part fit for one log line: control characters escaped, length bounded."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


def parse_command(
    camera: str, command: str, payload: bytes, cameras: Collection[str], models: Collection[str] = ()
) -> Command | CommandError:
    """The command for a message on <prefix>/<camera or model>/set/<command>, or why it is refused.
    Never raises."""

    def error(reason: str) -> CommandError:
        return CommandError(camera, command, reason)

    action = next((a for a in MODEL_COMMANDS if a == command), None)
    if action is not None:
        if camera not in models:
            return error(f"unknown model {_printable(camera)!r}")
        try:
            text = payload.decode("utf-8").strip() if len(payload) <= MAX_PAYLOAD else None
        except UnicodeDecodeError:
            return error("payload is not valid UTF-8")
        if text is None:
            return error(f"payload too long ({len(payload)} bytes, at most {MAX_PAYLOAD})")
        return ModelCommand(camera, action, "" if action == "rollback" else text)

    if camera not in cameras:
        return error(f"unknown camera {_printable(camera)!r}")
    if len(payload) > MAX_PAYLOAD:
        return error(f"payload too long ({len(payload)} bytes, at most {MAX_PAYLOAD})")
    if command == "snapshot":
        return Snapshot(camera)
    if command == "reset_counts":
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            return error("payload is not valid UTF-8")
        return ResetCounts(camera, None if text.lower() in _ALL_LINES else text)
    if command == "enabled":
        try:
            text = payload.decode("utf-8").strip().lower()
        except UnicodeDecodeError:
            return error("payload is not valid UTF-8")
        if text in _TRUE:
            return SetEnabled(camera, True)
        if text in _FALSE:
            return SetEnabled(camera, False)
        return error(f"payload {_printable(text, 32)!r} is not one of ON/OFF/true/false/1/0")
    return error(f"unknown command {_printable(command)!r} (known: enabled, snapshot, reset_counts)")


class CommandQueue:
    """Parses in the caller's (network) thread, queues valid commands for the main loop."""

    def __init__(self, prefix: str, cameras: Collection[str], models: Collection[str] = ()) -> None:
        self.prefix = prefix
        self.cameras = cameras
        self.models = models
        self._queue: queue.Queue[Command] = queue.Queue(QUEUE_SIZE)

    def set_names(self, cameras: Collection[str], models: Collection[str]) -> None:
        """The cameras and models commands may name (after each reload)."""
        self.cameras, self.models = cameras, models

    def topic(self, camera: str, command: str) -> str:
        return f"{self.prefix}/{_printable(camera)}/set/{_printable(command)}"

    def submit(self, camera: str, command: str, payload: bytes) -> None:
        """MqttPublisher.on_command callback; never raises."""
        self.offer(camera, command, payload)

    def offer(self, camera: str, command: str, payload: bytes) -> Command | CommandError:
        """Parse and queue; one warning log line per refused command. Never raises."""
        try:
            parsed = parse_command(camera, command, payload, self.cameras, self.models)
            if isinstance(parsed, CommandError):
                log.warning("MQTT command on %s refused: %s", self.topic(camera, command), parsed.reason)
                return parsed
            self._queue.put_nowait(parsed)
        except queue.Full:
            reason = f"too many commands waiting ({QUEUE_SIZE})"
            log.warning("MQTT command on %s refused: %s", self.topic(camera, command), reason)
            return CommandError(camera, command, reason)
        except Exception as exc:  # the network thread must survive anything
            log.warning(
                "MQTT command on %s refused: %s: %s", self.topic(camera, command), type(exc).__name__, exc
            )
            return CommandError(camera, command, str(exc))
        log.info("MQTT command on %s queued: %s", self.topic(camera, command), parsed)
        return parsed

    def get(self, timeout_s: float) -> Command | None:
        """The next command, or None after timeout_s (the main loop's tick)."""
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
