"""Stop and reload requests from signals, as plain flags: SIGTERM/SIGINT ask to stop, SIGHUP to reload.

`edged run` installs these first thing, before the config is read or anything slow is imported, so a
signal during start-up is remembered instead of killing the process (SIGHUP's default action) and is
acted on once start-up is done: the daemon's main loop polls the flags.

Threads: handlers run in the main thread between bytecodes and only set booleans. They take no lock
(Event.set would): a handler waiting on a lock the interrupted main thread holds would deadlock.
"""

from __future__ import annotations

import signal
from types import FrameType


class SignalFlags:
    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self.installed = False

    def install(self) -> SignalFlags:
        """Take over SIGTERM, SIGINT and SIGHUP (main thread only); idempotent."""
        if not self.installed:
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGINT, self._on_stop)
            signal.signal(signal.SIGHUP, self._on_reload)
            self.installed = True
        return self

    def take_reload(self) -> bool:
        """Whether a reload was requested since the last call (clears the request)."""
        if not self.reload:
            return False
        self.reload = False
        return True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload = True
