"""TLS and authentication against a real mosquitto with a TLS listener and a password file."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.config.schema import MqttConfig, OutboxConfig, TlsConfig
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.outbox.store import Outbox
from tests.support.broker import Mosquitto
from tests.support.clients import PublisherFactory, Subscriber
from tests.support.tls import TlsFiles, make_tls_files

pytest.importorskip("cryptography")

USER, PASSWORD = "edge", "s3cret-Pa55-word"
PREFIX = "edged/tls-dev"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    d = tmp_path_factory.mktemp("pki")
    return {"trusted": make_tls_files(d, name="trusted"), "other": make_tls_files(d, name="other")}


@pytest.fixture
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, TlsFiles]) -> Iterator[Mosquitto]:
    broker = Mosquitto(
        tmp_path_factory.mktemp("mosq-tls"), tls=pki["trusted"], users={USER: PASSWORD, "watcher": "w"}
    )
    with broker:
        yield broker


@pytest.fixture
def make_pub(tmp_path: Path) -> Iterator[Any]:
    with PublisherFactory() as factory:

        def make(broker: Mosquitto, ca: Path, password: str = PASSWORD) -> tuple[MqttPublisher, Outbox]:
            cfg = MqttConfig(
                host=broker.host,
                port=broker.port,
                username=USER,
                password=password,  # type: ignore[arg-type]  # pydantic turns it into SecretStr
                reconnect_min_s=0.2,
                reconnect_max_s=0.5,
                tls=TlsConfig(enabled=True, ca_file=ca),
                outbox=OutboxConfig(dir=tmp_path / f"outbox{len(factory.made)}", fsync="never"),
            )
            return factory.make(cfg, "tls-dev", PREFIX)

        yield make


def wait_until(cond: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(cond())


def test_tls_with_right_credentials_delivers(
    tls_broker: Mosquitto, pki: dict[str, TlsFiles], make_pub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ca = pki["trusted"].ca_file
    with Subscriber(tls_broker, f"{PREFIX}/#", username="watcher", password="w", ca_file=ca) as sub:
        pub, box = make_pub(tls_broker, ca)
        pub.start()
        for i in range(20):
            pub.publish("gate", {"id": f"e{i}", "camera": "gate", "seq": i})
        assert sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/detections")]) >= 20)
        seqs = [json.loads(m.payload)["seq"] for m in sub.messages if m.topic.endswith("/detections")]
        assert seqs == list(range(20))
        assert pub.state == "connected" and pub.wait_drained(5) and box.depth == 0
    assert PASSWORD not in caplog.text


def test_wrong_password_is_one_clear_error_and_events_keep_buffering(
    tls_broker: Mosquitto, pki: dict[str, TlsFiles], make_pub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-" + PASSWORD
    pub, box = make_pub(tls_broker, pki["trusted"].ca_file, password=wrong)
    pub.start()
    assert wait_until(lambda: pub.state == "auth_failed"), f"state {pub.state}, last error {pub.last_error}"
    for i in range(10):
        pub.publish("gate", {"id": f"e{i}", "camera": "gate"})
        time.sleep(0.1)  # a second of retries at 0.2..0.5 s backoff
    assert pub.state == "auth_failed" and box.depth == 10
    assert pub.metrics.registry.get_sample_value("edged_mqtt_reconnects_total") >= 1  # it did retry
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("edged")]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    msg = errors[0].getMessage()
    assert f"{tls_broker.host}:{tls_broker.port}" in msg
    assert "not authorized" in msg.lower() or "password" in msg.lower()
    assert wrong not in caplog.text and PASSWORD not in caplog.text
    assert wrong not in repr(pub.cfg) and wrong not in str(pub.last_error)


def test_untrusted_certificate_is_tls_failed(
    tls_broker: Mosquitto, pki: dict[str, TlsFiles], make_pub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pub, box = make_pub(tls_broker, pki["other"].ca_file)  # trusts a CA that did not sign the broker
    pub.start()
    assert wait_until(lambda: pub.state == "tls_failed"), f"state {pub.state}, last error {pub.last_error}"
    pub.publish("gate", {"id": "e0", "camera": "gate"})
    time.sleep(1.0)
    assert pub.state == "tls_failed" and box.depth == 1
    errors = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("edged")
    ]
    assert len(errors) == 1, errors
    assert "certificate verify failed" in errors[0].lower() or "certificate" in errors[0].lower()
    assert f"{tls_broker.host}:{tls_broker.port}" in errors[0]
    assert PASSWORD not in caplog.text


def test_credential_from_load_credential_never_in_logs_or_stats(tmp_path: Path) -> None:
    """`edged run` with the password from $CREDENTIALS_DIRECTORY (systemd LoadCredential) and a broker
    that rejects it: the secret appears neither in the log nor in /stats or /metrics."""
    import json
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.support.broker import free_port
    from tests.support.edged import wait_until

    secret = "s3cr3t-" + "x" * 12
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text(secret + "\n")
    broker = Mosquitto(tmp_path / "broker", users={"edge": "other-password"})
    health = free_port()
    config = tmp_path / "edged.yaml"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(tmp_path / "state"),
                "mqtt": {
                    "port": broker.port,
                    "username": "edge",
                    "password": "${cred:mqtt_password}",
                    "outbox": {"dir": str(tmp_path / "outbox")},
                    "reconnect_max_s": 1,
                },
                "health": {"port": health},
                "allow_no_cameras": True,
            }
        )
    )
    log = tmp_path / "edged.log"
    with broker, log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config)],
            stderr=err,
            env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)},
        )
        try:
            assert wait_until(
                lambda: "Not authorized" in log.read_text() or "auth" in log.read_text().lower(), 30
            )
            pages = b""
            for path in ("/stats", "/metrics", "/readyz"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{health}{path}", timeout=5) as r:
                        pages += r.read()
                except urllib.error.HTTPError as e:  # /readyz answers 503 while the broker refuses us
                    pages += e.read()
        finally:
            proc.terminate()
            proc.wait(30)
    text = log.read_text()
    assert secret not in text and secret.encode() not in pages
    assert b"auth_failed" in pages  # the refusal itself is visible, just not the secret
