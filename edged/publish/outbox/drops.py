"""Counting and logging of events the outbox drops: one warning per burst, not one per event.

`DropLog.add` counts every dropped event by reason (REASONS: observability.metrics.OUTBOX_DROP_REASONS,
the one list that the metric's label, /stats and these log lines share) and
logs the first drop of a burst at once; later drops for the same reason are summed and reported when
the burst ends (no drop for `quiet_s`) or every `summary_s` while it lasts. `tick` reports ended bursts;
the outbox calls it from its public methods. Not thread-safe: the outbox calls it under its lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edged.observability.metrics import OUTBOX_DROP_REASONS, Metrics

log = logging.getLogger("edged.publish.outbox")

REASONS = OUTBOX_DROP_REASONS


@dataclass
class _Burst:
    started: float
    last_drop: float
    last_report: float
    unreported: int = 0
    total: int = 0


class DropLog:
    def __init__(
        self,
        where: str,
        metrics: Metrics | None = None,
        *,
        quiet_s: float = 10.0,
        summary_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where
        self.metrics = metrics
        self.quiet_s = quiet_s
        self.summary_s = summary_s
        self.clock = clock
        self.counts: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._bursts: dict[str, _Burst] = {}

    def add(self, reason: str, n: int, left: int) -> None:
        """Count `n` events dropped for `reason`; `left` is how many events the outbox still holds."""
        if n <= 0:
            return
        self.counts[reason] += n
        if self.metrics is not None:
            self.metrics.outbox_dropped.labels(reason=reason).inc(n)
        now = self.clock()
        self.tick(now)
        burst = self._bursts.get(reason)
        if burst is None:
            self._bursts[reason] = _Burst(now, now, now, 0, n)
            log.warning(
                "outbox %s: %d event(s) dropped, reason %s (%s); %d left; further drops for this reason "
                "are summed up in one line per burst",
                self.where,
                n,
                reason,
                REASONS[reason],
                left,
            )
            return
        burst.last_drop = now
        burst.unreported += n
        burst.total += n
        if now - burst.last_report >= self.summary_s:
            self._report(reason, burst, now, ended=False)

    def tick(self, now: float | None = None) -> None:
        """Report bursts that have ended (no drop for quiet_s)."""
        now = self.clock() if now is None else now
        for reason, burst in list(self._bursts.items()):
            if now - burst.last_drop >= self.quiet_s:
                self._report(reason, burst, now, ended=True)
                del self._bursts[reason]

    def close(self) -> None:
        for reason, burst in self._bursts.items():
            self._report(reason, burst, self.clock(), ended=True)
        self._bursts.clear()

    def _report(self, reason: str, burst: _Burst, now: float, *, ended: bool) -> None:
        if burst.unreported:
            log.warning(
                "outbox %s: %d more event(s) dropped, reason %s, in the last %.0f s (%d in this burst%s)",
                self.where,
                burst.unreported,
                reason,
                now - burst.last_report,
                burst.total,
                ", which has ended" if ended else "",
            )
        burst.unreported = 0
        burst.last_report = now
