"""The status page at `/` in real headless Chromium, served by a real `edged run` on the sample video
with the real PP-OCR models and a real broker: what a person opening the page sees.

Saves a screenshot to artifacts/status-page.png. Skipped only when Chromium is not installed
(scripts/setup-env.sh installs Debian's `chromium`)."""

from __future__ import annotations

import html
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

import jsonschema
import pytest

from edged.demo.sample import make_sample
from edged.publish.event import event_schema
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import write_ocr_config
from tests.support.paths import ROOT, need_models

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


def wait_history(
    port: int, pred: Callable[[dict[str, Any]], bool], timeout_s: float, log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/history", timeout=5) as r:
            last = json.loads(r.read())
        if pred(last):
            return last
        time.sleep(0.3)
    pytest.fail(
        f"condition not met; last /history: {last}\nedged log:\n{log.read_text(errors='replace')[-3000:]}"
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
        # Events over MQTT name their thumbnail, which the daemon serves as the JPEG on disk.
        with Subscriber(mosquitto, "edged/gate-01/gate/detections") as sub:
            assert sub.wait_for(lambda m: any(b'"thumbnail"' in x.payload for x in m), 60), sub.messages
            event = next(json.loads(x.payload) for x in sub.messages if b'"thumbnail"' in x.payload)
        jsonschema.validate(event, event_schema())
        jpeg = urllib.request.urlopen(
            f"http://127.0.0.1:{health}/events/{event['thumbnail']}", timeout=5
        ).read()
        assert (
            jpeg[:2] == b"\xff\xd8"
            and jpeg == (tmp_path / "state" / "thumbnails" / event["thumbnail"]).read_bytes()
        )
        # A few more results, so the plot has points and the events table rows with thumbnails.
        wait_history(health, lambda h: len(h["events"]) >= 3 and len(h["cameras"]["gate"]["t"]) >= 1, 60, log)
        url = f"http://127.0.0.1:{health}/"
        dom = chromium(url, tmp_path / "profile", "--dump-dom")
        text = visible_text(dom)
        assert "edged — gate-01" in text, text
        assert "Loading…" not in text or 'id="loading" hidden' in dom, text
        assert re.search(r"\bgate streaming Read: [^ ]", text), text  # the camera card's heading and state
        assert f"Read: {plate}" in text or plate in text.split("Read: ")[1][:80], text
        m = re.search(r"Source fps (\d+\.\d)", text)
        assert m and float(m.group(1)) > 0, text
        m = re.search(r"Processed fps (\d+\.\d)", text)
        assert m and float(m.group(1)) > 0, text
        assert re.search(r"Drop share \d+\.\d %", text), text
        assert re.search(r"Latency, last frame text_det \d+ ms", text), text
        assert f"Broker: connected at 127.0.0.1:{mosquitto.port}" in text, text
        assert re.search(r"Outbox: \d+ events? waiting", text), text
        assert "cannot reach /stats" not in text
        assert "updated " in text, "the page must refresh by itself"
        assert 'href="/metrics"' in dom and 'href="/stats"' in dom
        # Models: which engine runs each.
        assert "text_det ppocr_det onnxruntime on cpu, fp32 cpu serving" in text, (
            text
        )  # its model server's state
        # The plot: the processed-fps and latency lines drawn from /history.
        for series in ("c-fps", "c-p50", "c-p99"):
            d = re.search(rf'<path class="{series}" d="([^"]*)"', dom)
            assert d and d.group(1).startswith("M"), f"{series} line is empty: {dom[-3000:]}"
        assert re.search(r"━ processed fps \d+\.\d ━ p50 latency \d+ ms ━ p99 latency \d+ ms", text), text
        # Recent events: time, camera, the plate and its thumbnail, which the daemon serves as a JPEG.
        rows = re.findall(
            r"<tr><td[^>]*>([^<]+)</td><td>gate</td><td[^>]*>([^<]+)</td><td><img src=\"([^\"]+)\"", dom
        )
        assert len(rows) >= 3, dom[-3000:]
        assert any(plate in read for _, read, _ in rows), rows
        with urllib.request.urlopen(f"http://127.0.0.1:{health}{html.unescape(rows[0][2])}", timeout=5) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read(2) == b"\xff\xd8"

        ARTIFACT.parent.mkdir(exist_ok=True)
        ARTIFACT.unlink(missing_ok=True)
        chromium(url, tmp_path / "profile2", f"--screenshot={ARTIFACT}", "--window-size=1280,1000")
        assert png_size(ARTIFACT) == (1280, 1000) and ARTIFACT.stat().st_size > 20_000
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
        assert "Broker: disconnected" in text, text
        m = re.search(r"Outbox: (\d+) events? waiting", text)
        assert m and int(m.group(1)) >= stats["mqtt"]["outbox_events"], text
        assert "Last broker error: cannot connect" in text, text
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
    """The telemetry section (edged.observability.telemetry, from a fake Jetson sysfs tree) as Chromium renders it."""
    from edged.observability.health.server import HealthServer
    from edged.observability.metrics import Metrics
    from edged.observability.telemetry import Telemetry
    from tests.test_telemetry import orin_tree

    telemetry = Telemetry(orin_tree(tmp_path / "sys"), use_jtop=False, nvpmodel_cmd=None)
    status = {
        "device": "orin-7",
        "cameras": {
            "gate": {"state": "backoff", "fps": 0.0, "source_error": "cannot open rtsp://cam/1"},
            # As edged.daemon.status lists a camera switched off by the set/enabled command.
            "yard": {"state": "disabled", "enabled": False, "disabled_by": "command", "source_fps": 0.0},
        },
        "telemetry": telemetry.snapshot(),
    }
    server = HealthServer(
        "127.0.0.1", 0, Metrics(), status=lambda: status, ready=lambda: (True, {}), snapshot=lambda c: None
    )
    server.start()
    try:
        dom = chromium(f"http://127.0.0.1:{server.port}/", tmp_path / "profile", "--dump-dom")
        text = visible_text(dom)
    finally:
        server.stop()
    assert '<span class="badge muted">disabled</span>' in dom  # grey: off on purpose, not a fault
    for shown in (
        "yard disabled",
        "Disabled by an MQTT command (set/enabled)",
        "Jetson NVIDIA Jetson Orin Nano Developer Kit (L4T 36.3.0)",
        "Temperature: cpu-thermal 45.50 °C, gpu-thermal 44 °C, tj-thermal 46.20 °C",
        "Power: VDD_IN 6.15 W",
        "GPU: load 52.3 %, 625 MHz",
        "Power mode: 7W",
        "THROTTLED: cpu-throttle-alert 1/4",
        "gate backoff",
        "Source error cannot open rtsp://cam/1",
        "Last frame none yet (waiting for the first frame)",
        "Broker: MQTT disabled",
    ):
        assert shown in text, f"{shown!r} not in {text}"


def test_status_page_loading_models_events_and_markup_in_headless_chromium(tmp_path: Path) -> None:
    """Shapes a short daemon run does not reach, served by a real HealthServer: the loading state while
    /stats fails, then an engine build in progress, a read that looks like markup, an event that read
    nothing and one without a thumbnail. (Replaces the node harness with a fake DOM: this is Chromium.)"""
    import cv2
    import numpy as np

    from edged.observability.health.server import HealthServer
    from edged.observability.metrics import Metrics

    ok, jpeg = cv2.imencode(".jpg", np.full((40, 120, 3), 230, np.uint8))
    assert ok
    calls = {"n": 0}
    status = {
        "device": "orin-7",
        "uptime_s": 4000,
        "cameras": {
            "gate": {
                "state": "streaming",
                "source_fps": 15.0,
                "processed_fps": 7.5,
                "drop_ratio": 0.5,
                "frames_processed": 900,
                "drops": {"stale": 900, "error": 0},
                "last_frame_age_s": 0.2,
                "latency_ms": {"text_det": 11.5, "total": 40.2},
                "detections": [
                    {"label": "text", "score": 0.9, "box": [1, 2, 3, 4],
                     "children": {"text_rec": [{"label": "<b>AB 123</b>", "score": 0.97}]}}
                ],
            }
        },
        "models": {
            "text_det": {"kind": "ppocr_det", "backend": "tensorrt", "device": "cuda", "state": "building",
                         "progress": 0.45},
            "text_rec": {"kind": "ppocr_rec", "backend": "onnxruntime", "device": "cpu", "preprocess": "cpu"},
        },
        "mqtt": {"state": "connected", "broker": "127.0.0.1:1883", "outbox_events": 7, "outbox_bytes": 4096,
                 "outbox_oldest_age_s": 95.0},
    }  # fmt: skip
    now = time.time()
    history = {
        "interval_s": 10,
        "span_s": 3600,
        "cameras": {
            "gate": {
                "t": [now - 30, now - 20, now - 10, now],
                "processed_fps": [7.0, 0.0, 7.4, 7.5],
                "p50_ms": [38.0, None, 41.0, 40.0],
                "p99_ms": [80.0, None, 95.0, 90.0],
            }
        },
        "events": [
            {"id": "orin-7:gate:r:9", "type": "frame", "camera": "gate", "at": "2026-11-30T12:00:09.000Z",
             "text": "<b>AB 123</b>", "thumbnail": "/events/orin-7:gate:r:9.jpg"},
            {"id": "orin-7:gate:r:8", "type": "new", "camera": "gate", "at": "2026-11-30T12:00:08.000Z",
             "text": "", "thumbnail": None},
        ],
    }  # fmt: skip

    def stats() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] <= 1 and fail_first:
            raise RuntimeError("not yet")
        return status

    fail_first = True
    server = HealthServer(
        "127.0.0.1",
        0,
        Metrics(),
        status=stats,
        ready=lambda: (True, {}),
        snapshot=lambda c: None,
        history=lambda: history,
        thumbnail=lambda name: jpeg.tobytes() if name == "orin-7:gate:r:9.jpg" else None,
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}/"
    try:
        # Loading: the first /stats fails; the page says it is waiting, then renders the next poll.
        dom = chromium(url, tmp_path / "p1", "--dump-dom", "--virtual-time-budget=1000")
        text = visible_text(dom)
        assert "Loading… waiting for the daemon's first status reply." in text, text
        assert "cannot reach /stats: /stats: HTTP 500" in text, text
        dom = chromium(url, tmp_path / "p2", "--dump-dom")
    finally:
        server.stop()
    text = visible_text(dom)
    assert 'id="loading" hidden' in dom and "cannot reach" not in text, text
    for shown in (
        "edged — orin-7",
        "up 67 min",
        "gate streaming Read: &lt;b&gt;AB 123&lt;/b&gt;",
        "Source fps 15.0",
        "Processed fps 7.5",
        "Drop share 50.0 %",
        "Frames dropped 900 stale, 0 error",
        "Last frame 0.2 s ago",
        "Latency, last frame text_det 12 ms, total 40 ms",
        "text_det ppocr_det tensorrt on cuda – building 45 %",
        "text_rec ppocr_rec onnxruntime on cpu cpu loaded",
        "Outbox: 7 events waiting (4.0 KB, oldest 95 s)",
        "━ processed fps 7.5 ━ p50 latency 40 ms ━ p99 latency 90 ms",
        "gate (nothing read) [track new] –",
    ):
        assert shown in text, f"{shown!r} not in {text}"
    assert "<b>AB" not in dom  # scene text is never markup
    # An interval with no frame is a 0 on the fps line and a gap (a new "M") in the latency lines.
    fps = re.search(r'<path class="c-fps" d="([^"]*)"', dom)
    assert fps and fps.group(1).count("M") == 1 and fps.group(1).count("L") == 3, dom
    p99 = re.search(r'<path class="c-p99" d="([^"]*)"', dom)
    assert p99 and p99.group(1).count("M") == 2 and p99.group(1).count("L") == 1, dom
    assert '<img src="/events/orin-7%3Agate%3Ar%3A9.jpg"' in dom


def test_a_model_that_failed_to_load_is_shown_with_its_reason(tmp_path: Path) -> None:
    """A real daemon whose one model passes check-config but cannot load (its config contradicts the
    model's fixed input): /stats and the page say which model failed and why, in its own words."""
    from tests.test_model_inputs import pooling_model

    model = pooling_model(tmp_path / "fixed.onnx", [1, 3, 96, 128])
    health = free_port()
    config = tmp_path / "edged.yaml"
    config.write_text(
        json.dumps(
            {
                "device": {"name": "gate-01"},
                "state_dir": str(tmp_path / "state"),
                "mqtt": {"enabled": False},
                "health": {"port": health},
                "allow_no_cameras": True,
                "models": {
                    "m": {"path": str(model), "kind": "classifier", "preprocess": {"size": [300, 300]}}
                },
            }
        )
    )
    log = tmp_path / "edged.log"
    with log.open("wb") as log_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config)], cwd=ROOT, stderr=log_f
        )
    try:
        stats = wait_stats(health, lambda s: "m" in s.get("models", {}), 60, log)
        assert stats["models"]["m"]["state"] == "failed"
        assert "does not match the model's fixed input 128x96" in stats["models"]["m"]["error"]
        text = visible_text(chromium(f"http://127.0.0.1:{health}/", tmp_path / "profile", "--dump-dom"))
        assert "m classifier – – failed: models.m.preprocess.size: [300, 300] does not match" in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text(errors="replace")[-3000:]


