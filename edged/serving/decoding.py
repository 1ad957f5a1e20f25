"""`Decoding`: a model server's decode side, run by its decode thread (edged.serving.server).

The batch thread `put`s each batch's job (rows, outputs on their way to the host, or an error); at most
two wait, so a slow decode holds the engine back instead of piling up downloads. `loop` waits for a
batch's download (the GIL is free meanwhile), decodes it, and hands every request its rows through its
ticket's callback, in the order the batches ran. With `workers` decode processes (edged.serving.
decodepool), up to `DEPTH` batches are in the workers at once: batch k+1's outputs go out while batch
k's rows are still decoding, and the thread collects them in order.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import suppress

import numpy as np

from edged.decoders.base import Decoder
from edged.preprocess.spec import Plan
from edged.serving.decodepool import DEPTH, DecodePool, PoolBatch
from edged.serving.requests import Job, Row, Ticket
from edged.types import Detection

log = logging.getLogger(__name__)


class Decoding:
    """One model's decoding: in its decode thread, or spread over `workers` processes."""

    def __init__(self, name: str, decoder: Decoder, workers: int = 0) -> None:
        self.name, self.decoder = name, decoder
        self.pool = DecodePool(decoder, workers) if workers > 0 else None
        self._jobs: queue.Queue[Job | None] = queue.Queue(2)

    @property
    def workers(self) -> int:
        return self.pool.workers if self.pool is not None else 0

    def warm(self, sample: tuple[Mapping[str, np.ndarray], Sequence[Plan]] | None) -> None:
        """Start the workers and decode `sample` (a warm-up batch's outputs) once in each, or else in
        this process: cold, each worker's first batch took ~0.3 s on an H200 machine (the 1-camera
        run's p99). Not both: decoding here would start OpenCV's thread pool in this process for nothing."""
        try:
            if self.pool is not None:
                self.pool.start(sample)
            elif sample is not None:
                self.decoder.decode(*sample)
        except Exception as e:  # the model's outputs do not fit its kind: say so at load, not per frame
            raise RuntimeError(f"the {self.decoder.kind} decoder cannot decode its outputs: {e}") from e

    def put(self, job: Job | None) -> None:
        """A batch's job, from the batch thread; None: no more (the loop ends after the last one)."""
        self._jobs.put(job)

    def loop(self) -> None:
        inflight: deque[tuple[list[Row], PoolBatch]] = deque()
        more = True
        while more or inflight:
            if more and len(inflight) < DEPTH:
                job = self._jobs.get()
                if job is None:
                    more = False
                elif job[0]:  # an empty job is only a wake-up: a batch in the workers is done
                    inflight.append(self._start(job))
            while inflight and (inflight[0][1].done() or len(inflight) >= DEPTH or not more):
                self._finish(*inflight.popleft())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def _start(self, job: Job) -> tuple[list[Row], PoolBatch]:
        batch, outputs, error = job
        if outputs is None:
            return batch, PoolBatch([], error=error)
        try:  # waits for this batch's download only (the GIL is free meanwhile)
            host, plans = outputs.wait(), [r.plan for r in batch]
            if self.pool is None:
                return batch, PoolBatch([], self.decoder.decode(host, plans))
            return batch, self.pool.submit(host, plans, self._wake)
        except Exception as e:
            return batch, PoolBatch([], error=e)
        finally:
            outputs.release()  # in the workers' shared block (or decoded) by now

    def _wake(self) -> None:
        with suppress(queue.Full):  # a full queue wakes the loop anyway
            self._jobs.put_nowait(([], None, None))

    def _finish(self, batch: list[Row], pending: PoolBatch) -> None:
        found: list[list[Detection]] = []
        error: BaseException | None = None
        try:
            found = pending.result()
        except Exception as e:
            error = e
        for i, r in enumerate(batch):
            if r.ticket.fill(r.index, None if error else found[i], error):
                self._deliver(r.ticket)

    def _deliver(self, ticket: Ticket) -> None:
        try:
            ticket.deliver(None if ticket.error else ticket.results, ticket.error)
        except Exception:  # one camera's continuation must not stop the model for the others
            log.exception("model %s: handing results back to camera %s failed", self.name, ticket.camera)
