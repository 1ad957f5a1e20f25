"""`edged run` as a real subprocess: real sample video, real PP-OCR models, real mosquitto, real HTTP,
real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.demo.sample import make_sample
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import EdgedProcess, http_get, up, wait_until, write_ocr_config

FRAMES = int(os.environ.get("EDGED_TEST_FRAMES", "40"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    path = tmp_path_factory.mktemp("sample") / "plates.mp4"
    truth = make_sample(path, frames=FRAMES, seed=7)
    return path, truth


def write_config(
    tmp: Path,
    broker_port: int,
    health_port: int,
    source: str,
    mqtt: dict[str, Any] | None = None,
    **camera: Any,
) -> Path:
    cam = {"fps": 30, "realtime": False, "loop": False, **camera}
    return write_ocr_config(tmp, source, broker_port=broker_port, health_port=health_port, mqtt=mqtt, **cam)


@pytest.fixture
def edged_proc() -> Iterator[list[EdgedProcess]]:
    procs: list[EdgedProcess] = []
    yield procs
    for p in procs:
        p.kill()


def read_texts(event: dict[str, Any]) -> list[str]:
    return sorted(
        k["label"] for d in event["detections"] for kids in d.get("children", {}).values() for k in kids
    )


def test_daemon_reads_the_sample_and_stops_cleanly(
    tmp_path: Path, mosquitto: Mosquitto, sample: tuple[Path, list[Any]], edged_proc: list[EdgedProcess]
) -> None:
    video, truth = sample
    health = free_port()
    config = write_config(
        tmp_path,
        mosquitto.port,
        health,
        f"file://{video}",
        mqtt={"stats_interval_s": 1, "hass": {"enabled": True}},
    )
    with Subscriber(mosquitto, ["edged/test/#", "homeassistant/#"]) as sub:
        proc = EdgedProcess(config)
        edged_proc.append(proc)
        assert wait_until(lambda: up(health), 60), proc.text()

        def camera_done() -> bool:
            cam = json.loads(http_get(health, "/stats")[1])["cameras"].get("gate", {})
            return bool(cam.get("state") == "ended" and cam.get("frames_processed") == FRAMES)

        assert wait_until(camera_done, 240), proc.text()
        cam = json.loads(http_get(health, "/stats")[1])["cameras"]["gate"]
        assert cam["frames_in_flight"] == "0/2"  # all left; 2 at most: the models run on the CPU here
        status, body = http_get(health, "/metrics")
        assert status == 200 and f'edged_frames_total{{camera="gate"}} {FRAMES}.0'.encode() in body, (
            body.decode()[:600]
        )
        ready_status, ready = http_get(health, "/readyz")
        assert ready_status == 200, ready
        snap_status, jpg = http_get(health, "/snapshot/gate.jpg")
        assert snap_status == 200 and jpg[:2] == b"\xff\xd8"

        with_text = [i for i in range(FRAMES) if truth[i]]
        assert sub.wait_for(
            lambda msgs: len([m for m in msgs if m.topic.endswith("/detections")]) >= len(with_text) * 0.9, 30
        )
        rc = proc.stop(signal.SIGTERM)
        assert rc == 0, proc.text()
        assert sub.wait_for(
            lambda msgs: any(m.topic == "edged/test/status" and m.payload == b"offline" for m in msgs), 10
        )

    events = [json.loads(m.payload) for m in sub.on("edged/test/gate/detections")]
    by_seq = {e["seq"]: e for e in events}
    assert len(by_seq) == len(events), "duplicate events for a frame"
    assert [e["seq"] for e in events] == sorted(by_seq), "events out of order"
    exact = sum(
        read_texts(by_seq[i]) == sorted(p["text"] for p in truth[i]) for i in with_text if i in by_seq
    )
    print(f"exact reads: {exact}/{len(with_text)} frames with text")
    assert exact >= 0.95 * len(with_text)
    statuses = [m.payload for m in sub.on("edged/test/status")]
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
    e = events[0]
    assert e["schema"] == "edged.detections/1" and e["device"] == "test" and e["camera"] == "gate"
    assert {"text_det", "text_rec", "total"} <= set(e["latency_ms"])
    # The daemon's side channels: periodic stats with telemetry, Home Assistant discovery + state.
    stats = [json.loads(m.payload) for m in sub.on("edged/test/stats")]
    assert (
        stats and "telemetry" in stats[-1] and stats[-1]["status"]["cameras"]["gate"]["frames_processed"] > 0
    )
    discovery = [  # empty payloads are deletions (of entities edged no longer offers): not retained
        m
        for m in sub.messages
        if m.topic.startswith("homeassistant/") and m.topic.endswith("/config") and m.payload
    ]
    assert any("gate" in m.topic for m in discovery)
    with Subscriber(mosquitto, "homeassistant/#") as late:  # a later subscriber gets them retained
        assert late.wait_for(lambda msgs: len(msgs) >= len({m.topic for m in discovery}), 10)
        assert all(m.retain for m in late.messages)
    payloads = [m.payload for m in sub.on("edged/test/gate/state")]
    assert payloads and payloads[-1] == b""  # a clean stop deletes the retained state (it would lie)
    state = [json.loads(p) for p in payloads if p]
    assert state and state[-1]["last_text"]
    assert "Traceback" not in proc.text()


def test_bad_config_exits_78_with_location(tmp_path: Path) -> None:
    config = tmp_path / "edged.yaml"
    config.write_text("cameras:\n  gate:\n    source: ftp://nowhere\n")
    r = subprocess.run(
        [sys.executable, "-m", "edged", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78
    assert f"{config}:3:13: cameras.gate.source:" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_broker_and_dead_camera_keep_the_daemon_running(
    tmp_path: Path, edged_proc: list[EdgedProcess]
) -> None:
    health = free_port()
    dead_broker = free_port()
    config = write_config(tmp_path, dead_broker, health, f"file://{tmp_path}/missing.mp4")
    proc = EdgedProcess(config)
    edged_proc.append(proc)
    assert wait_until(lambda: up(health), 60), proc.text()
    time.sleep(2)
    assert proc.proc.poll() is None
    ok, body = http_get(health, "/readyz")
    assert ok == 503 and json.loads(body)["cameras"]["gate"]["ok"] is False
    assert proc.stop() == 0
    log = proc.text()
    assert "missing.mp4" in log and f"127.0.0.1:{dead_broker}" in log
    assert "Traceback" not in log


def test_health_port_in_use_is_logged_and_the_daemon_runs_on(
    tmp_path: Path, edged_proc: list[EdgedProcess]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "edged.yaml"
        config.write_text(
            json.dumps(
                {
                    "mqtt": {"enabled": False},
                    "health": {"port": port},
                    "state_dir": str(tmp_path),
                    "allow_no_cameras": True,
                }
            )
        )
        proc = EdgedProcess(config)
        edged_proc.append(proc)
        assert wait_until(lambda: "health server not started" in proc.text(), 30), proc.text()
        time.sleep(1)
        assert proc.alive
        assert proc.stop() == 0
    assert f"127.0.0.1:{port}" in proc.text() and "Traceback" not in proc.text()


def test_unusable_outbox_dir_exits_78_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    config = tmp_path / "edged.yaml"
    config.write_text(
        json.dumps(
            {
                "mqtt": {"outbox": {"dir": str(tmp_path / "a-file" / "outbox")}},
                "health": {"enabled": False},
                "allow_no_cameras": True,
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "edged", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78, r.stderr
    assert "cannot start: mqtt.outbox.dir" in r.stderr and "Traceback" not in r.stderr
