"""The status page's data: per-camera history points (a stepped clock, no sleeping) and recent events;
and both served by the real health server (/history, /events/<id>.jpg) over HTTP."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest

from edged.config.schema import ThumbnailsConfig
from edged.observability.health.server import HealthServer
from edged.observability.history import History
from edged.observability.metrics import Metrics
from edged.publish.event import EventBuilder
from edged.publish.recent import RecentEvents
from edged.publish.thumbnails.thumbnailer import Thumbnailer
from edged.types import Detection, Frame, FrameResult


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def result(camera: str, seq: int, total_ms: float) -> FrameResult:
    return FrameResult(Frame(camera, seq, np.zeros((4, 4, 3), np.uint8)), [], {"det": 1.0, "total": total_ms})


def test_points_per_interval_with_percentiles_and_idle_gaps() -> None:
    clock = Clock()
    h = History(interval_s=10, span_s=60, clock=clock)
    # First interval: 50 frames (5 fps), latencies 1..50 ms.
    for i in range(50):
        h.record(result("gate", i, float(i + 1)))
        clock.t += 0.2
    clock.t += 0.05  # just past the end of the first interval (it began with the first frame)
    snap = h.snapshot()
    gate = snap["cameras"]["gate"]
    assert snap["interval_s"] == 10 and snap["span_s"] == 60
    assert gate["processed_fps"][0] == pytest.approx(5.0)
    assert gate["p50_ms"][0] == pytest.approx(25.5) and gate["p99_ms"][0] == pytest.approx(49.51)
    # The camera stops for 30 s: those intervals are points at 0 fps with no latency.
    clock.t += 30
    h.record(result("gate", 50, 100.0))
    gate = h.snapshot()["cameras"]["gate"]
    assert gate["processed_fps"][:4] == [5.0, 0.0, 0.0, 0.0]
    assert gate["p50_ms"][1:4] == [None, None, None]
    assert gate["t"] == sorted(gate["t"]) and gate["t"][1] - gate["t"][0] == pytest.approx(10)
    # An hour-long outage keeps only span_s / interval_s points.
    clock.t += 3600
    h.record(result("gate", 51, 100.0))
    clock.t += 2
    gate = h.snapshot()["cameras"]["gate"]
    assert len(gate["t"]) == 6 + 1  # the ring, plus the open interval
    # 1 frame in the open interval, which has run 2 to 12 s (intervals keep the first frame's phase).
    assert 1 / 12 <= gate["processed_fps"][-1] <= 1 / 2 and gate["p50_ms"][-1] == 100.0


def test_open_interval_gives_a_point_from_the_first_frames() -> None:
    clock = Clock()
    h = History(interval_s=10, clock=clock)
    for i in range(6):
        h.record(result("door", i, 40.0))
        clock.t += 0.5
    gate = h.snapshot()["cameras"]["door"]
    assert gate["processed_fps"] == [pytest.approx(2.0)] and gate["p99_ms"] == [40.0]


def test_recent_events_newest_first_with_text_and_thumbnail() -> None:
    recent = RecentEvents(size=2)
    builder = EventBuilder("dev", run_id="r")
    for seq, read in enumerate(["AB 1", "AB 2", "AB 3"]):
        d = Detection("text", 0.9, (0, 0, 2, 2), children={"rec": [Detection(read, 0.9, (0, 0, 2, 2))]})
        event = builder.build(FrameResult(Frame("gate", seq, np.zeros((4, 4, 3), np.uint8)), [d]))
        if seq == 2:
            event["thumbnail"] = f"{event['id']}.jpg"
        recent.add(event)
    rows = recent.snapshot()
    assert [r["text"] for r in rows] == ["AB 3", "AB 2"]
    assert rows[0]["thumbnail"] == "/events/dev:gate:r:2.jpg" and rows[1]["thumbnail"] is None
    assert rows[0]["camera"] == "gate" and rows[0]["at"].endswith("Z")
    track = {"id": "dev:gate:r:t1:new:0", "type": "new", "camera": "gate", "captured_at": "x",
             "detection": {"label": "car", "children": {"cls": [{"label": "taxi"}]}}}  # fmt: skip
    recent.add(track)
    assert recent.snapshot()[0]["text"] == "taxi" and recent.snapshot()[0]["type"] == "new"


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        conn.close()


def test_history_and_thumbnails_over_http_and_no_path_traversal(tmp_path: Path) -> None:
    (tmp_path / "secret.jpg").write_bytes(b"not for you")
    metrics = Metrics()
    thumbs = Thumbnailer(ThumbnailsConfig(), tmp_path / "thumbs", metrics.registry, cameras=["gate"])
    image = np.full((120, 160, 3), 200, np.uint8)
    event = {"id": "dev:gate:r.1:5"}
    thumbs.start()
    thumbs.attach(event, FrameResult(Frame("gate", 5, image), [Detection("text", 0.9, (10, 10, 90, 40))]))
    thumbs.stop()
    history = History()
    history.record(result("gate", 0, 12.0))
    server = HealthServer(
        "127.0.0.1",
        0,
        metrics,
        status=lambda: {},
        ready=lambda: (True, {}),
        snapshot=lambda c: None,
        history=lambda: {**history.snapshot(), "events": []},
        thumbnail=thumbs.get,
    )
    server.start()
    try:
        code, ctype, body = get(server.port, "/history")
        assert code == 200 and ctype == "application/json"
        assert json.loads(body)["cameras"]["gate"]["p50_ms"] == [12.0]
        for path in ("/events/dev:gate:r.1:5.jpg", "/events/dev%3Agate%3Ar.1%3A5.jpg"):
            code, ctype, body = get(server.port, path)
            assert (code, ctype, body[:2]) == (200, "image/jpeg", b"\xff\xd8"), path
            assert body == (tmp_path / "thumbs" / "dev:gate:r.1:5.jpg").read_bytes()
        for path in (
            "/events/../secret.jpg",
            "/events/..%2Fsecret.jpg",
            "/events/%2e%2e%2fsecret.jpg",
            "/events/..%2F..%2Fsecret.jpg",
            "/events/thumbs%2F..%2F..%2Fsecret.jpg",
            "/events/.secret.jpg",
            "/events/dev:gate:r.1:6.jpg",
            "/events/",
        ):
            code, ctype, body = get(server.port, path)
            assert code == 404 and ctype == "application/json" and b"not for you" not in body, path
        metrics_text = get(server.port, "/metrics")[2].decode()
        assert 'edged_thumbnails_written_total{camera="gate"} 1.0' in metrics_text
    finally:
        server.stop()
