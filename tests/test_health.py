"""The health HTTP server over real sockets: every route, error codes, slow and malformed clients, the cap."""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged.observability.health.server import HealthServer
from edged.observability.metrics import Metrics
from tests.support.edged import wait_for

HOST = "127.0.0.1"


@dataclass
class State:
    ready: bool = True
    status: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, bytes | None] = field(default_factory=dict)
    fail_status: bool = False

    def status_fn(self) -> dict[str, Any]:
        if self.fail_status:
            raise RuntimeError("status broke")
        return self.status

    def ready_fn(self) -> tuple[bool, dict[str, Any]]:
        return self.ready, {"ready": self.ready, "cameras": {"gate": "running" if self.ready else "stalled"}}

    def snapshot_fn(self, camera: str) -> bytes | None:
        return self.snapshots.get(camera)


def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((16, 24, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def _make(state: State, metrics: Metrics, **kw: Any) -> HealthServer:
    return HealthServer(
        HOST, 0, metrics, status=state.status_fn, ready=state.ready_fn, snapshot=state.snapshot_fn, **kw
    )


@pytest.fixture()
def state() -> State:
    return State(
        status={"device": "gate-01", "cameras": {"gate": {"state": "running", "fps": 14.8, "drops": 2}}},
        snapshots={"gate": _jpeg(), "door": None},
    )


@pytest.fixture()
def metrics() -> Metrics:
    m = Metrics()
    m.frames.labels(camera="gate").inc(42)
    return m


@pytest.fixture()
def server(state: State, metrics: Metrics) -> Iterator[HealthServer]:
    srv = _make(state, metrics)
    srv.start()
    yield srv
    srv.stop()


def request(port: int, path: str, method: str = "GET") -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def raw(port: int, data: bytes) -> bytes:
    """Send bytes as they are and read the reply until the server closes the connection."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_port_zero_binds_a_real_port(server: HealthServer) -> None:
    assert server.port > 0
    assert request(server.port, "/healthz")[0] == 200


def test_healthz(server: HealthServer) -> None:
    code, resp, body = request(server.port, "/healthz")
    assert (code, body) == (200, b"ok\n")
    assert resp.getheader("Content-Type", "").startswith("text/plain")


def test_readyz_follows_ready_callable(server: HealthServer, state: State) -> None:
    code, resp, body = request(server.port, "/readyz")
    assert code == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body) == {"ready": True, "cameras": {"gate": "running"}}
    state.ready = False
    code, _, body = request(server.port, "/readyz")
    assert code == 503
    assert json.loads(body)["cameras"] == {"gate": "stalled"}


def test_metrics_is_prometheus_text(server: HealthServer) -> None:
    code, resp, body = request(server.port, "/metrics")
    assert code == 200
    assert resp.getheader("Content-Type", "").startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    assert samples[("edged_frames_total", (("camera", "gate"),))] == 42


def test_stats_serves_status_as_is(server: HealthServer, state: State) -> None:
    state.status = {
        "device": "gate-01",
        "uptime_s": 12.5,
        "cameras": {
            "gate": {
                "state": "running",
                "latency_ms": {"text_det": 11.2},
                "last_detections": [{"label": "AB 123", "score": 0.97, "box": [1.0, 2.0, 30.0, 12.0]}],
            }
        },
        "mqtt": {"connected": False, "outbox": None},
        "unicode": "Zürich <b>&</b>",
    }
    code, resp, body = request(server.port, "/stats")
    assert code == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body) == state.status


def test_stats_failure_is_a_500_and_server_survives(server: HealthServer, state: State) -> None:
    state.fail_status = True
    code, _, body = request(server.port, "/stats")
    assert code == 500
    assert "status broke" not in body.decode()  # exception text may carry internals; only the type is shown
    state.fail_status = False
    assert request(server.port, "/stats")[0] == 200


def test_snapshot_known_camera(server: HealthServer, state: State) -> None:
    code, resp, body = request(server.port, "/snapshot/gate.jpg")
    assert code == 200
    assert resp.getheader("Content-Type") == "image/jpeg"
    assert body == state.snapshots["gate"]
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (16, 24, 3)


@pytest.mark.parametrize(
    "path",
    [
        "/snapshot/door.jpg",
        "/snapshot/nope.jpg",
        "/snapshot/../etc/passwd.jpg",
        "/snapshot/gate.png",
        "/snapshot/.jpg",
    ],
)
def test_snapshot_missing_is_json_404(server: HealthServer, path: str) -> None:
    code, resp, body = request(server.port, path)
    assert code == 404
    assert resp.getheader("Content-Type") == "application/json"
    assert "error" in json.loads(body)


def test_status_page_is_self_contained(server: HealthServer) -> None:
    code, resp, body = request(server.port, "/")
    assert code == 200
    assert resp.getheader("Content-Type", "").startswith("text/html")
    page = body.decode()
    assert "/stats" in page and "/snapshot/" in page and "setTimeout(poll" in page
    # Works offline: no external scripts, styles, fonts or images.
    for external in ("http://", "https://", 'src="//', "@import"):
        assert external not in page
    # Labels are scene text (OCR): the page must never render them as markup.
    assert ".innerHTML" not in page and "insertAdjacentHTML" not in page
    assert "'self'" in resp.getheader("Content-Security-Policy", "")


def test_query_string_is_ignored(server: HealthServer) -> None:
    assert request(server.port, "/snapshot/gate.jpg?t=12345")[0] == 200


def test_unknown_path_404(server: HealthServer) -> None:
    code, _, body = request(server.port, "/admin")
    assert code == 404
    assert json.loads(body)["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_wrong_method_405(server: HealthServer, method: str) -> None:
    code, resp, _ = request(server.port, "/healthz", method)
    assert code == 405
    assert resp.getheader("Allow") == "GET, HEAD"


def test_head_has_headers_but_no_body(server: HealthServer) -> None:
    code, resp, body = request(server.port, "/stats", "HEAD")
    assert code == 200
    assert int(resp.getheader("Content-Length", "0")) > 0
    assert body == b""


@pytest.mark.parametrize(
    "junk",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS ClientHello sent to plain HTTP
        b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\n" + b"X-Junk: " + b"b" * 70000 + b"\r\n\r\n",
    ],
)
def test_malformed_request_gets_4xx_and_no_traceback(
    server: HealthServer, junk: bytes, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.observability.health")
    reply = raw(server.port, junk)
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.0 4"), reply[:200]
    assert request(server.port, "/healthz")[0] == 200
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG or r.exc_info]


def test_request_logging_is_debug_only(server: HealthServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.observability.health")
    request(server.port, "/healthz")
    request(server.port, "/nope")
    lines = [r for r in caplog.records if r.name == "edged.observability.health.server"]
    assert any('"GET /healthz' in r.getMessage() for r in lines)
    assert all(r.levelno == logging.DEBUG for r in lines)


def test_slow_client_does_not_block_others(state: State, metrics: Metrics) -> None:
    srv = _make(state, metrics, request_timeout_s=5.0)
    srv.start()
    try:
        with socket.create_connection((HOST, srv.port), timeout=10) as slow:
            slow.sendall(b"GET /hea")  # half a request line, then nothing
            wait_for(lambda: srv.active_requests == 1, "the slow client to be connected")
            for path in ("/healthz", "/stats", "/metrics"):
                assert request(srv.port, path)[0] == 200
            # The slow request was held open all along (not dropped), and completes once it finishes.
            slow.sendall(b"lthz HTTP/1.0\r\n\r\n")
            assert raw_reply(slow).startswith(b"HTTP/1.0 200")
    finally:
        srv.stop()


def test_slow_client_is_dropped_after_the_read_deadline(state: State, metrics: Metrics) -> None:
    srv = _make(state, metrics, request_timeout_s=0.2)
    srv.start()
    try:
        with socket.create_connection((HOST, srv.port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.0\r\nHost: x")  # headers never finish
            assert slow.recv(1024) == b""  # the server hung up on its own
        wait_for(lambda: srv.active_requests == 0, "the connection to be forgotten")
    finally:
        srv.stop()


def raw_reply(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_stop_closes_the_port(state: State, metrics: Metrics) -> None:
    srv = _make(state, metrics)
    srv.start()
    port = srv.port
    assert request(port, "/healthz")[0] == 200
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=5).close()
    srv.stop()  # idempotent
