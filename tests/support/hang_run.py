"""`edged run` with one model's engine made to hang (test support, run as `python -m tests.support.hang_run`).

The fault is injected here, by the test, through the daemon's `engine_wrap` argument: the daemon has no
fault hook of its own. From call `after` + 1 on, the named model's engine blocks inside infer() as a
wedged GPU or driver would; shutdown releases it, so SIGTERM still stops the process.

Usage: python -m tests.support.hang_run --config FILE --model text_det --after 20 [--stdout]
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edged.infer.base import Engine

log = logging.getLogger("edged.test.hang")


class HangingEngine:
    """Delegates to `engine` until `after` calls have been made, then blocks until `release` is set."""

    def __init__(self, engine: Engine, after: int, release: threading.Event) -> None:
        self._engine = engine
        self.name, self.inputs, self.outputs = engine.name, engine.inputs, engine.outputs
        self.metadata, self.info = engine.metadata, engine.info
        self._after = after
        self._release = release
        self._calls = 0

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self._calls += 1
        if self._calls == self._after + 1:
            log.warning("fault injection: model %s hangs now (call %d)", self.name, self._calls)
        if self._calls > self._after:
            self._release.wait()
        return self._engine.infer(inputs)

    def close(self) -> None:
        self._engine.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--after", type=int, default=5)
    ap.add_argument("--stdout", action="store_true")
    a = ap.parse_args()
    from edged.daemon.signals import SignalFlags

    signals = SignalFlags().install()
    from edged.cli.logsetup import setup_logging
    from edged.config.loader import load_config

    cfg = load_config(a.config, require_cameras=True)
    setup_logging(cfg.logging.level, cfg.logging.json_format)
    from edged.daemon.daemon import Daemon

    release = threading.Event()

    def wrap(model: str, engine: Engine) -> Engine:
        return HangingEngine(engine, a.after, release) if model == a.model else engine

    daemon = Daemon(cfg, Path(a.config).resolve(), stdout=a.stdout, signals=signals, engine_wrap=wrap)
    shutdown = daemon.shutdown

    def released_shutdown(flush_timeout_s: float = 5.0) -> None:
        release.set()  # in-flight frames finish, so the stop is as clean as with a healthy engine
        shutdown(flush_timeout_s)

    daemon.shutdown = released_shutdown  # type: ignore[method-assign]
    return daemon.run_forever()


if __name__ == "__main__":
    sys.exit(main())
