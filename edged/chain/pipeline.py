"""Overlap consecutive frames across chain stages: one thread per stage, bounded hand-offs.

While stage 2 (recognition) works on frame N, stage 1 (detection) already runs on frame N+1. The
heavy calls (ONNX Runtime, TensorRT, CUDA, OpenCV) release the GIL, so stages really run in
parallel. Queues hold at most `depth` frames: when the chain is slower than the camera the capture
side drops (latest-frame semantics), never this pipeline, so no backlog builds and order is kept.

With a `FrameBatcher` (edged.chain.streammux) the first stage is not run here: frames go to the
batcher shared with other cameras, which hands them back to this pipeline's second stage (or sink).
Then at most `depth + 1` frames of this camera are in flight at once (`submit` blocks beyond that).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from edged.chain.chain import Chain, StageState, finish, run_stage
from edged.chain.streammux import FrameBatcher
from edged.infer.batching import BatcherClosed
from edged.types import Frame, FrameResult

log = logging.getLogger(__name__)

_STOP = object()


class Pipeline:
    def __init__(
        self,
        chain: Chain,
        sink: Callable[[FrameResult], None],
        *,
        name: str = "camera",
        depth: int = 1,
        on_error: Callable[[Frame, BaseException], None] | None = None,
        thread_context: Callable[[], AbstractContextManager[Any]] | None = None,
        batcher: FrameBatcher | None = None,
    ):
        self.chain = chain
        self.sink = sink
        self.name = name
        self.on_error = on_error
        # Entered by every stage thread for its lifetime (the GPU lane: CUDA context + this camera's stream).
        self.thread_context = thread_context
        self.batcher = batcher
        n = len(chain.stages)
        # queues[i] feeds stage i; queues[n] feeds the sink. Behind a batcher the slots bound the
        # frames in flight, so the hand-off queue never blocks the batcher's thread.
        self._queues: list[queue.Queue[object]] = [queue.Queue(maxsize=depth) for _ in range(n + 1)]
        self._slots = threading.BoundedSemaphore(depth + 1)
        if batcher is not None:
            self._queues[1] = queue.Queue(maxsize=depth + 2)
        self._threads: list[threading.Thread] = []
        self.in_flight = 0
        self._lock = threading.Lock()
        self.last_progress = time.monotonic()
        self.completed = 0

    def start(self) -> None:
        for i in range(1 if self.batcher is not None else 0, len(self.chain.stages) + 1):
            t = threading.Thread(target=self._worker, args=(i,), name=f"{self.name}-stage{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, frame: Frame, timeout: float | None = None) -> bool:
        """Hand a frame to the first stage; blocks while it is busy (False on timeout)."""
        if self.batcher is not None:
            if not self._slots.acquire(timeout=timeout):
                return False
            with self._lock:
                self.in_flight += 1
            try:
                self.batcher.submit(self.chain.stages[0], StageState(frame), self._first_done)
            except BatcherClosed:  # shutdown or reload
                self._done()
                return False
            except Exception as e:  # a frame the batcher cannot take (an empty image) fails alone
                self._failed(frame, e)
                self._done()
            return True
        with self._lock:
            self.in_flight += 1
        try:
            self._queues[0].put(StageState(frame), timeout=timeout)
        except queue.Full:
            with self._lock:
                self.in_flight -= 1
            return False
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the frames in flight, then stop the threads. True if everything drained in time."""
        deadline = time.monotonic() + timeout
        first = 0
        if self.batcher is not None:  # frames still in the batcher come back before the stop marker
            first = 1
            while self.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
        try:
            self._queues[first].put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return False
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _worker(self, index: int) -> None:
        with self.thread_context() if self.thread_context is not None else nullcontext():
            self._serve(index)

    def _serve(self, index: int) -> None:
        stages = self.chain.stages
        inbox, outbox = self._queues[index], self._queues[index + 1] if index < len(stages) else None
        while True:
            item = inbox.get()
            if item is _STOP:
                if outbox is not None:
                    outbox.put(_STOP)
                return
            assert isinstance(item, StageState)
            try:
                if outbox is not None:
                    run_stage(stages[index], item)
                    outbox.put(item)
                    continue
                self.sink(finish(item))
            except Exception as e:  # one bad frame must not stop the camera
                self._failed(item.frame, e)
            else:
                self.completed += 1
            self._done()

    def _first_done(self, state: StageState, error: BaseException | None) -> None:
        """The batcher's hand-back (its decode thread): on to stage 2 or the sink."""
        if error is None:
            self._queues[1].put(state)
            return
        self._failed(state.frame, error)
        self._done()

    def _done(self) -> None:
        self.last_progress = time.monotonic()
        with self._lock:
            self.in_flight -= 1
        if self.batcher is not None:
            self._slots.release()

    def _failed(self, frame: Frame, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(frame, error)
        else:
            log.error("camera %s: frame %d failed: %s", frame.camera, frame.seq, error)
