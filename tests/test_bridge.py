"""Fleet layout (docs/fleet.md) with real processes: a real `edged run` publishes to a device-local
mosquitto that is bridged to a second, "central" mosquitto. Events and the retained availability
(online; offline after a clean stop and after a SIGKILL) arrive centrally, and a central broker restart
loses no event because the local broker queues them for the bridge."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.demo.sample import make_sample
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Message, Subscriber
from tests.support.edged import write_ocr_config
from tests.support.paths import ROOT, need_models

DEVICE = "dev-a"
PREFIX = f"edged/{DEVICE}"


class BridgedMosquitto(Mosquitto):
    """The device-local broker: a normal listener plus a bridge that pushes edged/# to `central`."""

    def __init__(self, workdir: Path, central: Mosquitto) -> None:
        self.central = central
        super().__init__(workdir)

    def _write_config(self) -> None:
        super()._write_config()
        bridge = [
            "connection central",
            f"address {self.central.host}:{self.central.port}",
            "topic edged/# out 1",  # QoS 1 end to end; only outbound: the central side never writes here
            f"remote_clientid bridge-{DEVICE}",
            "cleansession false",  # central keeps the bridge's session across reconnects
            "notifications true",  # retained 1/0 on $SYS/broker/connection/<remote_clientid>/state
            "restart_timeout 1 2",  # reconnect quickly in tests (default backoff is 5..30 s)
            "start_type automatic",
        ]
        with self.config_file.open("a") as f:
            f.write("\n".join(bridge) + "\n")


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Mosquitto, BridgedMosquitto]]:
    central = Mosquitto(tmp_path / "central", persistence=True).start()
    local = BridgedMosquitto(tmp_path / "local", central).start()
    yield central, local
    local.kill()
    central.kill()


def events(msgs: list[Message]) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in msgs if m.topic == f"{PREFIX}/gate/detections"]


def retained(broker: Mosquitto, topic: str) -> bytes | None:
    with Subscriber(broker, topic) as sub:
        sub.wait_for(lambda ms: bool(ms), 3)
        got = [m.payload for m in sub.messages if m.retain]
    return got[-1] if got else None


class EdgedProc:
    def __init__(self, config: Path) -> None:
        self.log = config.parent / f"edged-{time.monotonic_ns()}.log"
        with self.log.open("wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edged", "run", "--config", str(config)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=f,
            )

    def end(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def test_bridge_carries_events_and_availability_through_a_central_restart(
    tmp_path: Path, brokers: tuple[Mosquitto, BridgedMosquitto]
) -> None:
    central, local = brokers
    need_models()
    video = tmp_path / "plates.mp4"
    make_sample(video, frames=8, seed=7)
    config = write_ocr_config(
        tmp_path, video, broker_port=local.port, health_port=free_port(), device=DEVICE, fps=4, loop=True
    )

    # A persistent session on the central broker (with persistence): what a fleet backend would use.
    central_sub = Subscriber(central, "edged/#", client_id="backend", persistent=True).start()
    local_sub = Subscriber(local, f"{PREFIX}/#").start()
    edged = EdgedProc(config)
    try:
        assert central_sub.wait_for(
            lambda ms: any(m.topic == f"{PREFIX}/status" and m.payload == b"online" for m in ms), 60
        ), edged.text()
        assert central_sub.wait_for(lambda ms: len(events(ms)) >= 2, 120), edged.text()
        assert retained(central, f"$SYS/broker/connection/bridge-{DEVICE}/state") == b"1"

        # The central broker goes down; edged keeps publishing to its local broker, which queues.
        central_sub.stop()
        earlier = list(central_sub.messages)
        central.stop()
        before = len(events(local_sub.messages))
        assert local_sub.wait_for(lambda ms: len(events(ms)) >= before + 3, 120), edged.text()
        central.start()
        central_sub = Subscriber(central, "edged/#", client_id="backend", persistent=True).start()

        published = {e["id"] for e in events(local_sub.messages)}

        def all_arrived(ms: list[Message]) -> bool:
            return published <= {e["id"] for e in events(earlier + ms)}

        assert central_sub.wait_for(all_arrived, 60), (
            "lost across the central restart: "
            f"{sorted(published - {e['id'] for e in events(earlier + central_sub.messages)})}"
        )

        # Clean stop: edged says offline itself; the bridge carries it.
        assert edged.end(signal.SIGTERM) == 0, edged.text()
        assert central_sub.wait_for(
            lambda ms: ms[-1].topic == f"{PREFIX}/status" and ms[-1].payload == b"offline", 20
        )
        assert retained(central, f"{PREFIX}/status") == b"offline"

        # Back up, then killed: the local broker publishes the last will, the bridge carries it.
        edged = EdgedProc(config)
        assert central_sub.wait_for(
            lambda ms: [m.payload for m in ms if m.topic == f"{PREFIX}/status"][-1:] == [b"online"], 60
        ), edged.text()
        edged.end(signal.SIGKILL)
        assert central_sub.wait_for(
            lambda ms: [m.payload for m in ms if m.topic == f"{PREFIX}/status"][-1:] == [b"offline"], 60
        ), "the last will did not reach the central broker"
        assert retained(central, f"{PREFIX}/status") == b"offline"
    finally:
        edged.end(signal.SIGKILL)
        central_sub.stop()
        local_sub.stop()
