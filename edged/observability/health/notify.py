"""systemd notification protocol (sd_notify) and a progress-gated watchdog, without dependencies.

The protocol is one datagram of newline-separated KEY=VALUE lines to the AF_UNIX socket named by
NOTIFY_SOCKET (a path, or '@name' for the abstract namespace). Outside systemd the variable is unset and
every call is a no-op, so the daemon runs the same under a terminal, in tests and under systemd.

The watchdog pings only while the daemon is alive by the checks it is given (edged.observability.health.liveness:
main loop, publisher, model servers and chains): a wedged part must stop the pings so that systemd
restarts the service. Cameras are not among them: one without frames is reopened in-process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ProgressFn = Callable[[], tuple[bool, str]]
SummaryFn = Callable[[], str]


class Notifier:
    """Sends sd_notify messages; does nothing when NOTIFY_SOCKET is unset. Safe to share between threads."""

    def __init__(self, address: str | None = None) -> None:
        addr = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address: str | None = None
        if addr:
            if addr.startswith("@"):
                addr = "\0" + addr[1:]
            elif not addr.startswith("/"):
                log.warning("ignoring NOTIFY_SOCKET=%r: not a path or abstract socket", addr)
                addr = ""
            self._address = addr or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send KEY=VALUE lines as one datagram; True when it was delivered to the socket."""
        if self._address is None:
            return False
        data = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block: if systemd is not draining its socket, a lost ping beats a stalled pipeline.
                self._sock.sendto(data, socket.MSG_DONTWAIT, self._address)
            except OSError as exc:
                # Losing a notification must never take the daemon down; say so once, not per ping.
                if not self._failed:
                    log.warning("sd_notify to %r failed: %s", self._address.replace("\0", "@"), exc)
                    self._failed = True
                return False
        if self._failed:
            log.info("sd_notify delivers again")
            self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """Start of a reload; send ready() when it is done. MONOTONIC_USEC lets systemd match the two."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more to finish starting or stopping (e.g. while building TensorRT engines)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(text.split())


def watchdog_interval() -> float | None:
    """Ping period in seconds (half of WATCHDOG_USEC) if systemd watches this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    if not _watchdog_is_ours():
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    return value / 2e6 if value > 0 else None


def _watchdog_is_ours() -> bool:
    # WATCHDOG_PID names the process systemd watches; a child that inherited the variables must not ping.
    pid = os.environ.get("WATCHDOG_PID")
    if not pid:
        return True
    try:
        return int(pid) == os.getpid()
    except ValueError:
        return False


class Watchdog:
    """Thread that sends WATCHDOG=1 every `interval_s` while `progress()` says the daemon is alive.

    `progress()` returns (True, _) when every part works, or (False, reason) when something is wedged or
    dead: then no ping is sent (systemd will restart us after WatchdogSec) and the reason is logged once
    per stall. With `summary`, a one-line STATUS= is sent every `summary_interval_s`.
    """

    def __init__(
        self,
        notifier: Notifier,
        progress: ProgressFn,
        interval_s: float | None = None,
        *,
        summary: SummaryFn | None = None,
        summary_interval_s: float = 10.0,
    ) -> None:
        self.notifier = notifier
        self.progress = progress
        self.summary = summary
        self.summary_interval_s = summary_interval_s
        if not _watchdog_is_ours():
            self.interval_s: float | None = None
        else:
            self.interval_s = interval_s if interval_s is not None else watchdog_interval()
        self.pings = 0
        self._stalled_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether the thread has anything to do (a watchdog to feed or a summary to send)."""
        return self.notifier.enabled and (self.interval_s is not None or self.summary is not None)

    def start(self) -> None:
        if self._thread is not None or not self.active:
            if not self.active:
                log.debug("systemd watchdog not requested; not starting the watchdog thread")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wdog", daemon=True)
        self._thread.start()
        if self.interval_s is not None:
            log.info("systemd watchdog: ping every %.1f s while the daemon is alive", self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def check(self) -> bool:
        """One round: ping if progress() allows; True when a ping was sent. Used by the thread and tests."""
        try:
            ok, why = self.progress()
        except Exception as exc:  # a broken probe must look like a stall, not kill the watchdog thread
            ok, why = False, f"progress check failed: {type(exc).__name__}: {exc}"
        if not ok:
            if self._stalled_reason is None:
                log.warning("daemon not alive (%s): withholding systemd watchdog pings", why)
            self._stalled_reason = why
            return False
        if self._stalled_reason is not None:
            log.info("daemon alive again; resuming watchdog pings")
            self._stalled_reason = None
        if self.notifier.watchdog():
            self.pings += 1
            return True
        return False

    def _send_summary(self) -> None:
        if self.summary is None:
            return
        try:
            self.notifier.status(self.summary())
        except Exception as exc:
            log.debug("status summary failed: %s", exc)

    def _run(self) -> None:
        period = self.interval_s if self.interval_s is not None else self.summary_interval_s
        next_summary = time.monotonic()
        while not self._stop.is_set():
            if self.interval_s is not None:
                self.check()
            if self.summary is not None and time.monotonic() >= next_summary:
                self._send_summary()
                next_summary = time.monotonic() + self.summary_interval_s
            self._stop.wait(period)
