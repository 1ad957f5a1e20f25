"""The shadow run of a model slot's candidate (edged.serving.slot.slot): the candidate engine on the
rows the active engine just ran, on the model server's batch thread.

Per batch: the rows are preprocessed again into the same shape (on the server's GPU lane), the
candidate runs on them (its one caller is the batch thread), both engines' outputs are decoded with
private decoder copies, and each request's two results (a frame, or all crops of one frame, gathered
across the batches they went into) are handed to `EngineSwitch.observe`, which decides. A candidate that
fails on a real input is dropped; it must never cost a served frame.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.decoders.base import Decoder
from edged.serving.outputs import to_host
from edged.serving.slot.switch import EngineSwitch
from edged.types import Detection

if TYPE_CHECKING:
    from edged.serving.warming import Warmer

_MAX_PARTIAL = 256  # requests whose rows are still being gathered; older ones are forgotten


@dataclass
class _Partial:
    """One request's rows compared so far (its crops may run in several batches)."""

    ticket: Any
    rows: dict[int, tuple[list[Detection], list[Detection]]] = field(default_factory=dict)


class ShadowRun:
    """One candidate's shadow run against the served engine (batch thread only)."""

    def __init__(self, feed: Warmer, switch: EngineSwitch, served: Decoder, candidate: Decoder) -> None:
        self.feed = feed  # the model's preprocessing, declared shapes and lane
        self.switch = switch
        self._decoders = (copy.deepcopy(served), copy.deepcopy(candidate))
        self._partial: dict[int, _Partial] = {}

    def run(self, rows: Sequence[Any], outputs: dict[str, np.ndarray]) -> bool:
        """Run the candidate on the rows the active engine ran (`outputs`: its host outputs, the served
        results); True once the EngineSwitch has decided (the check is complete, or the candidate failed)."""
        feed, candidate = self.feed, self.switch.candidate
        assert candidate is not None
        n, plans = len(rows), [r.plan for r in rows]
        try:
            tensor = feed.tensor([(r.frame, r.plan) for r in rows], feed.shapes.rows_for(n), feed.lane)
            theirs = {
                k: to_host(v, feed.lane)[:n] for k, v in candidate.infer({feed.input_name: tensor}).items()
            }
            served = self._decoders[0].decode(outputs, plans)
            found = self._decoders[1].decode(theirs, plans)
        except Exception as e:  # the candidate must never cost a served frame
            self.switch.drop_candidate("failed", f"failed on a real input: {type(e).__name__}: {e}")
            return True
        for row, a, b in zip(rows, served, found, strict=True):
            part = self._partial.setdefault(id(row.ticket), _Partial(row.ticket))
            part.rows[row.index] = (a, b)
            if len(part.rows) < len(row.ticket.results):
                continue
            del self._partial[id(row.ticket)]
            order = sorted(part.rows)
            report = self.switch.observe(
                f"{row.ticket.camera}:{row.frame.seq}",
                [d for i in order for d in part.rows[i][0]],
                [d for i in order for d in part.rows[i][1]],
            )
            if report is not None:
                return True
        while len(self._partial) > _MAX_PARTIAL:  # rows that ran before the check began never complete
            del self._partial[next(iter(self._partial))]
        return False
