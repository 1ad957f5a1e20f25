"""Daemon liveness (edged.observability.health.liveness): named checks over real threads, the main-loop heartbeat, the
MQTT publisher's own check against a real broker, and the watchdog fed by them over a real sd_notify socket."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edged.observability.health.liveness import Heartbeat, Liveness
from edged.observability.health.notify import Notifier, Watchdog
from tests.support.broker import Mosquitto
from tests.support.clients import running_publisher
from tests.support.edged import NotifySocket, wait_until


def thread_check(t: threading.Thread) -> tuple[bool, str]:
    return (True, "") if t.is_alive() else (False, f"thread {t.name} has ended")


def test_first_failing_check_is_named_and_a_raising_check_is_a_failure() -> None:
    done = threading.Event()
    worker = threading.Thread(target=done.wait, name="worker", daemon=True)
    worker.start()
    checks = Liveness()
    checks.add("main loop", lambda: (True, ""))
    checks.add("worker", lambda: thread_check(worker))
    assert checks() == (True, "")
    done.set()
    worker.join()
    assert checks() == (False, "worker: thread worker has ended")

    def broken() -> tuple[bool, str]:
        raise KeyError("gone")

    checks.remove("worker")
    checks.add("model server det", broken)
    assert checks.names == ["main loop", "model server det"]
    assert checks() == (False, "model server det: check failed: KeyError: 'gone'")


def test_heartbeat_goes_stale_unless_busy_within_its_limit() -> None:
    hb = Heartbeat(stall_s=0.2)
    assert hb.check() == (True, "")
    time.sleep(0.3)
    ok, why = hb.check()
    assert not ok and why.startswith("no round for")
    hb.beat()
    assert hb.check() == (True, "")
    with hb.busy("reload", limit_s=60):
        time.sleep(0.3)
        assert hb.check() == (True, "")  # a long reload is not a stall
    with hb.busy("reload", limit_s=0.1):
        time.sleep(0.2)
        ok, why = hb.check()
        assert not ok and why.startswith("reload running for")
    assert hb.check() == (True, "")  # leaving busy() counts as a round


def test_watchdog_stops_pinging_when_a_supervised_thread_dies() -> None:
    sock = NotifySocket()
    done = threading.Event()
    worker = threading.Thread(target=done.wait, name="mqtt-sender", daemon=True)
    worker.start()
    checks = Liveness()
    checks.add("publisher", lambda: thread_check(worker))
    wd = Watchdog(Notifier(str(sock.path)), checks, interval_s=0.05)
    wd.start()
    try:
        assert wait_until(lambda: wd.pings >= 3, 10, step=0.02)
        done.set()
        worker.join()
        t_dead = time.monotonic()
        time.sleep(0.5)  # ten intervals
        pings = [t for t, line in sock.lines() if line == "WATCHDOG=1"]
        assert len([t for t in pings if t > t_dead + 0.1]) == 0, "pinged after the thread died"
    finally:
        wd.stop()
        sock.close()


def test_publisher_healthy_follows_its_threads(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running_publisher(mosquitto, tmp_path / "outbox") as pub:
        assert wait_until(lambda: pub.connected, 10)
        assert pub.healthy()[0] is True
        mosquitto.stop()  # disconnected is not dead: paho reconnects by itself
        assert wait_until(lambda: not pub.connected, 10)
        assert pub.healthy()[0] is True
        pub._client.loop_stop()  # paho's network thread really ends (as when a callback raises in it)
        assert pub.healthy() == (False, "paho's MQTT network thread has ended")
