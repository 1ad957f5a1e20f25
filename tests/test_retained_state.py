"""Retained per-camera states that cannot lie, on a real mosquitto and a real `edged run`: with MQTT 5
they carry a message expiry and are refreshed while edged runs, so after a SIGKILL the broker drops them
once the expiry passes (only the last will remains); a clean stop deletes them at once. With
`mqtt.protocol: 3.1.1` (no expiry in the protocol) the last will on <prefix>/status is what tells."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import EdgedProcess, camera, small_sample, wait_until, write_config

PREFIX = "edged/test"
EXPIRY_S = 3


def start(tmp_path: Path, broker: Mosquitto, protocol: str) -> EdgedProcess:
    health = free_port()
    config = write_config(
        tmp_path,
        {"gate": camera(small_sample(tmp_path), fps=5, chain=False)},
        health_port=health,
        broker_port=broker.port,
        commands=True,
    )
    cfg: dict[str, Any] = json.loads(config.read_text())
    cfg["mqtt"].update(
        {"protocol": protocol, "state_expiry_s": EXPIRY_S, "hass": {"enabled": True, "state_interval_s": 10}}
    )
    config.write_text(json.dumps(cfg))
    return EdgedProcess(config)


def retained(broker: Mosquitto, settle_s: float = 1.0) -> dict[str, bytes]:
    """What a subscriber arriving now is handed: the broker's retained messages under the prefix."""
    with Subscriber(broker, f"{PREFIX}/#") as sub:
        time.sleep(settle_s)
        return {m.topic: m.payload for m in sub.messages if m.retain and m.payload}


def test_mqtt5_states_expire_after_sigkill_and_go_on_a_clean_stop(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    proc = start(tmp_path, mosquitto, "5")
    try:

        def streaming() -> bool:
            state = retained(mosquitto, 0.3).get(f"{PREFIX}/gate/state")
            return state is not None and json.loads(state)["state"] == "streaming"

        assert wait_until(streaming, 60), proc.text()
        # Refreshed while running: still there after more than one expiry.
        time.sleep(EXPIRY_S + 1)
        held = retained(mosquitto)
        assert json.loads(held[f"{PREFIX}/gate/state"])["state"] == "streaming", held
        assert held[f"{PREFIX}/gate/enabled"] == b"ON"

        proc.send_signal(signal.SIGKILL)
        proc.proc.wait(10)
        killed = time.monotonic()
        # The last will says offline at once; the states are gone within their expiry.
        assert wait_until(lambda: retained(mosquitto, 0.3).get(f"{PREFIX}/status") == b"offline", 10)
        assert wait_until(lambda: f"{PREFIX}/gate/state" not in retained(mosquitto, 0.3), EXPIRY_S + 5)
        assert time.monotonic() - killed <= EXPIRY_S + 5
        left = retained(mosquitto)
        assert set(left) == {f"{PREFIX}/status"}, left  # nothing claims the camera streams, or is on
    finally:
        proc.kill()

    # A clean stop deletes them at once, before "offline".
    proc = start(tmp_path, mosquitto, "5")
    try:
        assert wait_until(lambda: f"{PREFIX}/gate/state" in retained(mosquitto, 0.3), 60), proc.text()
        assert proc.stop() == 0
        assert set(retained(mosquitto)) == {f"{PREFIX}/status"}
    finally:
        proc.kill()


def test_mqtt311_has_no_expiry_and_the_last_will_tells(tmp_path: Path, mosquitto: Mosquitto) -> None:
    proc = start(tmp_path, mosquitto, "3.1.1")
    try:
        assert wait_until(lambda: f"{PREFIX}/gate/state" in retained(mosquitto, 0.3), 60), proc.text()
        proc.send_signal(signal.SIGKILL)
        proc.proc.wait(10)
        time.sleep(EXPIRY_S + 1)
        left = retained(mosquitto)
        # What docs/mqtt.md says of 3.1.1: the state stays until overwritten; the status is the truth.
        assert left[f"{PREFIX}/status"] == b"offline"
        assert json.loads(left[f"{PREFIX}/gate/state"])["state"] == "streaming"
    finally:
        proc.kill()