def test_status_page_shows_the_warm_up_progress(tmp_path: Path) -> None:
    """What the page shows while edged starts: "Starting" from the health server `edged run` starts
    before anything else, then each model's warm-up progress while the daemon already serves."""
    from edged.observability.health.server import start_early
    from edged.observability.metrics import Metrics

    early = start_early("127.0.0.1", 0, Metrics(), device="gate-02", version="test")
    assert early is not None
    try:
        text = visible_text(chromium(f"http://127.0.0.1:{early.port}/", tmp_path / "p0", "--dump-dom"))
    finally:
        early.stop()
    assert "edged — gate-02" in text and "Starting: loading models" in text, text

    models = need_models()
    video = tmp_path / "plates.mp4"
    make_sample(video, frames=6, size=(320, 240), fps=5)
    health = free_port()
    cfg = {
        "device": {"name": "gate-02"},
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"enabled": False},
        "health": {"port": health},
        "models": {
            # Every declared detector shape staged (as on a GPU): 9 shapes up to 4 x 1920x1088 on one
            # thread take tens of seconds here, so the page is read while they warm.
            "text_det": {
                "path": str(models / "PP-OCRv6_det_small.onnx"),
                "kind": "ppocr_det",
                "onnxruntime": {"intra_op_threads": 1, "inter_op_threads": 1},
                "batching": {"warm_up": "all"},
                "tensorrt": {"cache_dir": str(tmp_path / "engines")},
            }
        },
        "cameras": {
            "gate": {
                "source": f"file://{video}",
                "loop": True,
                "fps": 2,
                "chain": [{"model": "text_det", "min_score": 0.5}],
            }
        },
    }
    config = tmp_path / "edged.yaml"
    config.write_text(json.dumps(cfg))
    log = tmp_path / "edged.log"
    with log.open("wb") as log_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_f,
        )
    try:
        stats = wait_stats(
            health, lambda s: s.get("models", {}).get("text_det", {}).get("state") == "serving", 90, log
        )
        assert not stats["models"]["text_det"]["warm"]["finished"], stats
        text = visible_text(chromium(f"http://127.0.0.1:{health}/", tmp_path / "p1", "--dump-dom"))
        assert "Ready; warming the other input shapes" in text, text
        m = re.search(r"text_det ppocr_det onnxruntime on cpu, fp32 cpu serving warming (\d+)/9 shapes", text)
        assert m and 1 <= int(m.group(1)) < 9, text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0, log.read_text(errors="replace")[-3000:]
    assert "Traceback" not in log.read_text(errors="replace")
