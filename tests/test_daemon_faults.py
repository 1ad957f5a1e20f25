"""Faults of the daemon itself, on a real `edged run` subprocess (issue 12, items 3, 4, 6 and 7).

An emptied config is refused at start and on SIGHUP; a retained command message never acts; a camera
without frames is healed in-process while the systemd watchdog keeps being fed; a SIGHUP during start-up
is caught and applied after start. Real mosquitto, real sd_notify socket, real signals and HTTP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.config import MqttConfig
from edged.mqtt_testing import Mosquitto, Subscriber, free_port
from tests._edged import (
    EdgedProcess,
    NotifySocket,
    camera,
    http_get,
    metric,
    small_sample,
    up,
    wait_until,
    write_config,
)
from tests._paths import ROOT


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def frames(health: int, cam: str) -> float:
    return metric(health, "edged_frames_total", f'camera="{cam}"') or 0.0


# --- item 3: a config without cameras -------------------------------------------------------------


def test_run_refuses_a_config_without_cameras_unless_opted_in(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "edged", "run", "--config", str(empty)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78, r.stderr
    assert f"{empty}: cameras: no cameras configured" in r.stderr
    assert "allow_no_cameras: true" in r.stderr and "Traceback" not in r.stderr

    health = free_port()
    dark = tmp_path / "dark.yaml"
    dark.write_text(
        json.dumps(
            {
                "mqtt": {"enabled": False},
                "health": {"port": health},
                "state_dir": str(tmp_path / "state"),
                "cameras": {},
                "allow_no_cameras": True,
            }
        )
    )
    proc = EdgedProcess(dark)
    try:
        assert wait_until(lambda: up(health), 60), proc.text()
        assert http_get(health, "/readyz")[0] == 200  # dark on purpose: nothing is missing
        assert proc.stop() == 0
    finally:
        proc.kill()


def test_reload_to_no_cameras_keeps_the_running_config(tmp_path: Path, notify: NotifySocket) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(tmp_path, {"gate": camera(video, fps=5, chain=False)}, health_port=health)
    proc = EdgedProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        assert wait_until(lambda: frames(health, "gate") >= 3, 60), proc.text()
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "cameras": {}}))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "no cameras configured" in proc.text(), 20), proc.text()
        assert "rejected, keeping the running one" in proc.text()
        before = frames(health, "gate")
        assert wait_until(lambda: frames(health, "gate") >= before + 3, 20), "the camera stopped"
        code, body = http_get(health, "/readyz")
        assert code == 200 and "gate" in json.loads(body)["cameras"]

        # Explicitly dark: the reload applies and the camera stops.
        config.write_text(json.dumps({**data, "cameras": {}, "allow_no_cameras": True}))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload: stopping camera gate" in proc.text(), 20), proc.text()
        assert wait_until(lambda: json.loads(http_get(health, "/readyz")[1])["cameras"] == {}, 20)
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.text()


# --- item 4: retained commands --------------------------------------------------------------------


def test_retained_command_is_ignored_live_one_acts(tmp_path: Path, mosquitto: Mosquitto) -> None:
    assert MqttConfig().commands is False  # commands stay off unless the config turns them on
    video = small_sample(tmp_path)
    health = free_port()
    cams = {"gate": camera(video, fps=4, chain=False)}
    config = write_config(tmp_path, cams, health_port=health, broker_port=mosquitto.port, commands=True)
    topic = "edged/test/gate/set/enabled"
    with Subscriber(mosquitto, ["edged/test/#"]) as sub:
        # An old order left on the broker: it would keep the camera off through every restart.
        sub.client.publish(topic, b"OFF", qos=1, retain=True).wait_for_publish(5)

        def state() -> bytes | None:
            msgs = sub.on("edged/test/gate/enabled")
            return msgs[-1].payload if msgs else None

        proc = EdgedProcess(config)
        try:
            line = f"MQTT command on {topic} ignored: it is a retained message"
            assert wait_until(lambda: line in proc.text(), 60), proc.text()
            assert f"mosquitto_pub -r -n -t '{topic}'" in proc.text()
            assert wait_until(lambda: state() == b"ON" and frames(health, "gate") >= 3, 30), proc.text()
            n = frames(health, "gate")
            assert wait_until(lambda: frames(health, "gate") > n, 10), "the retained OFF stopped the camera"
            # A live command still acts.
            sub.client.publish(topic, b"OFF", qos=1).wait_for_publish(5)
            assert wait_until(lambda: state() == b"OFF", 15), proc.text()
            assert proc.stop() == 0
        finally:
            proc.kill()
    log = proc.text()
    assert "Traceback" not in log and log.count("command: stopping camera gate") == 1
