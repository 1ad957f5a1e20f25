"""`Delivery`: a few shared threads that run the cameras' sinks, so that a slow sink (a stalled disk, a
slow stdout reader) never runs on a model server's decode thread, where it would hold up every camera.

Each camera gets a `SerialLane`: its results run one at a time and in order, on whichever pool thread is
free; a slow camera occupies one pool thread, the others go on. Threads are fixed in number (not per
camera); the camera's chain counts a result in flight until its sink has run, so a slow sink slows only
its own camera's intake (its capture then keeps just the newest frame).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from edged.observability import threads

log = logging.getLogger(__name__)


class SerialLane:
    """Runs submitted calls one after another, in submission order, on the shared pool."""

    def __init__(self, pool: ThreadPoolExecutor, name: str) -> None:
        self.name = name
        self._pool = pool
        self._calls: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def submit(self, call: Callable[[], None]) -> None:
        with self._lock:
            self._calls.append(call)
            if self._scheduled:
                return
            self._scheduled = True
        self._pool.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    self._scheduled = False
                    return
                call = self._calls.popleft()
            try:
                call()
            except Exception:  # a failing call must not strand the calls queued behind it
                log.exception("%s: a delivery failed", self.name)


class Delivery:
    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="deliv", initializer=threads.pool_worker
        )

    def lane(self, name: str) -> SerialLane:
        return SerialLane(self._pool, name)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
