"""The paho client as edged sets it up, and the pace of a backlog replay; used by MqttPublisher (publisher.py).

`make_client`: MQTT 5 (or 3.1.1, `mqtt.protocol`), a clean session, the retained "offline" last will on the status topic,
credentials, the in-flight window, no queue of paho's own (the outbox is the queue) and the reconnect
backoff. `use_tls`: the broker's CA, an optional client certificate, hostname checking. `ReplayPacer`:
a token bucket that lets backlog records out at most `rate` per second (bursts of a tenth of a second's
worth), so a long outage does not flood the broker or the uplink. The pacer is used by the sender
thread only.
"""

from __future__ import annotations

import ssl
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.config.schema import MqttConfig, TlsConfig


def make_client(cfg: MqttConfig, device: str, status_topic: str, max_inflight: int) -> mqtt.Client:
    client_id = cfg.client_id or f"edged-{device}"
    if cfg.protocol == "5":  # a clean start is asked for in connect (MQTT 5 has no clean_session)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    # paho annotates int but sleeps with floats
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
    client.will_set(status_topic, "offline", qos=1, retain=True)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
    return client


def expiry_properties(seconds: int) -> Properties:
    """MQTT 5 PUBLISH properties: the broker drops the message (a retained one included) after `seconds`."""
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


def use_tls(client: mqtt.Client, tls: TlsConfig) -> None:
    """Raises OSError (ssl.SSLError included) or ValueError for unusable files."""
    client.tls_set(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    client.tls_insecure_set(tls.insecure)


class ReplayPacer:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate / 10)
        self.tokens, self.last = 0.0, time.monotonic()

    def wait(self) -> None:
        """Take one token, sleeping until there is one."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            time.sleep((1 - self.tokens) / self.rate)
            self.tokens, self.last = 1.0, time.monotonic()
        self.tokens -= 1
