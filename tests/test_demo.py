"""scripts/demo.sh and scripts/show_detections.py as a user runs them: a real broker, real edged, and
Ctrl-C delivered the way a terminal does (SIGINT to the whole foreground process group)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Mosquitto, free_port
from tests.support.edged import repo_copy, wait_until
from tests.support.paths import ROOT


def test_demo_stops_edged_before_the_broker_on_ctrl_c(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    env = {
        **os.environ,
        "EDGED_DEMO_SETUP": "0",  # this environment already has edged
        "EDGED_MQTT_PORT": str(free_port()),
        "EDGED_HEALTH_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(repo),
    }
    out = tmp_path / "demo.out"
    with out.open("wb") as f:
        # A session of its own, like a terminal's foreground job: Ctrl-C is SIGINT to that process group.
        proc = subprocess.Popen(
            ["bash", "scripts/demo.sh"],
            cwd=repo,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        header = re.compile(r"^camera\s+frame\s+latency\s+read$", re.M)
        event = re.compile(r"^gate\s+#\d+\s+\d+ ms  \S", re.M)
        assert wait_until(lambda: header.search(out.read_text()) and event.search(out.read_text()), 120), (
            out.read_text()[-3000:]
        )
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)  # raises if the demo does not stop
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text()
    assert "demo: stopped" in text, text[-3000:]
    assert "connection lost" not in text, "the broker went away before edged had stopped"
    left = re.findall(r"MQTT \S+: stopped \((\d+) events left in the outbox\)", text)
    assert left == ["0"], text[-3000:]
    # Nothing of the demo is left running (the broker and the viewer have sessions of their own).
    assert (
        subprocess.run(
            ["pgrep", "-f", f"mosquitto -p {env['EDGED_MQTT_PORT']}"], capture_output=True
        ).returncode
        == 1
    )


def test_show_detections_header_and_nothing_read(tmp_path: Path, mosquitto: Mosquitto) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/show_detections.py"), "--port", str(mosquitto.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().split() == ["camera", "frame", "latency", "read"]
        time.sleep(1.0)  # subscribed
        ocr = {"text_det": 40.0, "text_rec": 12.0, "total": 55.0}
        events = [
            {
                "camera": "gate",
                "seq": 1,
                "latency_ms": ocr,
                "detections": [
                    {"label": "text", "children": {"text_rec": [{"label": "KA 1234"}]}},
                    {"label": "text", "children": {"text_rec": [{"label": "MH 42"}]}},
                ],
            },
            # The recognizer ran and read nothing: not the detector's label twice.
            {
                "camera": "gate",
                "seq": 2,
                "latency_ms": ocr,
                "detections": [{"label": "text"}, {"label": "text"}],
            },
            {
                "camera": "yard",
                "seq": 3,
                "latency_ms": {"det": 9.0, "total": 10.0},
                "detections": [{"label": "car"}],
            },
        ]
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        for ev in events:
            client.publish("edged/test/gate/detections", json.dumps(ev), qos=1).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
        lines = [proc.stdout.readline().rstrip("\n") for _ in events]
    finally:
        proc.terminate()
        proc.wait(10)
    assert lines == [
        "gate              #1    55 ms  KA 1234, MH 42",
        "gate              #2    55 ms  (nothing read)",
        "yard              #3    10 ms  car",
    ]
