"""The decision part of a model slot's switches: which engine a model runs, a candidate under shadow
check, the previous one for `rollback`.

Ownership and threads: an `EngineSwitch` belongs to the one thread that calls its model's engines (the
model server's batch thread, through its slot). That thread runs `active` on every batch and, while a
candidate is being checked, the `candidate` too on the same inputs, decodes both and calls `observe`;
after `frames` inputs it decides: the candidate becomes active when the shadow check agrees (or the operator forced it), else it
is closed and the report says why. Engines change only inside `propose`/`observe`/`rollback`, i.e.
between batches of that thread, so no batch runs half on one engine. `status()` may be read from any
thread (the health server, the MQTT stats publisher).

How a candidate arrives (new file + SIGHUP, or an MQTT command naming a file already on the device)
and loading it beside the running one are the slot's (edged.serving.slot.slot); see docs/engines.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edged.infer.base import Engine
from edged.serving.slot.shadow import ShadowCheck, ShadowReport, ShadowTolerance
from edged.types import Detection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    model: str
    what: str  # shadow_started | switched | forced | refused | rolled_back | rollback_refused | failed
    label: str  # the engine the event is about ("v2", a file name, ...)
    report: ShadowReport | None = None
    reason: str = ""  # why, where there is no report (a failed candidate, nothing to roll back to)


class EngineSwitch:
    """One model's engines: active, candidate (shadow-checked), previous (for rollback)."""

    def __init__(
        self,
        model: str,
        engine: Engine,
        label: str,
        *,
        frames: int = 20,
        tolerance: ShadowTolerance | None = None,
        on_event: Callable[[Decision], None] | None = None,
    ) -> None:
        if frames < 1:
            raise ValueError("a shadow check needs at least one frame")
        self.model = model
        self.active, self.active_label = engine, label
        self.candidate: Engine | None = None
        self.candidate_label = ""
        self.previous: Engine | None = None
        self.previous_label = ""
        self.frames = frames
        self.tolerance = tolerance or ShadowTolerance()
        self.last_report: ShadowReport | None = None
        self.counts = {k: 0 for k in ("shadow_started", "switched", "forced", "refused", "rolled_back")}
        self._check: ShadowCheck | None = None
        self._on_event = on_event
        self._lock = threading.Lock()  # guards what status() reads

    def propose(self, engine: Engine, label: str, *, force: bool = False) -> None:
        """Start checking `engine` beside the active one, or switch at once when forced."""
        if self.candidate is not None:  # a newer proposal replaces one still being checked
            log.info(
                "model %s: candidate %s replaced by %s before its check ended",
                self.model,
                self.candidate_label,
                label,
            )
            self.candidate.close()
        with self._lock:
            self.candidate, self.candidate_label = engine, label
            self._check = ShadowCheck(self.tolerance)
        if force:
            self._switch("forced", None)
            return
        self._event("shadow_started", label, None)

    def observe(
        self, frame: str | int, active: Sequence[Detection], candidate: Sequence[Detection]
    ) -> ShadowReport | None:
        """Both engines' decoded results on the same input; the final report once the check decided."""
        if self._check is None:
            return None
        self._check.add(frame, active, candidate)
        if self._check.frames < self.frames:
            return None
        report = self._check.report()
        if report.agree:
            self._switch("switched", report)
        else:
            assert self.candidate is not None
            self.candidate.close()
            label = self.candidate_label
            with self._lock:
                self.candidate, self.candidate_label, self._check = None, "", None
                self.last_report = report
            self._event("refused", label, report)
        return report

    def rollback(self) -> bool:
        """Back to the previous engine (the current one is closed); False when there is none."""
        if self.previous is None:
            self._event(
                "rollback_refused", self.active_label, None, "there is no previous model to go back to"
            )
            return False
        left, left_label = self.active, self.active_label
        with self._lock:
            self.active, self.active_label = self.previous, self.previous_label
            self.previous, self.previous_label = None, ""
        left.close()
        self._event("rolled_back", left_label, None)
        return True

    def drop_candidate(self, what: str, reason: str) -> None:
        """Close the candidate without deciding (`what`: failed on a real input, withdrawn by a rollback)."""
        if self.candidate is None:
            return
        left, label = self.candidate, self.candidate_label
        with self._lock:
            self.candidate, self.candidate_label, self._check = None, "", None
        left.close()
        self._event(what, label, None, reason)

    def adopt(self, engine: Engine) -> None:
        """The active engine was replaced, same model, by the slot (a background build switched in, a
        test's wrapper); the slot closed or still holds the old one."""
        with self._lock:
            self.active = engine

    def status(self) -> dict[str, Any]:
        with self._lock:
            check = self._check
            return {
                "active": self.active_label,
                "candidate": self.candidate_label or None,
                "shadow_frames": f"{check.frames}/{self.frames}" if check is not None else None,
                "previous": self.previous_label or None,
                "last_report": self.last_report.as_dict() if self.last_report else None,
                "counts": dict(self.counts),
            }

    def _switch(self, how: str, report: ShadowReport | None) -> None:
        assert self.candidate is not None
        stale = self.previous
        with self._lock:
            self.previous, self.previous_label = self.active, self.active_label
            self.active, self.active_label = self.candidate, self.candidate_label
            self.candidate, self.candidate_label, self._check = None, "", None
            if report is not None:
                self.last_report = report
        if stale is not None:
            stale.close()
        self._event(how, self.active_label, report)

    def _event(self, what: str, label: str, report: ShadowReport | None, reason: str = "") -> None:
        if what in self.counts:
            with self._lock:
                self.counts[what] += 1
        detail = f": {report.summary()}" if report is not None else f": {reason}" if reason else ""
        warn = ("refused", "forced", "rollback_refused", "failed")
        level = logging.WARNING if what in warn else logging.INFO
        log.log(level, "model %s: %s %s%s", self.model, what.replace("_", " "), label, detail)
        if self._on_event is not None:
            self._on_event(Decision(self.model, what, label, report, reason))
