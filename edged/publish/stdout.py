"""JSON-lines sink for `edged run --stdout`: one event per line, flushed, so `| jq` sees it at once."""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any


class StdoutSink:
    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()  # camera threads publish concurrently; lines must not interleave

    def publish(self, camera: str, payload: dict[str, Any]) -> None:
        line = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            self.stream.flush()
