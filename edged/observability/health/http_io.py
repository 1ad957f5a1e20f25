"""The health server's connection layer: one asyncio event loop owns every socket, so slow or idle clients
cost a small buffer each and never a thread, and liveness is answered on the loop itself.

Per connection: the request head (request line + headers) must arrive complete within `read_timeout_s`
in total (a deadline, not a per-read timeout: a client that dribbles a byte a second is dropped all the
same) and within `max_head_bytes`; then the reply is written (bounded by `write_timeout_s`) and the
connection closed (HTTP/1.0, one request per connection). At most `max_connections` are kept: beyond it
the oldest connection still sending its head is closed, so a flood of idle sockets evicts itself instead
of locking probes out.

Only the POST paths in `bodies` have a body read (each a `BodyRoute`): at most `max_in_flight` such
requests at once (one more is answered 429 before its body is read), a `Content-Length` of at most
`max_bytes` (411 without one, 413 above it), the whole body within `read_timeout_s` (408), and their
replies are made on a pool of their own, so slow inference never holds up /readyz or /metrics.

Threads: the loop runs in one daemon thread (`http`). `respond(head, client)` turns a complete head
into a complete reply; it runs on the loop for the paths in `inline_paths` (cheap ones that must never
wait, /healthz) and on a small thread pool for the rest (they call into the daemon and may be slow); a
pool job that takes longer than `handler_timeout_s` gets a 503 (and is cancelled if it has not started).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from edged.observability import threads

log = logging.getLogger(__name__)

Responder = Callable[[bytes, tuple[str, int]], bytes]


@dataclass(frozen=True)
class BodyRoute:
    """A POST path whose requests carry a body (POST /predict): its limits."""

    max_bytes: int
    max_in_flight: int
    read_timeout_s: float = 10.0  # the whole body within this
    reply_timeout_s: float = 30.0  # the handler's answer within this (else 503)


# After an error reply, unread input is drained for this long (and this much) before closing: closing a
# socket with unread data sends RST, which can destroy the reply before the client reads it.
_LINGER_S = 0.5
_LINGER_BYTES = 256 * 1024
_LINGER_MAX_BYTES = 64 * 1024 * 1024  # a refused request body (413, 429) is drained up to this


def error_response(code: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message, "code": code}).encode()
    head = (
        f"HTTP/1.0 {code} {reason}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _drain(head: bytes) -> int:
    """How much unread body to drain after refusing a request: what it announced (a client that sends
    it anyway then reads the refusal instead of a reset), within _LINGER_MAX_BYTES."""
    try:
        announced = int(_header(head, "Content-Length") or 0)
    except ValueError:
        announced = 0
    return max(_LINGER_BYTES, min(announced, _LINGER_MAX_BYTES))


def _head_end(buf: bytes | bytearray) -> int:
    """Length of the request head in buf (through the blank line), or -1 while incomplete."""
    ends = [i + n for sep, n in ((b"\r\n\r\n", 4), (b"\n\n", 2)) if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


def _path(head: bytes) -> str:
    parts = head.split(b"\n", 1)[0].split()
    if len(parts) < 2:
        return ""
    return parts[1].split(b"?", 1)[0].decode("latin-1")


def _method(head: bytes) -> str:
    parts = head.split(b"\n", 1)[0].split()
    return parts[0].decode("latin-1") if parts else ""


def _header(head: bytes, name: str) -> str | None:
    """The value of header `name` (case-insensitive) in a request head; None when absent."""
    want = name.lower().encode()
    for line in head.split(b"\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == want:
            return value.strip().decode("latin-1")
    return None


class HttpFront:
    """Accepts on `sock` (already bound and listening) and serves until `stop()`."""

    def __init__(
        self,
        sock: socket.socket,
        respond: Responder,
        *,
        inline_paths: Collection[str],
        read_timeout_s: float,
        max_head_bytes: int,
        max_connections: int,
        write_timeout_s: float = 5.0,
        handler_timeout_s: float = 10.0,
        workers: int = 4,
        bodies: Mapping[str, BodyRoute] | None = None,
    ) -> None:
        self._sock = sock
        self._respond = respond
        self._inline = frozenset(inline_paths)
        self.read_timeout_s = read_timeout_s
        self.max_head_bytes = max_head_bytes
        self.max_connections = max_connections
        self.write_timeout_s = write_timeout_s
        self.handler_timeout_s = handler_timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="http", initializer=threads.pool_worker
        )
        self._bodies = dict(bodies or {})
        # One pool per body route, as large as its in-flight limit: a request admitted never queues.
        self._body_pools = {
            path: concurrent.futures.ThreadPoolExecutor(
                r.max_in_flight, thread_name_prefix="post", initializer=threads.pool_worker
            )
            for path, r in self._bodies.items()
        }
        self._body_in_flight = dict.fromkeys(self._bodies, 0)  # touched on the loop thread only
        self.refused_busy = 0  # body requests answered 429
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        # Open connections, oldest first; True while the head is still being read (evictable).
        self._conns: dict[asyncio.Task[Any], bool] = {}
        self._writers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.evicted = 0
        self.timed_out = 0
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._started = threading.Event()

    @property
    def connections(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for pool in self._body_pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    # -- loop thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, sock=self._sock, limit=self.max_head_bytes)
            )
        finally:
            self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the listening socket: the port is free once stop() returns
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def _admit(self, task: asyncio.Task[Any]) -> None:
        self._conns[task] = True
        if len(self._conns) <= self.max_connections:
            return
        oldest = next((t for t, reading in self._conns.items() if reading and t is not task), None)
        if oldest is not None:
            self._conns[oldest] = False  # counted once even if it is evicted again before it ends
            self.evicted += 1
            oldest.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._admit(task)
        self._writers[task] = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            reply, linger = await self._request(reader, (str(peer[0]), int(peer[1])), task)
            if reply:
                writer.write(reply)
                async with asyncio.timeout(self.write_timeout_s):
                    await writer.drain()
                    if linger:
                        await self._linger(reader, writer, linger)
        except (asyncio.CancelledError, TimeoutError, ConnectionError, OSError):
            writer.transport.abort()  # evicted, stopping, or the client stopped reading: drop it now
        finally:
            self._conns.pop(task, None)
            self._writers.pop(task, None)
            writer.close()

    async def _request(
        self, reader: asyncio.StreamReader, peer: tuple[str, int], task: asyncio.Task[Any]
    ) -> tuple[bytes, int]:
        """The reply for this connection and how many bytes of unread input to drain first (0: none);
        b"" to just close."""
        buf = bytearray()
        try:
            async with asyncio.timeout(self.read_timeout_s):
                while (end := _head_end(buf)) < 0:
                    if len(buf) > self.max_head_bytes:
                        msg = f"request head over {self.max_head_bytes} bytes"
                        return error_response(431, "Request Header Fields Too Large", msg), _LINGER_BYTES
                    chunk = await reader.read(4096)
                    if not chunk:
                        return b"", False  # the client hung up before finishing its request
                    buf += chunk
        except TimeoutError:
            self.timed_out += 1
            log.debug("health: %s:%d sent no complete request within %.1f s", *peer, self.read_timeout_s)
            return b"", 0
        self._conns[task] = False  # a complete request is never evicted
        head = bytes(buf[:end])
        path = _path(head)
        if path in self._inline:
            return self._respond(head, peer), 0
        if path in self._bodies and _method(head) == "POST":
            return await self._with_body(path, head, bytes(buf[end:]), reader, self._writers.get(task), peer)
        return await self._answer(self._pool, head, peer, self.handler_timeout_s), 0

    async def _answer(
        self, pool: concurrent.futures.Executor, request: bytes, peer: tuple[str, int], timeout_s: float
    ) -> bytes:
        fut = self._loop.run_in_executor(pool, self._respond, request, peer)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            log.warning("health: %s took over %.0f s; answered 503", _path(request), timeout_s)
            return error_response(503, "Service Unavailable", "handler busy", "Retry-After: 1\r\n")

    async def _with_body(
        self,
        path: str,
        head: bytes,
        start: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        peer: tuple[str, int],
    ) -> tuple[bytes, int]:
        """A POST to a body route: admitted (in-flight limit), its body read (bounded), then answered."""
        route = self._bodies[path]
        if self._body_in_flight[path] >= route.max_in_flight:
            self.refused_busy += 1
            msg = f"{route.max_in_flight} request(s) to {path} already running; retry later"
            return error_response(429, "Too Many Requests", msg, "Retry-After: 1\r\n"), _drain(head)
        length_text = _header(head, "Content-Length")
        if length_text is None:
            msg = "a Content-Length header is required"
            return error_response(411, "Length Required", msg), _LINGER_BYTES
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            msg = f"bad Content-Length {length_text!r}"
            return error_response(400, "Bad Request", msg), _LINGER_BYTES
        if length > route.max_bytes:
            msg = f"request body of {length} bytes is over the limit of {route.max_bytes}"
            return error_response(413, "Content Too Large", msg), _drain(head)
        self._body_in_flight[path] += 1
        try:
            expect = (_header(head, "Expect") or "").lower()
            if expect == "100-continue" and writer is not None and len(start) < length:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it before large bodies
            body = bytearray(start[:length])
            try:
                async with asyncio.timeout(route.read_timeout_s):
                    while len(body) < length:
                        chunk = await reader.read(min(65536, length - len(body)))
                        if not chunk:
                            return b"", False  # the client hung up mid-body
                        body += chunk
            except TimeoutError:
                msg = f"the request body did not arrive within {route.read_timeout_s:g} s"
                return error_response(408, "Request Timeout", msg), 0
            pool = self._body_pools[path]
            return await self._answer(pool, head + bytes(body), peer, route.reply_timeout_s), 0
        finally:
            self._body_in_flight[path] -= 1

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int) -> None:
        if writer.can_write_eof():
            writer.write_eof()
        left = limit
        try:
            async with asyncio.timeout(_LINGER_S + limit / 50e6):  # a large refused body: more time
                while left > 0 and (chunk := await reader.read(65536)):
                    left -= len(chunk)
        except TimeoutError:
            pass
