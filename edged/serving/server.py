"""`ModelServer`: the one owner of a loaded model. Every camera's requests for that model, whole frames
or crops alike, go through its queue; nothing else calls its engine.

Threads (two per model, whatever the number of cameras):

  batch thread   takes the oldest request and gathers others of the same input size (all cameras),
                 plans every row into the model's declared shapes (edged.serving.shapes), preprocesses
                 the rows in one call (one kernel launch on the GPU), pads to the row bucket, runs the
                 engine once, reduces its outputs on the device where the decoder can, and starts
                 their download (edged.serving.outputs) without waiting for it; on a GPU it holds the
                 CUDA context and passes the server's lane (its own CUDA stream, given to its engine
                 at construction too) to the preprocessing and the download, so all of a batch runs
                 in the order of one stream; engines need no locks: they have exactly one caller;
  decode thread  waits for batch k's download and decodes it while batch k+1 is on the engine (or
                 spreads it over `decode_workers` processes, two batches at once), then hands every
                 request its rows back through its callback, in batch order (edged.serving.decoding).

Which engine and decoder it runs, and every switch of them, is its slot's (edged.serving.slot): the
batch thread calls the slot's one hook between batches. Callbacks run on the decode thread and must be
light (a camera's filter, tracker, the next stage's submit, the sink). A batch that fails is retried request by request, so a request that breaks the
engine fails alone. A row's shape depends only on its own source, never on its batch companions, so
batching across cameras cannot change what a camera reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np

from edged.decoders.base import Decoder
from edged.gpu.context import GpuLane, gpu_thread
from edged.infer.base import Engine
from edged.preprocess.base import Preprocessor
from edged.preprocess.spec import Plan, PreprocessSpec
from edged.serving.decoding import Decoding
from edged.serving.names import thread_name
from edged.serving.outputs import run_engine
from edged.serving.queue import BatchQueue, Clients, ServerClosed
from edged.serving.requests import Deliver, Job, Row, Ticket
from edged.serving.shapes import ShapeSet, crop_plan, frame_plan, region_plan
from edged.serving.slot.requests import FileSwitching
from edged.serving.slot.slot import ModelSlot
from edged.serving.warming import Warmer, WarmUpCancelled
from edged.types import Frame

log = logging.getLogger(__name__)

State = Literal["loading", "warming", "serving", "failed", "closed"]
__all__ = ["Deliver", "ModelServer", "ServerClosed", "WarmUpCancelled"]


class ModelServer:
    def __init__(
        self,
        name: str,
        engine: Engine,
        decoder: Decoder,
        spec: PreprocessSpec,
        preprocessor: Preprocessor,
        shapes: ShapeSet,
        *,
        max_wait_ms: float = 2.0,
        decode_workers: int = 0,
        lane: GpuLane | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
        warm_every_shape: bool = False,
        files: FileSwitching | None = None,
    ) -> None:
        """`warm_every_shape`: warm every declared shape even on an engine whose new shapes cost nothing
        (ONNX Runtime on the CPU; `batching.warm_up: all`); engines that pay for them always do.
        `files`: how the slot switches to other files of the model (edged.serving.slot)."""
        self.name = name
        self.spec, self.preprocessor, self.shapes = spec, preprocessor, shapes
        self.input_name = engine.inputs[0].name
        self.max_wait_s = max_wait_ms / 1000.0
        self.lane = lane  # the server's GPU lane (its stream, its byte counters); None on the CPU
        self.on_batch = on_batch  # (rows, padded rows, seconds the oldest waited) for metrics
        self.state: State = "loading"
        self.failure = ""
        self._stage_failed = False  # logged once: staging is only a speed-up
        self.batches = self.rows = self.padded = 0
        self._clients = Clients()
        self._queue: BatchQueue[Row] = BatchQueue()
        # Staged warm-up of the serving engine, and the warm-ups of engines that may take over.
        self.warmer = Warmer(
            name, spec, preprocessor, shapes, decoder, self.input_name, lane, warm_every_shape
        )
        # The one owner of the engine and decoder this server runs, and of every switch of them.
        self.slot = ModelSlot(
            name,
            engine,
            decoder,
            warmer=self.warmer,
            guard=self._guard,
            files=files,
            in_thread=decode_workers == 0,
        )
        self._decoding = Decoding(name, self.slot.decoder, decode_workers)
        self._threads: list[threading.Thread] = []

    @property
    def engine(self) -> Engine:
        """The engine batches run now (read-only: the slot switches it)."""
        return self.slot.engine

    @property
    def decoder(self) -> Decoder:
        return self.slot.decoder

    # -- lifecycle -------------------------------------------------------------------------------

    def start(
        self,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> ModelServer:
        """Warm the first stage (edged.serving.warming: one shape every request can be planned into, or
        the one call an engine without per-shape costs needs), then serve; the batch thread warms the
        other declared shapes between batches. `progress(name, warmed, of)` after each shape. Raises
        what the engine raises on the first shape, WarmUpCancelled when `cancel()` turns true first."""
        self.state = "warming"
        self._decoding.warm(self.warmer.start(self.engine, progress, cancel))
        self._threads = [
            threading.Thread(
                target=self._guard, args=(self._batch_loop,), name=thread_name("srv", self.name), daemon=True
            ),
            threading.Thread(
                target=self._guard,
                args=(self._decoding.loop,),
                name=thread_name("dec", self.name),
                daemon=True,
            ),
        ]
        for t in self._threads:
            t.start()
        self.state = "serving"
        return self

    def stop_warming(self) -> None:
        """Shutdown began: no more warm-ups (between batches, or of an engine beside the serving one),
        so the cameras' last frames are not held behind them; serving goes on until close()."""
        self.warmer.stop()

    def close(self, timeout: float = 10.0) -> None:
        """Serve what is queued, then stop both threads and every engine (the slot's: the serving one,
        one being warmed or waiting to be switched in, the builds'). When it returns, no thread of this
        server runs an engine (the interpreter may exit)."""
        self.warmer.stop()
        self.slot.builds.cancel()
        self._queue.close()
        deadline = time.monotonic() + timeout
        threads = [*self.slot.builds.threads, *self._threads]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        late = [t.name for t in threads if t.is_alive()]
        if late:
            # An engine call under way (a long warm-up shape): wait for it. Closing its engine under it,
            # or exiting with it running, aborts the process (ONNX Runtime's threads at exit).
            log.warning("model %s: waiting for %s to finish an engine call", self.name, ", ".join(late))
            for t in threads:
                t.join()
        self._decoding.close()
        self.state = "closed"
        self.slot.close()

    def healthy(self) -> tuple[bool, str]:
        """For liveness: both threads run (or the server was closed on purpose)."""
        if self.state == "failed":
            return False, f"model {self.name}: server failed: {self.failure}"
        if self.state == "serving" and not all(t.is_alive() for t in self._threads):
            return False, f"model {self.name}: a server thread exited"
        return True, ""

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "shapes": self.shapes.describe(),
            "warmed": self.warmer.plan.done,
            "warm": self.warmer.status(),
            "queued_rows": len(self._queue),
            "batches": self.batches,
            "rows": self.rows,
            "padded_rows": self.padded,
            "decode_workers": self._decoding.workers,
            **self.slot.status(),  # engine, swaps, build, update, precision
        }

    # -- requests --------------------------------------------------------------------------------

    def attach(self, camera: str) -> None:
        """A camera that sends requests here: the batch thread waits for it (up to max_wait)."""
        self._clients.attach(camera)

    def detach(self, camera: str) -> None:
        self._clients.detach(camera)

    def submit_frame(self, frame: Frame, deliver: Deliver) -> None:
        """The whole frame as one row; `deliver([detections], None)` from the decode thread."""
        h, w, _ = frame.shape
        self._put(frame, [frame_plan(self.warmer.usable, self.spec, w, h)], deliver)

    def submit_crops(self, frame: Frame, quads: Sequence[np.ndarray], deliver: Deliver) -> None:
        """One row per crop (4x2 source corners); `deliver(rows, None)` in the order of `quads`."""
        self._put(frame, [crop_plan(self.warmer.usable, self.spec, q) for q in quads], deliver)

    def submit_region(self, frame: Frame, box: tuple[int, int, int, int], deliver: Deliver) -> None:
        """A rectangle of the frame (x1, y1, x2, y2; motion gating) as one row at the whole frame's scale,
        in a declared canvas; `deliver([detections], None)` in frame pixels."""
        h, w, _ = frame.shape
        self._put(frame, [region_plan(self.warmer.usable, self.spec, w, h, box)], deliver)

    def _put(self, frame: Frame, plans: list[Plan], deliver: Deliver) -> None:
        if self.state != "serving":
            raise ServerClosed(f"model {self.name} is {self.state}")
        self._stage(frame)
        ticket = Ticket(len(plans), deliver, frame.camera)
        now = time.perf_counter()
        rows = [Row(frame, p, ticket, i, (p.out_w, p.out_h), now) for i, p in enumerate(plans)]
        self._queue.put_many(rows)

    def _stage(self, frame: Frame) -> None:
        # The frame's host-side upload work, on the submitting thread (the dispatcher). Only a speed-up: if it
        # fails, the server's thread uploads the frame itself, and a real fault fails that request.
        try:
            self.preprocessor.stage(frame)
        except Exception as e:
            if not self._stage_failed:
                self._stage_failed = True
                log.warning("model %s: staging a frame failed (%s); uploads stay on its thread", self.name, e)

    # -- threads ---------------------------------------------------------------------------------

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as e:  # a bug here must show in health, not vanish with the thread
            self.state, self.failure = "failed", f"{type(e).__name__}: {e}"
            log.exception("model %s: server thread died", self.name)

    def _batch_loop(self) -> None:
        with gpu_thread() if self.lane is not None else nullcontext():  # the CUDA context, on a GPU
            while True:
                warming = self.warmer.warming
                batch = self._queue.take(
                    self.warmer.usable.max_rows, self.max_wait_s, self._clients.expect_more, block=not warming
                )
                if batch is None:
                    self._decoding.put(None)
                    return
                if not batch:  # nothing waits: warm the next declared shape meanwhile
                    self.warmer.step(self.engine)
                    continue
                keep = self.warmer.usable.rows_to_take(len(batch))
                if keep < len(batch):  # the rest lead the next batch instead of padding this one
                    self._queue.put_back(batch[keep:])
                    batch = batch[:keep]
                jobs = self._run(batch)
                # The slot's hook: a shadow check runs the candidate on the same rows; a switch is made
                # for the next batch.
                self.slot.between_batches(jobs)
                for job in jobs:
                    self._decoding.put(job)
                if warming:  # one declared shape per batch, so warming ends under load too
                    self.warmer.step(self.engine)

    def _run(self, batch: list[Row]) -> list[Job]:
        """One engine call for the batch; on failure, each request alone so a bad one fails alone."""
        n = len(batch)
        padded = self.warmer.usable.rows_for(n)
        if self.on_batch is not None:
            self.on_batch(n, padded, time.perf_counter() - batch[0].t_enqueued)
        try:
            tensor = self.preprocessor.rows([(r.frame, r.plan) for r in batch], self.spec, padded, self.lane)
            outputs = run_engine(
                self.slot.engine,
                self.slot.decoder,
                {self.input_name: tensor},
                n,
                self.warmer.host_buffers,  # page-locked, when the engine runs on a GPU
                self.lane,
            )
        except Exception as e:
            tickets = list(dict.fromkeys(id(r.ticket) for r in batch))
            if len(tickets) == 1:
                return [(batch, None, e)]
            jobs: list[Job] = []
            for t in tickets:
                jobs.extend(self._run([r for r in batch if id(r.ticket) == t]))
            return jobs
        self.batches += 1
        self.rows += n
        self.padded += padded - n
        return [(batch, outputs, None)]
