"""Keeping exceptions out of threads we do not own, and noticing when a thread of ours ends.

`CallbackGuard.wrap` wraps each callback handed to paho: an exception is logged (with its traceback,
once per callback until that callback succeeds again), counted and remembered, and never reaches paho's
network thread, where it would end the loop and with it every later publish and acknowledgement.

`supervise` runs a long-lived loop in the calling thread: if the loop raises it is logged and started
again after a pause; more than `max_restarts` failures within `window_s` end it for good and `on_give_up`
is called with the reason (which the owner reports through healthy()/readiness). Both are used by
MqttPublisher; state is per instance and only touched by the thread that runs the wrapped code.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("edged.publish.mqtt")

F = TypeVar("F", bound=Callable[..., Any])


class CallbackGuard:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.failures = 0
        self.last_error: str | None = None
        self._failing: set[str] = set()

    def wrap(self, fn: F) -> F:
        name = getattr(fn, "__name__", repr(fn))

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                self.failures += 1
                self.last_error = f"{name}: {type(e).__name__}: {e}"
                if name not in self._failing:  # once per run of failures, not once per message
                    self._failing.add(name)
                    log.exception("%s: callback %s failed; paho's network thread goes on", self.owner, name)
                return None
            self._failing.discard(name)
            return result

        return guarded  # type: ignore[return-value]


def supervise(
    name: str,
    loop: Callable[[], None],
    *,
    stopping: threading.Event,
    on_give_up: Callable[[str], None],
    max_restarts: int = 3,
    window_s: float = 60.0,
    pause_s: float = 1.0,
) -> None:
    """Run `loop` until it returns; restart it when it raises, give up past max_restarts in window_s."""
    failures: list[float] = []
    while not stopping.is_set():
        try:
            loop()
            return
        except Exception as e:
            now = time.monotonic()
            failures = [t for t in failures if now - t < window_s] + [now]
            if len(failures) > max_restarts:
                reason = f"{name} thread ended: {type(e).__name__}: {e} ({len(failures)} failures in {window_s:g} s)"
                log.exception("%s; publishing stops (edged must be restarted)", reason)
                on_give_up(reason)
                return
            log.exception("%s thread failed; restarting it in %g s", name, pause_s)
            stopping.wait(pause_s)
