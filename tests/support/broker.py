"""Test helpers with a real broker: a mosquitto subprocess and a collecting subscriber.

Used by edged's own tests and usable in users' integration tests. `Mosquitto` writes a config file,
starts /usr/sbin/mosquitto on a free local port and can be stopped, killed and started again on the
SAME port, so that clients reconnect to it as they would to a rebooted broker. `Subscriber` is a paho
client that records every message it receives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
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

log = logging.getLogger(__name__)

MOSQUITTO = os.environ.get("EDGED_MOSQUITTO", shutil.which("mosquitto") or "/usr/sbin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    """PEM files of a TLS listener (server side)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path, *, name: str = "test", host: str = "127.0.0.1") -> TlsFiles:
    """A fresh CA and a server certificate it signed for `host` (IP or DNS name), as PEM files.

    Needs the `cryptography` package (a dev/test dependency, imported here only).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([alt, x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        directory / f"{name}-ca.pem", directory / f"{name}-server.pem", directory / f"{name}-server.key"
    )
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(pem_key(key))
    files.key_file.chmod(0o600)
    return files


class Mosquitto:
    """A mosquitto broker subprocess on 127.0.0.1:<port>, restartable on the same port.

    `users` (name → password) turns on a password file and disables anonymous access; `tls` makes the
    listener TLS-only; `persistence` keeps retained messages, sessions and queued QoS 1 messages across
    restarts, saved after every change so that even `kill()` (SIGKILL) loses nothing.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls = tls
        self.users = users
        self.persistence = persistence
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "log_dest stderr",
            "log_type all",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to user "mosquitto", which cannot read a root-only tmp dir.
            lines.append("user root")
        if self.users is not None:
            pw_file = self.workdir / "passwords"
            pw_file.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self.users.items()):
                flag = ["-c"] if i == 0 else []
                subprocess.run(
                    ["mosquitto_passwd", *flag, "-b", str(pw_file), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                "tls_version tlsv1.2",
            ]
        if self.persistence:
            data = self.workdir / "data"
            data.mkdir(exist_ok=True)
            lines += [
                "persistence true",
                f"persistence_location {data}/",
                "autosave_interval 1",
                "autosave_on_changes true",
            ]
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Mosquitto:
        if self.running:
            return self
        logf = self.log_file.open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_file)], stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            # A bound port may still belong to the previous process in TIME_WAIT; connect proves it is ours.
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port}: {self.log_tail()}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful shutdown (SIGTERM): clients see a disconnect, persistence is saved."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a power cut; no will of its own, no goodbye to clients."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


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
        from edged.publish.mqtt import MqttPublisher
        from edged.publish.outbox import Outbox

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
