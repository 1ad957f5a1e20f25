"""Local HTTP health server: /healthz, /readyz, /metrics, /stats, /snapshot/<camera>.jpg, /history,
/events/<id>.jpg (event thumbnails) and a status page.

It only reads state through the callables it is given (health never drives a camera), and the pipeline
never waits on it: each request runs in its own daemon thread with a socket timeout, and the number of
requests in flight is capped (503 beyond it), so slow or hostile clients cost at most a few threads for
a few seconds.

`status()` is served as-is as JSON; the status page (`/`) understands this shape and shows what it finds:

    {"device": str, "uptime_s": float,
     "cameras": {name: {"state": str, "fps": float, "frames": int, "drops": int,
                        "latency_ms": {stage: float}, "last_detections": [Detection.to_dict(), ...]}},
     "mqtt": {"connected": bool, ...}, "outbox": {"events": int, "bytes": int, "oldest_age_s": float}}

`history()` (edged.history: per-camera processed fps and latency points, the recent events) is served
as-is at /history; `thumbnail(name)` returns the JPEG of /events/<name> or None (404).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edged.metrics import Metrics

log = logging.getLogger(__name__)

StatusFn = Callable[[], dict[str, Any]]
ReadyFn = Callable[[], tuple[bool, dict[str, Any]]]
SnapshotFn = Callable[[str], "bytes | None"]
HistoryFn = Callable[[], dict[str, Any]]
ThumbnailFn = Callable[[str], "bytes | None"]

# Per-connection socket timeout: a client that stalls mid-request loses its thread after this long.
REQUEST_TIMEOUT_S = 5.0
MAX_CONCURRENT = 16
_SNAPSHOT_RE = re.compile(r"^/snapshot/([A-Za-z0-9_-]{1,64})\.jpg$")
# Thumbnail names are event/track ids + .jpg: one path level, no leading dot (see edged.publish.thumbstore).
_EVENT_RE = re.compile(r"^/events/([A-Za-z0-9_-][A-Za-z0-9_.:-]{0,199}\.jpg)$")


def _busy_response() -> bytes:
    body = json.dumps({"error": "too many concurrent requests", "code": 503}).encode()
    head = (
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Retry-After: 1\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _status_page() -> bytes:
    try:
        return resources.files("edged.health").joinpath("status.html").read_bytes()
    except (FileNotFoundError, OSError) as exc:  # a broken install still serves the API
        log.warning("status page not available: %s", exc)
        return b"<!doctype html><title>edged</title><p>status page missing; see <a href='/stats'>/stats</a>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The pipeline must be able to restart the server on the same port right after a stop.
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], owner: HealthServer, max_concurrent: int) -> None:
        self.owner = owner
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self._active_lock = threading.Lock()
        self.active = 0
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        # StreamRequestHandler reads the socket timeout from the class, hence a subclass per server.
        handler = type("_TimedHandler", (_Handler,), {"timeout": owner.request_timeout_s})
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the accept thread: refuse here rather than queue, so a flood cannot pile up threads.
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_busy_response())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._active_lock:
            self.active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self.active -= 1
        self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-response are normal on a device; never print tracebacks to stderr for them.
        log.debug("health: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "edged-health"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health %s: " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # JSON errors (the stdlib sends HTML), same shape as our own error replies.
        try:
            short = self.responses[code][0]
        except KeyError:
            short = "error"
        self.log_error("code %d, message %s", code, message or short)
        # A garbled request line leaves the version at HTTP/0.9, which would suppress the status line.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self._reply(code, {"error": message or short}, extra={"Connection": "close"})

    def __getattr__(self, name: str) -> Any:
        # http.server answers unknown methods with 501; every method other than GET/HEAD is a 405 here.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self._reply(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"method {self.command} not allowed"},
            extra={"Allow": "GET, HEAD"},
        )

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        try:
            if path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                ok, detail = owner.ready_fn()
                self._reply(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, detail)
            elif path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(owner.metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/stats":
                self._reply(HTTPStatus.OK, owner.status_fn())
            elif path in ("/", "/index.html"):
                self._send(
                    HTTPStatus.OK,
                    owner.page,
                    "text/html; charset=utf-8",
                    extra={
                        # Inline script only, images and data from ourselves: nothing external can be pulled in.
                        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                        "style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'",
                    },
                )
            elif m := _SNAPSHOT_RE.match(path):
                self._snapshot(m.group(1))
            elif path == "/history" and owner.history_fn is not None:
                self._reply(HTTPStatus.OK, owner.history_fn())
            elif path.startswith("/events/") and owner.thumbnail_fn is not None:
                self._thumbnail(owner.thumbnail_fn, unquote(path))
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
        except (ConnectionError, TimeoutError):
            raise  # the client went away; handle_error logs it at DEBUG
        except Exception as exc:
            log.error("health: %s failed: %s", path, exc, exc_info=True)
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})

    def _snapshot(self, camera: str) -> None:
        jpeg = self.server.owner.snapshot_fn(camera)
        if jpeg is None:
            why = f"no snapshot for camera {camera!r} (unknown camera or no frame yet)"
            self._reply(HTTPStatus.NOT_FOUND, {"error": why})
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg")

    def _thumbnail(self, get: ThumbnailFn, path: str) -> None:
        # Checked here too (not only by the store): a name with "/" or ".." never reaches the disk.
        m = _EVENT_RE.match(path)
        jpeg = get(m.group(1)) if m and ".." not in path else None
        if jpeg is None:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no thumbnail {path[len('/events/') :]!r}"})
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg")

    def _reply(self, code: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, default=str, separators=(",", ":")).encode()
        self._send(code, body, "application/json", extra)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class HealthServer:
    """The health HTTP server on its own daemon thread; `start()` binds, `stop()` closes."""

    def __init__(
        self,
        bind: str,
        port: int,
        metrics: Metrics,
        *,
        status: StatusFn,
        ready: ReadyFn,
        snapshot: SnapshotFn,
        history: HistoryFn | None = None,
        thumbnail: ThumbnailFn | None = None,
        max_concurrent: int = MAX_CONCURRENT,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.bind = bind
        self.metrics = metrics
        self.status_fn = status
        self.ready_fn = ready
        self.snapshot_fn = snapshot
        self.history_fn = history
        self.thumbnail_fn = thumbnail
        self.request_timeout_s = request_timeout_s
        self.page = _status_page()
        self._requested_port = port
        self._max_concurrent = max_concurrent
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0); the requested one before start()."""
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    @property
    def active_requests(self) -> int:
        """Requests being handled right now (what the concurrency cap counts)."""
        return self._httpd.active if self._httpd is not None else 0

    def start(self) -> None:
        if self._httpd is not None:
            return
        self._httpd = _Server((self.bind, self._requested_port), self, self._max_concurrent)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="edged-health", daemon=True
        )
        self._thread.start()
        log.info("health server listening on http://%s:%d/", self.bind, self.port)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()  # returns once serve_forever has left its loop; handler threads are daemons
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
