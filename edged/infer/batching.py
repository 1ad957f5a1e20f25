"""Cross-camera batching: one engine call for requests that several cameras make at about the same time.

`BatchingEngine` wraps an Engine shared by cameras. Each caller's `infer` enqueues its tensor and
waits; a worker thread takes the oldest request, then gathers more with the same input shape for up
to `max_wait_ms` or until `max_batch` items, concatenates them along the batch axis, runs the engine
once and hands each caller its slice (what DeepStream's nvstreammux does for streams).

Fairness: requests are served oldest first, and a camera's pipeline stage has at most one request
outstanding (it waits for its answer), so a fast camera cannot starve a slow one: it is at most one
request ahead per batch. Latency added by waiting is measured per call and bounded by max_wait_ms
(plus the engine call it queues behind).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from edged.infer.base import Engine

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """A request arrived after the batcher was closed (shutdown or reload)."""


class Queued(Protocol):
    key: Hashable  # only items with the head's key join its batch (same input shape)
    rows: int
    t_enqueued: float


Q = TypeVar("Q", bound=Queued)


class BatchQueue(Generic[Q]):
    """Oldest-first gathering shared by the engine-level and the frame-level batchers.

    `take` blocks for the oldest item, then adds later items with the same key while they fit in
    `max_rows`, waiting at most `max_wait_s` after the oldest was enqueued for more to arrive."""

    def __init__(self) -> None:
        self._items: deque[Q] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, item: Q) -> None:
        with self._cond:
            if self.closed:
                raise BatcherClosed("the batcher is closed")
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, max_rows: int, max_wait_s: float) -> list[Q] | None:
        """The next batch, or None once closed and empty."""
        with self._cond:
            while not self._items:
                if self.closed:
                    return None
                self._cond.wait()
            head = self._items.popleft()
            batch, rows = [head], head.rows
            deadline = head.t_enqueued + max_wait_s
            while rows < max_rows:
                match = next(
                    (r for r in self._items if r.key == head.key and rows + r.rows <= max_rows), None
                )
                if match is not None:
                    self._items.remove(match)
                    batch.append(match)
                    rows += match.rows
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self.closed:
                    break
                self._cond.wait(remaining)
            return batch


def batch_sizes(max_batch: int, pad_to_max: bool) -> list[int]:
    """The batch sizes a backend gets to see. pad_to_max: one input shape only (GPU backends re-plan on
    every new shape: measured on ONNX Runtime's CUDA EP, a shape change costs far more than the padded
    rows); else powers of two."""
    if pad_to_max:
        return [max_batch]
    return sorted({min(2**i, max_batch) for i in range(max_batch.bit_length() + 1)})


def padded_rows(sizes: list[int], rows: int) -> int:
    """The batch size actually run: the next of a few fixed sizes, because every new input shape
    costs the backend a re-plan (ONNX Runtime memory planning, cuDNN algorithm choice, a TensorRT
    profile switch); zero rows fill the gap and their outputs are dropped."""
    return next((n for n in sizes if n >= rows), rows)


@dataclass
class _Request:
    inputs: Mapping[str, Any]
    rows: int
    key: Hashable
    t_enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, Any] | None = None
    error: BaseException | None = None
    waited_s: float = 0.0


class BatchingEngine:
    """An Engine that merges concurrent requests from several cameras into one call of `inner`."""

    def __init__(
        self,
        inner: Engine,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        pad_to_max: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.inner = inner
        self.name, self.inputs, self.outputs = inner.name, inner.inputs, inner.outputs
        self.metadata, self.info = inner.metadata, inner.info
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch  # (batch rows, seconds the oldest request waited) for metrics
        self._queue: BatchQueue[_Request] = BatchQueue()
        self.batches = 0
        self._device_concat: Any = None
        self.sizes = batch_sizes(self.max_batch, pad_to_max)
        self._thread = threading.Thread(target=self._run, name=f"batch-{inner.name}", daemon=True)
        self._thread.start()

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        arrays = {k: v for k, v in inputs.items()}
        first = next(iter(arrays.values()))
        key = tuple(
            (k, tuple(np.shape(v)[1:]), str(getattr(v, "dtype", ""))) for k, v in sorted(arrays.items())
        )
        req = _Request(arrays, int(np.shape(first)[0]), key)
        try:
            self._queue.put(req)
        except BatcherClosed:
            raise RuntimeError(f"engine {self.name} is closed") from None
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.outputs is not None
        return req.outputs

    def close(self, close_inner: bool = True) -> None:
        """Stop the batching thread (and, unless told otherwise, the wrapped engine)."""
        self._queue.close()
        self._thread.join(5)
        if close_inner:
            self.inner.close()

    def _run(self) -> None:
        while True:
            batch = self._queue.take(self.max_batch, self.max_wait_s)
            if batch is None:
                return
            now = time.perf_counter()
            for r in batch:
                r.waited_s = now - r.t_enqueued
            try:
                with self._device_context(batch):
                    self._execute(batch)
            except BaseException as e:  # every caller of the batch gets the error, the worker goes on
                for r in batch:
                    r.error = e
            for r in batch:
                r.done.set()

    @staticmethod
    def _device_context(batch: list[_Request]) -> AbstractContextManager[Any]:
        """Device inputs need the CUDA context current in this worker thread (events, copies)."""
        if all(isinstance(v, np.ndarray) for r in batch for v in r.inputs.values()):
            return nullcontext()
        from edged.gpu.context import gpu_thread

        return gpu_thread()

    def warm_up(self, one: Mapping[str, Any]) -> None:
        """Run every batch size once on copies of a 1-row input, so no shape is first seen live."""
        with self._device_context([_Request(one, 1, ())]):
            for n in self.sizes:
                self.inner.infer({k: self._concat(k, [v] * n, n) for k, v in one.items()})

    def _concat(self, name: str, parts: list[Any], rows: int) -> Any:
        if all(isinstance(p, np.ndarray) for p in parts):
            merged = np.concatenate(parts)
            if merged.shape[0] < rows:
                pad = np.zeros((rows - merged.shape[0], *merged.shape[1:]), dtype=merged.dtype)
                merged = np.concatenate([merged, pad])
            return merged
        if self._device_concat is None:
            from edged.gpu.batch import DeviceConcat  # device tensors: merged into one pooled GPU buffer

            self._device_concat = DeviceConcat()
        return self._device_concat(name, parts, rows)

    def _execute(self, batch: list[_Request]) -> None:
        self.batches += 1
        rows = sum(r.rows for r in batch)
        if self.on_batch is not None:
            self.on_batch(rows, max(r.waited_s for r in batch))
        if len(batch) == 1 and rows in self.sizes:
            batch[0].outputs = self.inner.infer(batch[0].inputs)
            return
        padded = padded_rows(self.sizes, rows)
        merged = {
            name: self._concat(name, [r.inputs[name] for r in batch], padded) for name in batch[0].inputs
        }
        outputs = self.inner.infer(merged)
        start = 0
        for r in batch:
            r.outputs = {k: v[start : start + r.rows] for k, v in outputs.items()}
            start += r.rows
