"""The status page at `/` in real headless Chromium, served by a real `edged run` on the sample video
with the real PP-OCR models and a real broker: what a person opening the page sees.

Saves a screenshot to artifacts/status-page.png. Skipped only when Chromium is not installed
(scripts/setup-env.sh installs Debian's `chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.mqtt_testing import Mosquitto, free_port
from edged.sample import make_sample
from tests._edged import write_ocr_config
from tests._paths import ROOT, need_models

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACT = ROOT / "artifacts" / "status-page.png"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt install chromium; scripts/setup-env.sh does)"
)


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Load `url` headless; the page's script runs for 8 s of virtual time (several polls of /stats)."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
        *extra,
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, f"chromium failed ({r.returncode}): {r.stderr[-2000:]}"
    return r.stdout


def visible_text(dom: str) -> str:
    """The rendered body as text: the script's own source (which names every key) is cut out."""
    body = re.sub(r"<script>.*?</script>", "", dom, flags=re.S)
    body = body[body.index("<body>") :]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def get_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats: dict[str, Any] = json.loads(r.read())
        return stats


def wait_stats(
    port: int, pred: Callable[[dict[str, Any]], bool], timeout_s: float, log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = get_stats(port)
            if pred(last):
                return last
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(
        f"condition not met; last /stats: {last}\nedged log:\n{log.read_text(errors='replace')[-3000:]}"
    )


def reads(stats: dict[str, Any]) -> set[str]:
    dets = stats.get("cameras", {}).get("gate", {}).get("detections", [])
    return {k["label"] for d in dets for ks in d.get("children", {}).values() for k in ks}


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    w, h = struct.unpack(">II", head[16:24])
    return w, h


def test_status_page_in_headless_chromium(tmp_path: Path, mosquitto: Mosquitto) -> None:
    need_models()
    video = tmp_path / "plates.mp4"
    truth = make_sample(video, frames=12, seed=7)
    plate = truth[0][0]["text"]  # in every frame of this sample
    health = free_port()
    config = write_ocr_config(
        tmp_path, video, broker_port=mosquitto.port, health_port=health, device="gate-01", fps=3, loop=True
    )
    log = tmp_path / "edged.log"
    with log.open("wb") as log_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_f,
        )
    try:
        wait_stats(
            health,
            lambda s: plate in reads(s) and s.get("mqtt", {}).get("state") == "connected",
            180,
            log,
        )
        url = f"http://127.0.0.1:{health}/"
        text = visible_text(chromium(url, tmp_path / "profile", "--dump-dom"))
        assert "edged — gate-01" in text, text
        assert re.search(r"\bgate state streaming\b", text), text  # the camera card's heading and state
        m = re.search(
            r"\bprocessed fps (\d+(?:\.\d+)?) of (\d+(?:\.\d+)?) delivered \(\d+(?:\.\d+)? % dropped\)", text
        )
        assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, text
        assert f"read {plate}" in text, f"the plate read from the video is not shown: {text}"
        assert "broker: connected" in text and f"broker 127.0.0.1:{mosquitto.port}" in text, text
        assert re.search(r"outbox_events \d+", text), text
        assert "cannot reach /stats" not in text
        assert "updated " in text, "the page must refresh by itself"

        ARTIFACT.parent.mkdir(exist_ok=True)
        ARTIFACT.unlink(missing_ok=True)
        chromium(url, tmp_path / "profile2", f"--screenshot={ARTIFACT}", "--window-size=1280,900")
        assert png_size(ARTIFACT) == (1280, 900) and ARTIFACT.stat().st_size > 20_000
        print(f"status page screenshot: {ARTIFACT}")

        # The broker goes away: the page says so and shows events waiting in the outbox.
        mosquitto.stop()
        stats = wait_stats(
            health,
            lambda s: s["mqtt"]["state"] != "connected" and s["mqtt"]["outbox_events"] > 0,
            60,
            log,
        )
        text = visible_text(chromium(url, tmp_path / "profile3", "--dump-dom"))
        assert "broker: disconnected" in text, text
        m = re.search(r"outbox_events (\d+)", text)
        assert m and int(m.group(1)) >= stats["mqtt"]["outbox_events"], text
        assert "last_error cannot connect" in text, text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0, log.read_text(errors="replace")[-3000:]
    assert "Traceback" not in log.read_text(errors="replace")


def test_status_page_shows_device_telemetry(tmp_path: Path) -> None:
    """The telemetry section (edged.telemetry, from a fake Jetson sysfs tree) as Chromium renders it."""
    from edged.health.server import HealthServer
    from edged.metrics import Metrics
    from edged.telemetry import Telemetry
    from tests.test_telemetry import orin_tree

    telemetry = Telemetry(orin_tree(tmp_path / "sys"), use_jtop=False, nvpmodel_cmd=None)
    status = {
        "device": "orin-7",
        "cameras": {"gate": {"state": "backoff", "fps": 0.0, "source_error": "cannot open rtsp://cam/1"}},
        "telemetry": telemetry.snapshot(),
    }
    server = HealthServer(
        "127.0.0.1", 0, Metrics(), status=lambda: status, ready=lambda: (True, {}), snapshot=lambda c: None
    )
    server.start()
    try:
        text = visible_text(chromium(f"http://127.0.0.1:{server.port}/", tmp_path / "profile", "--dump-dom"))
    finally:
        server.stop()
    for shown in (
        "Jetson NVIDIA Jetson Orin Nano Developer Kit (L4T 36.3.0)",
        "temperature: cpu-thermal 45.50 °C, gpu-thermal 44 °C, tj-thermal 46.20 °C",
        "power: VDD_IN 6.15 W",
        "GPU: load_pct 52.30, freq_mhz 624.80",
        "power mode: 7W",
        "THROTTLED: cpu-throttle-alert 1/4",
        "gate state backoff",
        "source error cannot open rtsp://cam/1",
        "broker: mqtt disabled",
    ):
        assert shown in text, f"{shown!r} not in {text}"
