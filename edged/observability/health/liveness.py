"""Daemon liveness for the systemd watchdog: named checks, each returning (ok, reason), and the main loop's
heartbeat.

The watchdog pings while every check passes. Checks cover the daemon's own machinery (main loop, MQTT
publisher, capture watcher, model servers and chains), never a camera: a camera without frames is healed
in-process by its capture thread (stalls judged by the shared capture watcher, reopen with backoff) and
reported by /readyz, so it must not get every other camera restarted with it. Adding a part is one line:
`liveness.add("model server det", server.healthy)`.

Threads: checks are added and removed by the daemon's main thread and run on the watchdog thread (the
list is copied under a lock); `Heartbeat.beat()` is called by the main loop, `check()` by the watchdog.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

Check = Callable[[], tuple[bool, str]]

# The main loop ticks every 0.2 s; a command may stop a camera (seconds). Beyond this it is wedged.
MAIN_LOOP_STALL_S = 30.0


class Liveness:
    """Ordered named checks; calling it gives (True, "") or (False, "<name>: <reason>") of the first failure."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._checks)

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            checks = list(self._checks.items())
        for name, check in checks:
            try:
                ok, why = check()
            except Exception as exc:  # a broken check counts as a failure, never kills the watchdog
                ok, why = False, f"check failed: {type(exc).__name__}: {exc}"
            if not ok:
                return False, f"{name}: {why}"
        return True, ""


class Heartbeat:
    """The main loop's sign of life. `busy()` covers long but legitimate work (a reload loading models)."""

    def __init__(self, stall_s: float = MAIN_LOOP_STALL_S) -> None:
        self.stall_s = stall_s
        self._last = time.monotonic()
        self._busy: tuple[str, float, float] | None = None  # what, since, limit

    def beat(self) -> None:
        self._last = time.monotonic()

    @contextlib.contextmanager
    def busy(self, what: str, limit_s: float) -> Iterator[None]:
        self._busy = (what, time.monotonic(), limit_s)
        try:
            yield
        finally:
            self._busy = None
            self.beat()

    def check(self) -> tuple[bool, str]:
        now = time.monotonic()
        busy = self._busy
        if busy is not None:
            what, since, limit_s = busy
            if now - since <= limit_s:
                return True, ""
            return False, f"{what} running for {now - since:.0f} s (limit {limit_s:.0f} s)"
        if now - self._last > self.stall_s:
            return False, f"no round for {now - self._last:.0f} s"
        return True, ""
