"""The health server against hostile load over real sockets: slowloris and idle floods, the read deadline,
eviction of the oldest idle connections, and probes answered within a liveness probe's 1 s meanwhile."""

from __future__ import annotations

import socket
import time
from typing import Any

from edged.observability.health.server import HealthServer
from edged.observability.metrics import Metrics
from tests.support.edged import SocketFlood, probe, wait_for

HOST = "127.0.0.1"


def _make(**kw: Any) -> HealthServer:
    def ready() -> tuple[bool, dict[str, Any]]:
        return True, {"ready": True}

    return HealthServer(HOST, 0, Metrics(), status=dict, ready=ready, snapshot=lambda cam: None, **kw)


def test_dribbling_client_is_dropped_at_the_deadline_not_kept_alive() -> None:
    # A slowloris sends one byte at a time, each well within any per-read timeout: only a deadline on the
    # whole head ends it. The test fails if the server still listens after 10 bytes at 0.1 s (1 s > 0.3 s).
    srv = _make(request_timeout_s=0.3)
    srv.start()
    try:
        with socket.create_connection((HOST, srv.port), timeout=10) as slow:
            slow.sendall(b"G")
            closed = False
            for b in b"ET /healthz HTTP/1.0\r\nX-a: b":
                time.sleep(0.1)
                try:
                    slow.sendall(bytes([b]))
                except OSError:  # reset: the server closed it
                    closed = True
                    break
            closed = closed or _closed_by_peer(slow)
        assert closed, "the dribbling client was kept alive past the read deadline"
        assert srv.front is not None and srv.front.timed_out == 1
    finally:
        srv.stop()


def _closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_flood_evicts_oldest_and_probes_still_answer() -> None:
    srv = _make(max_connections=8, request_timeout_s=30.0)
    srv.start()
    try:
        idle = [socket.create_connection((HOST, srv.port), timeout=10) for _ in range(20)]
        wait_for(
            lambda: srv.front is not None and srv.front.evicted >= 12, "the oldest idle ones to be evicted"
        )
        assert srv.active_requests <= 8
        assert probe(srv.port, "/healthz")[0] == 200
        assert probe(srv.port, "/readyz")[0] == 200
        assert _closed_by_peer(idle[0])  # the oldest went first
        for s in idle:
            s.close()
    finally:
        srv.stop()


def test_probes_answer_within_1s_under_200_idle_and_200_slowloris_sockets() -> None:
    # The fault: 16 idle connections made /healthz and /readyz answer 503. Every probe here has a
    # 1 s client timeout (a liveness probe's), with the default server settings.
    srv = _make()
    srv.start()
    try:
        with SocketFlood(srv.port, idle=200, loris=200) as flood:
            slowest = 0.0
            for i in range(36):
                code, took = probe(srv.port, "/healthz" if i % 2 == 0 else "/readyz")
                assert code == 200
                slowest = max(slowest, took)
                time.sleep(0.05)
            assert flood.reopened > 0  # the slowloris sockets were cut at the read deadline
        print(
            f"\n[health] 36 probes under 200 idle + 200 slowloris sockets: all 200, slowest {slowest * 1000:.0f} ms"
        )
    finally:
        srv.stop()
