"""Cross-camera batching of whole frames for a first stage that several cameras share (what
DeepStream's nvstreammux does in front of its inference element).

Cameras hand their frames to one `FrameBatcher` per model instead of running the first stage on their
own threads. Two threads serve all of them:

  batch thread   gathers frames oldest first (up to max_batch with the same model input size, waiting
                 at most max_wait_ms after the oldest), preprocesses them into one tensor (one kernel
                 launch on the GPU), zero-pads to a fixed batch size and runs the engine once;
  decode thread  decodes the batch's outputs and gives each frame back to its camera, which applies
                 its own filter and tracker (`accept_primary`) and goes on with its later stages.

So batch k+1 is on the GPU while batch k is decoded on the CPU, and the per-frame host work is the
decoder plus a hand-off: no per-frame kernel launch, engine call, thread pair or device copy. Where
one thread cannot decode as fast as the GPU detects (many cameras), `decode_workers` spreads each
batch's decoding over worker processes (edged.chain.decodepool).

Fairness: each camera's pipeline keeps at most a couple of frames in flight (it blocks, and its
capture drops to the latest frame, when it has more), so a fast camera is at most that many frames
ahead of a slow one in any batch; a slow or dead camera is never waited for beyond max_wait_ms.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from edged.chain.chain import Stage, StageState, accept_primary, to_host
from edged.chain.decodepool import DecodePool
from edged.infer.base import Engine
from edged.infer.batching import BatchQueue, batch_sizes, padded_rows
from edged.models.base import Decoder
from edged.preprocess import Preprocessor, PreprocessSpec, plan_frame

log = logging.getLogger(__name__)

# (state, None) when the first stage is done for the frame, (state, error) when it failed.
Deliver = Callable[[StageState, BaseException | None], None]


@dataclass
class _Item:
    state: StageState
    stage: Stage  # the camera's own first stage: its filter, tracker and name
    deliver: Deliver
    key: Hashable
    rows: int = 1
    t_enqueued: float = field(default_factory=time.perf_counter)


class FrameBatcher:
    """One model's first stage for every camera that starts its chain with it."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        decoder: Decoder,
        spec: PreprocessSpec,
        preprocessor: Preprocessor,
        *,
        max_batch: int,
        max_wait_ms: float,
        pad_to_max: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
        thread_context: Callable[[], AbstractContextManager[Any]] | None = None,
        decode_workers: int = 0,
    ):
        self.name = name
        self.engine, self.decoder, self.spec, self.preprocessor = engine, decoder, spec, preprocessor
        self.input_name = engine.inputs[0].name
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_ms / 1000.0
        self.sizes = batch_sizes(self.max_batch, pad_to_max)
        self.on_batch = on_batch  # (frames in the batch, seconds the oldest waited) for metrics
        self.thread_context = thread_context  # entered by the batch thread (the GPU lane)
        self.batches = 0
        self.frames = 0
        self._queue: BatchQueue[_Item] = BatchQueue()
        self._decode: queue.Queue[tuple[list[_Item], Any, Any, BaseException | None] | None] = queue.Queue(1)
        # decode_workers > 0: batches decoded in that many processes (see edged.chain.decodepool).
        self.decode_workers = decode_workers
        self._pool = DecodePool(decoder, decode_workers) if decode_workers > 0 else None
        self._decode_fn = self._pool.decode if self._pool is not None else decoder.decode
        self._threads = [
            threading.Thread(target=self._batch_loop, name=f"mux-{name}", daemon=True),
            threading.Thread(target=self._decode_loop, name=f"mux-{name}-decode", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def submit(self, stage: Stage, state: StageState, deliver: Deliver) -> None:
        """Queue a frame; `deliver` is called from the decode thread once its detections are in."""
        h, w, _ = state.frame.shape
        plan = plan_frame(self.spec, w, h)  # cached per size
        key = (plan.out_w, plan.out_h)  # frames batch together when the model input has one size
        self._queue.put(_Item(state, stage, deliver, key))

    def close(self, timeout: float = 5.0) -> None:
        """Finish what is queued, then stop both threads."""
        self._queue.close()
        for t in self._threads:
            t.join(timeout)
        if self._pool is not None:
            self._pool.close()

    def _batch_loop(self) -> None:
        with self.thread_context() if self.thread_context is not None else nullcontext():
            while True:
                batch = self._queue.take(self.max_batch, self.max_wait_s)
                if batch is None:
                    self._decode.put(None)
                    return
                if self.on_batch is not None:
                    self.on_batch(len(batch), time.perf_counter() - batch[0].t_enqueued)
                try:
                    frames = [it.state.frame for it in batch]
                    tensor, plans = self.preprocessor.frames(
                        frames, self.spec, padded_rows(self.sizes, len(batch))
                    )
                    outputs = self.engine.infer({self.input_name: tensor})
                    rows = {k: to_host(v)[: len(batch)] for k, v in outputs.items()}
                    self._decode.put((batch, rows, plans, None))
                except Exception as e:  # every frame of the batch gets the error; the batcher goes on
                    self._decode.put((batch, None, None, e))
                self.batches += 1
                self.frames += len(batch)

    def _decode_loop(self) -> None:
        while True:
            job = self._decode.get()
            if job is None:
                return
            batch, outputs, plans, error = job
            found: list[Any] = []
            if error is None:
                try:
                    found = self._decode_fn(outputs, plans)
                except Exception as e:
                    error = e
            now = time.perf_counter()
            for i, it in enumerate(batch):
                failure = error
                if failure is None:
                    try:
                        accept_primary(it.stage, it.state, found[i])
                        it.state.latency_ms[it.stage.name] = (now - it.t_enqueued) * 1000.0
                    except Exception as e:
                        failure = e
                try:
                    it.deliver(it.state, failure)
                except Exception:  # a camera's hand-off must not stop the others
                    log.exception(
                        "batcher %s: handing frame %d back to camera %s failed",
                        self.name,
                        it.state.frame.seq,
                        it.state.frame.camera,
                    )
