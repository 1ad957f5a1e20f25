"""Local HTTP health server: /healthz, /readyz, /metrics, /stats, /snapshot/<camera>.jpg, /history,
/events/<id>.jpg (event thumbnails), a status page and, when given `predict`, POST /predict.

It only reads state through the callables it is given (health never drives a camera), and the pipeline
never waits on it. Sockets belong to one asyncio loop (edged.observability.health.http_io): a request head must arrive
whole within REQUEST_TIMEOUT_S and MAX_HEAD_BYTES, idle or slow clients hold no thread, the oldest idle
ones are evicted beyond MAX_CONNECTIONS, and /healthz is answered on the loop itself, so no number of
slow clients can make liveness wait. The routes (`_Handler.do_GET`) run on a small handler pool, one
complete request at a time, with http.server's parsing on in-memory buffers.

`status()` is served as-is as JSON; the status page (`/`) understands this shape and shows what it finds:

    {"device": str, "uptime_s": float,
     "cameras": {name: {"state": str, "fps": float, "frames": int, "drops": int,
                        "latency_ms": {stage: float}, "last_detections": [Detection.to_dict(), ...]}},
     "mqtt": {"connected": bool, ...}, "outbox": {"events": int, "bytes": int, "oldest_age_s": float}}

`history()` (edged.observability.history: per-camera processed fps and latency points, the recent events) is served
as-is at /history; `thumbnail(name)` returns the JPEG of /events/<name> or None (404).
`predict(query, content_type, body)` answers POST /predict with (HTTP status, JSON object): the request
body is read by http_io within the limits of `predict_route` (size, requests in flight), on a pool of
its own.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edged.observability.health.http_io import BodyRoute, HttpFront, error_response
from edged.observability.metrics import Metrics

log = logging.getLogger(__name__)

StatusFn = Callable[[], dict[str, Any]]
ReadyFn = Callable[[], tuple[bool, dict[str, Any]]]
SnapshotFn = Callable[[str], "bytes | None"]
HistoryFn = Callable[[], dict[str, Any]]
ThumbnailFn = Callable[[str], "bytes | None"]
# (query string, Content-Type, body) -> (HTTP status, JSON object)
PredictFn = Callable[[str, str, bytes], tuple[int, dict[str, Any]]]
PREDICT_PATH = "/predict"

# The whole request head must arrive within this long (one deadline, not per read): well under any probe's
# timeout, and idle or dribbling sockets are gone quickly. Liveness never waits on them in any case.
REQUEST_TIMEOUT_S = 1.0
MAX_HEAD_BYTES = 8192  # request line + headers; memory per connection is bounded by it
MAX_CONNECTIONS = 512  # beyond it the oldest connection still sending its head is closed
INLINE_PATHS = ("/healthz",)  # answered on the event loop itself: never queued behind other handlers
_SNAPSHOT_RE = re.compile(r"^/snapshot/([A-Za-z0-9_-]{1,64})\.jpg$")
# Thumbnail names are event/track ids + .jpg: one path level, no leading dot (see edged.publish.thumbnails.store).
_EVENT_RE = re.compile(r"^/events/([A-Za-z0-9_-][A-Za-z0-9_.:-]{0,199}\.jpg)$")


def _status_page() -> bytes:
    try:
        return resources.files("edged.observability.health").joinpath("status.html").read_bytes()
    except (FileNotFoundError, OSError) as exc:  # a broken install still serves the API
        log.warning("status page not available: %s", exc)
        return b"<!doctype html><title>edged</title><p>status page missing; see <a href='/stats'>/stats</a>"


class _Server:
    """What a handler sees as `self.server`: the owning HealthServer (the routes' state)."""

    def __init__(self, owner: HealthServer) -> None:
        self.owner = owner

    def respond(self, head: bytes, client: tuple[str, int]) -> bytes:
        """The complete reply to one complete request head (http_io calls this; never raises)."""
        out = io.BytesIO()
        try:
            _Handler(head, client, self, out)
        except Exception:
            log.debug("health: error serving %s", client, exc_info=True)
            if not out.getvalue():
                return error_response(500, "Internal Server Error", "internal error")
        return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # type: ignore[assignment]  # not a socketserver: see _Server
    server_version = "edged-health"
    sys_version = ""

    def __init__(self, head: bytes, client: tuple[str, int], server: _Server, out: io.BytesIO) -> None:
        # http_io has read the request head already and writes the reply: the handler works on buffers.
        self._out = out
        super().__init__(head, client, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.rfile = io.BytesIO(self.request)
        self.wfile = self._out

    def finish(self) -> None:
        pass

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

    def do_POST(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        if url.path != PREDICT_PATH or owner.predict_fn is None:
            self._method_not_allowed()
            return
        # http_io read the whole body (Content-Length, within the route's limits) after the head.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            code, obj = owner.predict_fn(url.query, self.headers.get("Content-Type") or "", body)
        except Exception as exc:
            log.error("health: POST %s failed: %s", url.path, exc, exc_info=True)
            code, obj = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"{type(exc).__name__}: {exc}", "code": 500},
            )
        self._reply(code, obj)

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
            raise  # the client went away; _Server.respond logs it at DEBUG
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


class Starting:
    """What the health server answers before the daemon's parts exist (`edged run` starts it right
    after reading the config, before the slow imports and the models): alive, not ready, starting."""

    def __init__(self, device: str, version: str) -> None:
        self.device, self.version = device, version
        self.t0 = time.time()

    def status(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "device": self.device,
            "uptime_s": round(time.time() - self.t0, 1),
            "state": "starting",
            "cameras": {},
            "models": {},
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return False, {"ready": False, "reasons": ["starting: loading edged"], "cameras": {}, "models": {}}

    @staticmethod
    def snapshot(camera: str) -> bytes | None:
        return None


class HealthServer:
    """The health HTTP server on its own event-loop thread (edged.observability.health.http_io); `start()` binds, `stop()`
    closes. Without `status`/`ready`/`snapshot` it answers as `Starting` until `attach` gives the daemon's."""

    def __init__(
        self,
        bind: str,
        port: int,
        metrics: Metrics,
        *,
        status: StatusFn | None = None,
        ready: ReadyFn | None = None,
        snapshot: SnapshotFn | None = None,
        history: HistoryFn | None = None,
        thumbnail: ThumbnailFn | None = None,
        predict: PredictFn | None = None,
        predict_route: BodyRoute | None = None,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        starting: Starting | None = None,
    ) -> None:
        self.bind = bind
        self.metrics = metrics
        early = starting or Starting("", "")
        self.status_fn: StatusFn = status or early.status
        self.ready_fn: ReadyFn = ready or early.ready
        self.snapshot_fn: SnapshotFn = snapshot or early.snapshot
        self.history_fn = history
        self.thumbnail_fn = thumbnail
        self.predict_fn = predict
        # The body route of POST /predict (read within its limits), fixed when the server starts: None
        # with no predict handler and no route means the endpoint is off and no body is ever read.
        self.predict_route = predict_route or (
            BodyRoute(max_bytes=8 * 1024 * 1024, max_in_flight=2) if predict is not None else None
        )
        self.request_timeout_s = request_timeout_s
        self.page = _status_page()
        self._requested_port = port
        self._max_connections = max_connections
        self._front: HttpFront | None = None
        self._port = port

    def attach(
        self,
        *,
        status: StatusFn,
        ready: ReadyFn,
        snapshot: SnapshotFn,
        history: HistoryFn | None = None,
        thumbnail: ThumbnailFn | None = None,
        predict: PredictFn | None = None,
    ) -> None:
        """Serve the daemon's state from now on (a server started early, before the daemon existed).
        Each route reads its callable once per request: a request sees either the old or the new one.
        POST /predict answers 404 until `predict` comes (its body route is set at start, from config)."""
        self.history_fn, self.thumbnail_fn, self.predict_fn = history, thumbnail, predict
        self.snapshot_fn, self.status_fn, self.ready_fn = snapshot, status, ready

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0); the requested one before start()."""
        return self._port

    @property
    def active_requests(self) -> int:
        """Connections open right now (idle ones included)."""
        return self._front.connections if self._front is not None else 0

    @property
    def front(self) -> HttpFront | None:
        """The connection layer while running (its counters: evicted, timed_out)."""
        return self._front

    def start(self) -> None:
        """Bind and serve; raises OSError here when the address cannot be bound."""
        if self._front is not None:
            return
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        # create_server sets SO_REUSEADDR: the daemon can restart on the same port right after a stop.
        sock = socket.create_server((self.bind, self._requested_port), family=family, backlog=128)
        self._port = int(sock.getsockname()[1])
        self._front = HttpFront(
            sock,
            _Server(self).respond,
            inline_paths=INLINE_PATHS,
            read_timeout_s=self.request_timeout_s,
            max_head_bytes=MAX_HEAD_BYTES,
            max_connections=self._max_connections,
            bodies={PREDICT_PATH: self.predict_route} if self.predict_route is not None else None,
        )
        self._front.start()
        log.info("health server listening on http://%s:%d/", self.bind, self.port)

    def stop(self) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()


def start_early(
    bind: str,
    port: int,
    metrics: Metrics,
    *,
    device: str,
    version: str,
    predict_route: BodyRoute | None = None,
) -> HealthServer | None:
    """A health server answering `Starting` from now on (`attach` hands it the daemon's state later),
    or None when the address cannot be bound (logged: the pipeline matters more than the endpoint).
    `predict_route`: POST /predict's body limits when the config turns it on."""
    server = HealthServer(
        bind, port, metrics, starting=Starting(device, version), predict_route=predict_route
    )
    try:
        server.start()
    except OSError as e:
        log.error(
            "health server not started: %s:%d: %s (another edged running? set health.port)",
            bind,
            port,
            e.strerror or e,
        )
        return None
    return server
