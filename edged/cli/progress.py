"""Progress of long work (TensorRT engine builds, model extraction, benchmarks) for people and journald.

On a terminal it redraws one line in place (`\\r`) with a bar; anywhere else (systemd's journal, a pipe,
CI logs) a redrawn line would be hundreds of garbage lines, so it logs a plain line only every
`every_pct` percent or `every_s` seconds, whichever comes first, plus one at the start and one at the end.

    with Progress("text_det engine", total=100) as p:
        for i in range(100):
            p.update(i + 1)

`Progress.phase_callback` fits TensorRT's build monitor (`build_engine(..., progress=cb)`), which
reports (phase, step, total) for nested build phases.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

log = logging.getLogger(__name__)

PhaseCallback = Callable[[str, int, int], None]


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


class Progress:
    """A progress reporter: a bar on a TTY, throttled log lines otherwise.

    `total=None` means unknown length: the TTY shows a counter, the log reports every `every_s`.
    `tty=None` decides from `stream.isatty()`; the clock is injectable so tests need not sleep.
    """

    def __init__(
        self,
        title: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        logger: logging.Logger | None = None,
        tty: bool | None = None,
        every_pct: float = 10.0,
        every_s: float = 10.0,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title = title
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.logger = logger or log
        self.tty = _is_tty(self.stream) if tty is None else tty
        self.every_pct = every_pct
        self.every_s = every_s
        self.width = width
        self.clock = clock
        self.done = 0
        self.phase = ""
        self.closed = False
        self._lock = threading.Lock()  # TensorRT calls the monitor from its own threads
        self._t0 = clock()
        self._last_log_t = self._t0
        self._last_log_pct = 0.0
        self._last_drawn = ""
        self._started = False

    # -- reporting ----------------------------------------------------------------------------

    def update(self, done: int, total: int | None = None, phase: str | None = None) -> None:
        """Set the absolute progress (and optionally a new total or phase name)."""
        with self._lock:
            if self.closed:
                return
            if total is not None:
                self.total = total
            new_phase = phase is not None and phase != self.phase
            if phase is not None:
                self.phase = phase
            self.done = done
            if not self._started:
                self._started = True
                if not self.tty:
                    self._log_line()
            if self.tty:
                self._draw()
            else:
                self._maybe_log(force=new_phase)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def phase_callback(self) -> PhaseCallback:
        """A callback(phase, step, total), e.g. for TensorRT's IProgressMonitor phases."""

        def cb(phase: str, step: int, total: int) -> None:
            self.update(step, total, phase)

        return cb

    def close(self, message: str | None = None) -> None:
        """Finish: a final line on both kinds of output ('done in 12.3 s' unless `message` says else)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            took = self.clock() - self._t0
            end = message or f"done in {took:.1f} s"
            if self.tty:
                self._draw(final=end)
                self.stream.write("\n")
                self.stream.flush()
            else:
                self.logger.info("%s: %s", self.title, end)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(None if et is None else f"failed ({et.__name__})")

    # -- rendering ----------------------------------------------------------------------------

    @property
    def pct(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(100.0, 100.0 * self.done / self.total))

    def _counts(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.done}/{self.total}{unit}" if self.total else f"{self.done}{unit}"

    def _draw(self, final: str = "") -> None:
        pct = self.pct
        if pct is None:
            bar = ""
        else:
            full = int(self.width * pct / 100)
            bar = f"[{'#' * full}{'-' * (self.width - full)}] {pct:5.1f}% "
        phase = f" {self.phase}" if self.phase else ""
        tail = f" {final}" if final else ""
        line = f"{self.title} {bar}{self._counts()}{phase}{tail}"
        if line == self._last_drawn:
            return  # TensorRT reports thousands of steps; only changes reach the terminal
        # Pad over the rest of a longer previous line, since \r does not clear it.
        pad = max(0, len(self._last_drawn) - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_drawn = line

    def _maybe_log(self, force: bool = False) -> None:
        now = self.clock()
        pct = self.pct
        if pct is not None and pct < self._last_log_pct:
            self._last_log_pct = 0.0  # a new total (or phase) started over
        due_pct = pct is not None and pct - self._last_log_pct >= self.every_pct
        due_time = now - self._last_log_t >= self.every_s
        if force or due_pct or due_time:
            self._log_line()

    def _log_line(self) -> None:
        pct = self.pct
        shown = f"{pct:.0f}% ({self._counts()})" if pct is not None else self._counts()
        phase = f" {self.phase}" if self.phase else ""
        self.logger.info("%s: %s%s", self.title, shown, phase)
        self._last_log_t = self.clock()
        if pct is not None:
            # Snap to the step grid so a run of updates logs at 10, 20, 30 % rather than drifting.
            self._last_log_pct = pct - (pct % self.every_pct) if self.every_pct > 0 else pct
