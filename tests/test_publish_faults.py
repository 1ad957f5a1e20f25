"""The publisher when things break under it: a full disk while acknowledgements arrive, an exception in
a paho callback, a sender thread that keeps failing; and the daemon's readiness, /stats and systemd
watchdog when publishing cannot continue.

Real parts: mosquitto, paho, the outbox on real files, the health server over HTTP, an sd_notify socket.
Faults are passed in by the test: the FailingDisk file-operations hook (tests/support/faults.py), or an Outbox
method replaced on the instance with one that raises (a stand-in for a bug, named `injected`).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edged.config.loader import load_config
from edged.config.schema import MqttConfig, OutboxConfig
from edged.daemon.daemon import Daemon
from edged.observability.metrics import Metrics
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.outbox.store import Outbox
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import NotifySocket, camera, http_get, small_sample, wait_until, write_config
from tests.support.faults import FailingDisk

PREFIX = "edged/test-dev"


def cfg(broker: Mosquitto, outbox_dir: Path) -> MqttConfig:
    return MqttConfig(
        host=broker.host,
        port=broker.port,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        outbox=OutboxConfig(dir=outbox_dir, fsync="never", replay_rate=1000.0),
    )


def delivered(sub: Subscriber) -> set[int]:
    return {json.loads(m.payload)["n"] for m in list(sub.messages) if m.topic.endswith("/detections")}


def publish(pub: MqttPublisher, numbers: range) -> None:
    for n in numbers:
        pub.publish("gate", {"id": f"test-dev:gate:r:{n}", "camera": "gate", "n": n})


def test_disk_full_while_acks_arrive_keeps_publishing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    disk = FailingDisk(kind=".ack")  # the ack logs cannot grow: every PUBACK hits ENOSPC
    box = Outbox(cfg(mosquitto, tmp_path / "outbox").outbox, ops=disk, retry_s=0.1)
    pub = MqttPublisher(cfg(mosquitto, tmp_path / "outbox"), "test-dev", PREFIX, box, Metrics())
    with Subscriber(mosquitto, f"{PREFIX}/+/detections") as sub:
        try:
            disk.full_after(0)
            pub.start()
            # Watched from beside: once everything is delivered the outbox empties its active segment
            # within a tick (outbox.Outbox), which makes the refused acks moot and ends the disk error.
            seen: list[tuple[str, bool, str]] = []
            done = threading.Event()

            def watch() -> None:
                while not done.wait(0.002):
                    seen.append((box.state, *pub.healthy()))

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                publish(pub, range(50))
                assert sub.wait_for(lambda ms: delivered(sub) == set(range(50)), 15), sorted(delivered(sub))
                assert wait_until(lambda: box.depth == 0, 5)
            finally:
                done.set()
                watcher.join()
            errors = [(ok, why) for state, ok, why in seen if state == "disk_error"]
            assert errors and all(ok and "outbox disk error" in why for ok, why in errors), seen[-3:]
            assert pub._client._thread is not None and pub._client._thread.is_alive()
            disk.full_after(None)  # space returns: later events flow and the held acks are written
            publish(pub, range(50, 100))
            assert sub.wait_for(lambda ms: delivered(sub) == set(range(100)), 15)
            assert wait_until(lambda: box.depth == 0 and box.state == "ok", 5)
            assert pub.healthy()[0]
        finally:
            pub.stop(flush_timeout_s=1)
            box.close()
    again = Outbox(OutboxConfig(dir=tmp_path / "outbox"))
    assert again.depth == 0, "acknowledged events would be replayed after a restart"
    again.close()


def test_exception_in_a_paho_callback_never_ends_publishing(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Outbox(cfg(mosquitto, tmp_path / "outbox").outbox)
    real_ack = box.ack
    failures = {"left": 5}

    def injected(seq: int) -> bool:  # a bug in the acknowledgement path, for the first five PUBACKs
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("injected fault in ack")
        return real_ack(seq)

    monkeypatch.setattr(box, "ack", injected)
    pub = MqttPublisher(cfg(mosquitto, tmp_path / "outbox"), "test-dev", PREFIX, box, Metrics())
    with Subscriber(mosquitto, f"{PREFIX}/+/detections") as sub:
        try:
            pub.start()
            publish(pub, range(30))
            # The five whose ack raised stay pending and are sent again: duplicates, never losses.
            assert sub.wait_for(lambda ms: delivered(sub) == set(range(30)), 15)
            assert wait_until(lambda: box.depth == 0, 10), box.depth
            ok, why = pub.healthy()
            assert ok and "injected fault in ack" in why, why
            assert pub._client._thread is not None and pub._client._thread.is_alive()
        finally:
            pub.stop(flush_timeout_s=1)
            box.close()
    tracebacks = [r for r in caplog.records if r.exc_info and "_on_publish" in r.getMessage()]
    assert len(tracebacks) == 1, [r.getMessage() for r in caplog.records]


def test_sender_that_keeps_failing_is_reported_not_silent(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Outbox(cfg(mosquitto, tmp_path / "outbox").outbox)

    def injected(*a: Any, **kw: Any) -> list[Any]:
        raise RuntimeError("injected fault in pending")

    monkeypatch.setattr(box, "pending", injected)
    pub = MqttPublisher(cfg(mosquitto, tmp_path / "outbox"), "test-dev", PREFIX, box, Metrics())
    pub.restart_pause_s = 0.05
    try:
        pub.start()
        assert wait_until(lambda: pub.connected, 10)
        assert pub.healthy()[0]
        publish(pub, range(1))
        assert wait_until(lambda: not pub.healthy()[0], 10)
        ok, why = pub.healthy()
        assert not ok
        assert "MQTT sender thread ended" in why and "injected fault in pending" in why, why
        assert pub._sender is not None and not pub._sender.is_alive()
    finally:
        pub.stop(flush_timeout_s=0.5)
        box.close()


def test_daemon_readiness_stats_and_watchdog_when_publishing_cannot_continue(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = free_port()
    path = write_config(
        tmp_path,
        {"gate": camera(small_sample(tmp_path), fps=5, chain=False)},
        health_port=health,
        broker_port=mosquitto.port,
    )
    notify = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = Daemon(load_config(path), path)
    try:
        daemon.start()
        assert daemon.publisher is not None
        assert wait_until(lambda: http_get(health, "/readyz")[0] == 200, 20), http_get(health, "/readyz")
        stats = json.loads(http_get(health, "/stats")[1])
        assert stats["mqtt"]["healthy"] is True and stats["mqtt"]["outbox_dropped"]["disk_full"] == 0

        def injected(*a: Any, **kw: Any) -> list[Any]:
            raise RuntimeError("injected fault in pending")

        monkeypatch.setattr(daemon.publisher.outbox, "pending", injected)
        daemon.publisher.publish("gate", {"id": "x", "camera": "gate"})
        t_fault = time.monotonic()
        assert wait_until(lambda: http_get(health, "/readyz")[0] == 503, 15)
        body = json.loads(http_get(health, "/readyz")[1])
        assert body["publisher"]["ok"] is False
        assert "MQTT sender thread ended" in body["publisher"]["reason"]
        stats = json.loads(http_get(health, "/stats")[1])
        assert stats["mqtt"]["healthy"] is False and "sender" in stats["mqtt"]["reason"]
        t_unready = time.monotonic()
        time.sleep(2.5)  # five ping intervals
        pings = [t for t, line in notify.lines() if line == "WATCHDOG=1"]
        assert pings and max(pings) < t_unready, "the watchdog kept pinging while publishing was dead"
        print(
            f"\n[publisher death] unready {t_unready - t_fault:.1f} s after the fault; last ping "
            f"{max(pings) - t_fault:+.1f} s; silent since"
        )
    finally:
        daemon.shutdown(flush_timeout_s=0.5)
        notify.close()
