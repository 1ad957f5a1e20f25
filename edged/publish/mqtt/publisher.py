"""MQTT publishing of events through the disk outbox: at-least-once, in order per camera.

`publish()` only appends to the outbox (the durability point) and wakes the sender thread; it never
waits on the network. The sender drains the outbox in sequence order into paho (QoS 1 by default), at
most `max_inflight` messages unacknowledged; a record is acked in the outbox only when its PUBACK comes
back (on_publish, matched by mid). Because one queue feeds the broker in append order, a backlog replayed
after a reconnect or a restart and live events can never overtake each other within a camera. Backlog
records (those already waiting when the connection came up) go out at most cfg.outbox.replay_rate per
second so a long outage does not flood the broker or the uplink; newer records follow right behind.

Messages paho has sent but not seen acknowledged stay in paho's memory and are resent (DUP) by paho after a
reconnect; after a process restart the outbox replays them. Either way consumers may see an event twice and
de-duplicate by its `id`.

Topics: `<prefix>/status` (retained "online"/"offline"; "offline" is also the last will),
`<prefix>/<camera>/detections`, and optionally commands under `<prefix>/<camera>/set/...` (retained
command messages are ignored: only live ones act).
Connection failures never raise: paho's network thread retries with backoff (reconnect_min_s..max_s),
`state`/`last_error` tell what happened, and each new cause is logged once.

Threads: paho's network thread runs our callbacks, each wrapped by a CallbackGuard so no exception of
ours can end that thread; the sender thread runs under `supervise` (restarted after a failure, given up
after repeated ones). `healthy()` says whether publishing can continue (both threads alive, TLS usable);
the daemon turns a False into /readyz 503 with the reason and stops the systemd watchdog.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edged.config.schema import MqttConfig
from edged.observability import threads
from edged.observability.metrics import Metrics
from edged.publish.mqtt.client import ReplayPacer, expiry_properties, make_client, use_tls
from edged.publish.mqtt.guards import CallbackGuard, supervise
from edged.publish.mqtt.mids import MidBook
from edged.publish.outbox.store import Outbox, OutboxRecord

log = logging.getLogger(__name__)

State = Literal["connected", "connecting", "disconnected", "auth_failed", "tls_failed"]
CommandCallback = Callable[[str, str, bytes], None]
AUTH_REASONS = {"Bad user name or password", "Not authorized"}


class MqttPublisher:
    def __init__(
        self,
        cfg: MqttConfig,
        device: str,
        prefix: str,
        outbox: Outbox,
        metrics: Metrics,
        *,
        max_inflight: int = 100,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.prefix = prefix.rstrip("/")
        self.outbox = outbox
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.status_topic = f"{self.prefix}/status"
        self.broker = f"{cfg.host}:{cfg.port}"
        self._state: State = "disconnected"
        self.last_error: str | None = None
        self._command_cb: CommandCallback | None = None
        self._cond = threading.Condition()  # wakes the sender: append, ack, connect, stop
        self._stopping = False
        self._stop_event = threading.Event()  # the same, for the sender's supervisor
        self._fatal: str | None = None  # why publishing cannot continue (a thread of ours ended)
        self.restart_pause_s = 1.0
        self._guard = CallbackGuard(f"MQTT {self.broker}")
        self._sender: threading.Thread | None = None
        self._started = False
        self._attempts = 0
        self._backlog_end = 0  # records up to this seq are replayed at replay_rate
        self._inflight = MidBook()  # which PUBACK acknowledges which outbox record

        self._client = make_client(cfg, device, self.status_topic, max_inflight)
        guard = self._guard.wrap
        self._client.on_pre_connect = guard(self._on_pre_connect)
        self._client.on_connect = guard(self._on_connect)
        self._client.on_connect_fail = guard(self._on_connect_fail)
        self._client.on_disconnect = guard(self._on_disconnect)
        self._client.on_publish = guard(self._on_publish)
        self._client.on_message = guard(self._on_message)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    def healthy(self) -> tuple[bool, str]:
        """Whether publishing can continue, and why not (or what is degraded but still working).

        A broker that cannot be reached is not a failure here: paho keeps reconnecting and the outbox
        keeps the events, and restarting edged would not bring the broker back.
        """
        if self._fatal is not None:
            return False, self._fatal
        if not self._started:
            why = f"TLS: {self.last_error}" if self._state == "tls_failed" else "publisher not started"
            return False, why
        if self._sender is None or not self._sender.is_alive():
            return False, "MQTT sender thread is not running"
        network = self._client._thread  # paho offers no public accessor for its loop thread
        if network is None or not network.is_alive():
            return False, "paho's MQTT network thread has ended"
        notes = [self._state if self.last_error is None else f"{self._state}: {self.last_error}"]
        durable, outbox = self.outbox.health()
        if outbox and (durable or self.outbox.lost is not None):
            notes.append(outbox)  # a lost directory is retried in-process: a restart cannot do better
        elif outbox:
            return False, outbox
        if self._guard.last_error is not None:
            notes.append(f"last callback error: {self._guard.last_error}")
        return True, "; ".join(notes)

    def ready(self) -> tuple[bool, str]:
        """Readiness (/readyz): healthy, and the outbox can keep what it is given (not while its
        directory is gone: events then live in memory only)."""
        ok, why = self.healthy()
        if ok and self.outbox.lost is not None:
            return False, why
        return ok, why

    def start(self) -> None:
        """Connect in the background; never blocks and never raises for an unreachable broker."""
        if self._started:
            return
        self._started = True
        if self.cfg.tls.enabled and not self._setup_tls():
            self._started = False  # unusable TLS files: events stay in the outbox, healthy() says why
            return
        self._sender = threading.Thread(target=self._sender_main, name="mqtt:send", daemon=True)
        self._sender.start()
        self._state = "connecting"
        if self.cfg.protocol == "5":  # a clean start on every connection, as clean_session does in 3.1.1
            self._client.connect_async(
                self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=True
            )
        else:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        threads.library_threads({"paho-mqtt-client-": "mqtt:net"})  # paho's network loop, by role
        self._client.loop_start()

    def _setup_tls(self) -> bool:
        try:
            use_tls(self._client, self.cfg.tls)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            self._failed("tls_failed", f"cannot load TLS files: {e}")
            return False
        return True

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Drain the outbox (while connected, up to flush_timeout_s), say "offline", disconnect."""
        if not self._started:
            return
        deadline = time.monotonic() + flush_timeout_s
        self.wait_drained(flush_timeout_s)
        with self._cond:
            self._stopping = True
            self._stop_event.set()
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join()
        if self.connected:
            info = self._publish_untracked(self.status_topic, "offline", 1, True)
            try:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as e:
                log.warning("MQTT %s: could not publish offline status: %s", self.broker, e)
        self._client.disconnect()
        self._client.loop_stop()
        self._set_connected(False)
        self._state = "disconnected"
        self._started = False
        log.info("MQTT %s: stopped (%d events left in the outbox)", self.broker, self.outbox.depth)

    def wait_drained(self, timeout_s: float) -> bool:
        """Wait until every outbox record is acknowledged; gives up early when the connection is down."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.outbox.depth > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self.connected or self._fatal is not None:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, camera: str, payload: dict[str, Any], channel: str = "detections") -> OutboxRecord:
        """Queue one event durably; it goes to <prefix>/<camera>/<channel> when the broker is reachable."""
        rec = self.outbox.append(f"{self.prefix}/{camera}/{channel}", payload, camera=camera)
        self.metrics.events.labels(camera=camera).inc()
        with self._cond:
            self._cond.notify_all()
        return rec

    def publish_raw(
        self,
        topic: str,
        payload: bytes | str,
        retain: bool = False,
        qos: int = 0,
        expiry_s: int | None = None,
    ) -> mqtt.MQTTMessageInfo | None:
        """Send outside the outbox (stats, discovery); None while disconnected: such messages go stale.
        `expiry_s` (MQTT 5 only; ignored with 3.1.1): the broker drops the message after that long, a
        retained one too, so a state nobody refreshes any more cannot outlive its publisher."""
        if not self.connected:
            return None
        return self._publish_untracked(topic, payload, qos, retain, expiry_s)

    def _publish_untracked(
        self, topic: str, payload: bytes | str, qos: int, retain: bool, expiry_s: int | None = None
    ) -> mqtt.MQTTMessageInfo:
        props = expiry_properties(expiry_s) if expiry_s and self.cfg.protocol == "5" else None
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        self._inflight.sent_untracked(info.mid)  # so its on_publish is not taken for an event's
        return info

    def on_command(self, callback: CommandCallback) -> None:
        """Call callback(camera, command, payload) for messages on <prefix>/<camera>/set/<command>."""
        self._command_cb = callback
        if self.cfg.commands and self.connected:
            self._client.subscribe(f"{self.prefix}/+/set/#", qos=1)

    # -- sender thread -------------------------------------------------------------------------

    def _sender_main(self) -> None:
        supervise(
            "MQTT sender",
            self._send_loop,
            stopping=self._stop_event,
            on_give_up=self._give_up,
            pause_s=self.restart_pause_s,
        )

    def _give_up(self, reason: str) -> None:
        self._fatal = reason
        with self._cond:
            self._cond.notify_all()

    def _send_loop(self) -> None:
        cursor = 0  # highest seq handed to paho; paho itself resends what it holds after a reconnect
        pacer = ReplayPacer(self.cfg.outbox.replay_rate)
        while True:
            with self._cond:
                while not self._stopping and not (
                    self.connected
                    and len(self._inflight) < self.max_inflight
                    and self.outbox.last_seq > cursor
                ):
                    if self.connected and not self._inflight and self.outbox.depth:
                        cursor = 0  # nothing in flight yet records remain: resend them (e.g. paho lost them)
                        break
                    self._cond.wait(0.5)
                if self._stopping:
                    return
                free = self.max_inflight - len(self._inflight)
            batch = self.outbox.pending(min(free, 50), after=cursor)
            if not batch:
                if cursor == 0:  # a full resend found nothing readable now (disk read error): not a spin
                    with self._cond:
                        self._cond.wait(0.5)
                cursor = self.outbox.last_seq  # the rest was acked or dropped meanwhile
                continue
            for rec in batch:
                if rec.seq <= self._backlog_end:
                    pacer.wait()
                if self._stopping or not self.connected:
                    break
                if not self._send(rec):
                    break
                cursor = rec.seq

    def _send(self, rec: OutboxRecord) -> bool:
        try:
            info = self._client.publish(rec.topic, rec.payload_bytes(), qos=self.cfg.qos)
        except ValueError as e:  # topic or payload paho refuses: retrying cannot help
            log.error("MQTT: event %s on %s cannot be published (%s); dropping it", rec.id, rec.topic, e)
            self.outbox.drop(rec.seq, "refused")
            return True
        # NO_CONN: paho keeps the message and sends it after the reconnect, so it is in flight all the same.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("MQTT %s: publish failed: %s", self.broker, mqtt.error_string(info.rc))
            return False
        if self._inflight.sent_event(info.mid, rec.seq):  # its PUBACK came already
            self._acked(rec.seq)
        return True

    def _acked(self, seq: int) -> None:
        # Ack and count under the lock wait_drained reads the depth with: drained means counted too.
        with self._cond:
            if self.outbox.ack(seq):
                self.metrics.published.inc()
            self._cond.notify_all()

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._attempts += 1
        if self._attempts > 1:
            self.metrics.mqtt_reconnects.inc()
        if self._state == "disconnected":
            self._state = "connecting"

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            name = rc.getName()
            state: State = "auth_failed" if name in AUTH_REASONS else "disconnected"
            what = "check mqtt.username/password" if state == "auth_failed" else "refused"
            self._failed(state, f"broker refused the connection: {name} ({what})")
            return
        was_error = self.last_error
        self.last_error = None
        self._backlog_end = self.outbox.last_seq
        self._set_connected(True)
        log.info(
            "MQTT %s: connected%s; %d events waiting in the outbox",
            self.broker,
            f" (after: {was_error})" if was_error else "",
            self.outbox.depth,
        )
        self._publish_untracked(self.status_topic, "online", 1, True)
        if self.cfg.commands and self._command_cb is not None:
            client.subscribe(f"{self.prefix}/+/set/#", qos=1)
        with self._cond:
            self._state = "connected"
            self._cond.notify_all()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, so the exception is still current.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError):
            detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            self._failed("tls_failed", f"TLS handshake failed: {detail}")
        else:
            detail = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or "unknown"
            self._failed("disconnected", f"cannot connect: {detail}")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        was_connected = self.connected
        self._set_connected(False)
        with self._cond:
            if self._state in ("connected", "connecting"):
                self._state = "disconnected"
            self._cond.notify_all()
        if was_connected and not self._stopping:
            # paho reports a dropped socket as "Unspecified error"; the broker's own reasons are clearer as is
            cause = "" if rc.getName() == "Unspecified error" else f": {rc.getName()}"
            self.last_error = f"connection lost{cause}"
            log.warning(
                "MQTT %s: %s; reconnecting, events are kept in the outbox", self.broker, self.last_error
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        seq = self._inflight.acked(mid)
        if seq is not None:
            self._acked(seq)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        cb = self._command_cb
        rest = msg.topic[len(self.prefix) + 1 :] if msg.topic.startswith(self.prefix + "/") else ""
        camera, _, tail = rest.partition("/")
        kind, _, command = tail.partition("/")
        if cb is None or kind != "set" or not camera or not command:
            return
        if msg.retain:
            # A retained command is an old order replayed by the broker at every (re)subscription: acting
            # on it would, e.g., keep a camera off through every restart. Only live commands count.
            log.warning(
                "MQTT command on %s ignored: it is a retained message (clear it with: "
                "mosquitto_pub -r -n -t '%s')",
                msg.topic,
                msg.topic,
            )
            return
        try:
            cb(camera, command, bytes(msg.payload))
        except Exception:  # a bad command must not kill the network thread
            log.exception("MQTT command %s on camera %s failed", command, camera)

    # -- helpers -------------------------------------------------------------------------------

    def _failed(self, state: State, cause: str) -> None:
        self._state = state
        if cause == self.last_error:
            return  # same cause as last time: paho keeps retrying quietly
        self.last_error = cause
        level = logging.WARNING if state == "disconnected" else logging.ERROR
        log.log(
            level,
            "MQTT %s: %s; retrying every %g..%gs, events are kept in the outbox",
            self.broker,
            cause,
            self.cfg.reconnect_min_s,
            self.cfg.reconnect_max_s,
        )

    def _set_connected(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)
