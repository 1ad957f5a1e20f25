"""Fault-injection hooks for tests of the process as a whole. Inert unless their variable is set.

EDGED_TEST_HANG_MODEL=<model>[:<calls>]  the engine of that model blocks inside infer() from call
    number <calls>+1 on (default 5), as a wedged GPU or driver would. It is released only at shutdown, so
    SIGTERM still stops the process. tests/test_faults.py uses it to prove that the systemd watchdog
    pings stop when a stage hangs. Never set it in production: it is logged as a warning at startup.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from edged.infer.base import Engine

log = logging.getLogger(__name__)

HANG_VAR = "EDGED_TEST_HANG_MODEL"


class HangingEngine:
    """Delegates to `engine` until `after` calls have been made, then blocks until `release` is set."""

    def __init__(self, engine: Engine, after: int, release: threading.Event) -> None:
        self._engine = engine
        self.name = engine.name
        self.inputs = engine.inputs
        self.outputs = engine.outputs
        self.metadata = engine.metadata
        self.info = engine.info
        self.after = after
        self.calls = 0
        self._release = release
        self._lock = threading.Lock()

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            hang = self.calls > self.after
            first = self.calls == self.after + 1
        if hang:
            if first:
                log.warning("fault injection: model %s hangs now (call %d)", self.name, self.calls)
            self._release.wait()
        return self._engine.infer(inputs)

    def close(self) -> None:
        self._engine.close()


def hang_request(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """(model, calls before the hang) from EDGED_TEST_HANG_MODEL, or None; a bad value is logged."""
    value = (os.environ if env is None else env).get(HANG_VAR, "").strip()
    if not value:
        return None
    model, _, calls = value.partition(":")
    try:
        after = int(calls) if calls else 5
    except ValueError:
        log.warning("%s=%r: expected <model>[:<calls>]; ignored", HANG_VAR, value)
        return None
    log.warning("%s is set: model %s will hang after %d inference calls (test only)", HANG_VAR, model, after)
    return model, max(0, after)
