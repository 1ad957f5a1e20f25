"""MQTT clients for tests against a real broker (broker.py): a `Subscriber` (paho) that records every
message it receives, and real `MqttPublisher`s (each with its own outbox) made and stopped for a test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.broker import Mosquitto

log = logging.getLogger(__name__)


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    t: float = field(default_factory=time.monotonic)


class Subscriber:
    """A paho client that subscribes to `topics` and keeps every message, in arrival order.

    `persistent=True` uses a fixed client id and clean_session=False, so a broker with persistence
    queues QoS 1 messages for it while it or the broker is away.
    """

    def __init__(
        self,
        broker: Mosquitto,
        topics: list[str] | str = "#",
        *,
        qos: int = 1,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.broker = broker
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        cid = client_id or (f"sub-{os.getpid()}-{id(self):x}" if persistent else "")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not persistent)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file), cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # paho hints int, sleeps float
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if not rc.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def start(self, timeout_s: float = 10.0) -> Subscriber:
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise TimeoutError(f"subscriber did not subscribe to {self.topics} within {timeout_s}s")
        return self

    def stop(self) -> None:
        if self.client.disconnect() not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.debug("subscriber disconnect failed")
        self.client.loop_stop()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout_s: float = 10.0) -> bool:
        """Wait until predicate(messages) holds; False on timeout (the caller asserts)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PublisherFactory:
    """Builds MqttPublishers (each with its own outbox and metrics, not started) and, on exit, stops
    them and closes their outboxes."""

    def __init__(self) -> None:
        self.made: list[tuple[Any, Any]] = []

    def make(self, cfg: Any, device: str = "test", prefix: str = "edged/test") -> tuple[Any, Any]:
        from edged.observability.metrics import Metrics
        from edged.publish.mqtt.publisher import MqttPublisher
        from edged.publish.outbox.store import Outbox

        metrics = Metrics()
        box = Outbox(cfg.outbox, metrics)
        pub = MqttPublisher(cfg, device, prefix, box, metrics)
        self.made.append((pub, box))
        return pub, box

    def __enter__(self) -> PublisherFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        for pub, box in self.made:
            pub.stop(flush_timeout_s=0.5)
            box.close()


@contextlib.contextmanager
def running_publisher(
    broker: Mosquitto, outbox_dir: Path, *, device: str = "test", prefix: str = "edged/test"
) -> Iterator[Any]:
    """A started MqttPublisher (fast reconnects) with its own outbox, stopped and closed afterwards."""
    from edged.config.schema import MqttConfig, OutboxConfig

    cfg = MqttConfig(
        host=broker.host,
        port=broker.port,
        reconnect_min_s=0.1,
        reconnect_max_s=0.3,
        outbox=OutboxConfig(dir=outbox_dir),
    )
    with PublisherFactory() as factory:
        pub, _box = factory.make(cfg, device, prefix)
        pub.start()
        yield pub
