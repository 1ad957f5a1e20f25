"""What travels through a model server (edged.serving.server): a request's ticket, its rows, the jobs
the batch thread hands the decode thread.

A `Ticket` is filled from the decode thread (one row at a time, locked) and delivered once complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edged.preprocess.spec import Plan
from edged.serving.outputs import Outputs
from edged.types import Detection, Frame

# (rows of detections, one list per row; None on error), error
Deliver = Callable[[list[list[Detection]] | None, BaseException | None], None]


class Ticket:
    """One request (a frame, or the crops of one frame): delivered once all its rows are back."""

    def __init__(self, rows: int, deliver: Deliver, camera: str) -> None:
        self.results: list[list[Detection]] = [[] for _ in range(rows)]
        self.remaining = rows
        self.error: BaseException | None = None
        self.deliver = deliver
        self.camera = camera
        self._lock = threading.Lock()

    def fill(self, index: int, found: list[Detection] | None, error: BaseException | None) -> bool:
        """Record one row; True when that was the last one."""
        with self._lock:
            if error is not None:
                self.error = self.error or error
            elif found is not None:
                self.results[index] = found
            self.remaining -= 1
            return self.remaining == 0


@dataclass
class Row:
    frame: Frame
    plan: Plan
    ticket: Ticket
    index: int
    key: tuple[int, int]
    t_enqueued: float = field(default_factory=time.perf_counter)


# (rows, outputs on their way to the host or None, error or None)
Job = tuple[list[Row], Outputs | None, BaseException | None]
