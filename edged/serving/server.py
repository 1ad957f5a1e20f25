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

Callbacks run on the decode thread and must be light (a camera's filter, tracker, the next stage's
submit, the sink). A batch that fails is retried request by request, so a request that breaks the
engine fails alone. A row's shape depends only on its own source, never on its batch companions, so
batching across cameras cannot change what a camera reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edged.decoders.base import Decoder
from edged.gpu.context import GpuLane, gpu_thread
from edged.infer.base import Engine
from edged.preprocess.base import Preprocessor
from edged.preprocess.spec import Plan, PreprocessSpec, _scale_homography
from edged.serving.decoding import Decoding
from edged.serving.outputs import run_engine
from edged.serving.queue import BatchQueue, ServerClosed
from edged.serving.requests import Deliver, Job, Row, Ticket, Updater
from edged.serving.shapes import ShapeSet, crop_plan, frame_plan, region_plan
from edged.serving.warmup import StagedWarmUp, Step, WarmUpCancelled
from edged.types import Frame

log = logging.getLogger(__name__)

State = Literal["loading", "warming", "serving", "failed", "closed"]
__all__ = ["Deliver", "ModelServer", "ServerClosed", "Updater", "WarmUpCancelled"]


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
    ) -> None:
        """`warm_every_shape`: warm every declared shape even on an engine whose new shapes cost nothing
        (ONNX Runtime on the CPU; `batching.warm_up: all`); engines that pay for them always do."""
        self.name = name
        self.engine, self.decoder, self.spec, self.preprocessor = engine, decoder, spec, preprocessor
        self.shapes = shapes
        self.input_name = engine.inputs[0].name
        self.max_wait_s = max_wait_ms / 1000.0
        self.lane = lane  # the server's GPU lane (its stream, its byte counters); None on the CPU
        self.on_batch = on_batch  # (rows, padded rows, seconds the oldest waited) for metrics
        self.state: State = "loading"
        self.failure = ""
        self._stage_failed = False  # logged once: staging is only a speed-up
        # Staged warm-up (edged.serving.warmup): the shapes batches may use now (`usable`: a product of
        # warm row buckets x sizes), grown by the batch thread between batches until `plan` is finished.
        self.warm_every_shape = warm_every_shape
        self.plan = StagedWarmUp(shapes, True)
        self.usable = shapes
        self._progress: Callable[[str, int, int], None] | None = None
        self.batches = 0
        self.rows = 0
        self.padded = 0
        self._clients: dict[str, int] = {}
        self._clients_lock = threading.Lock()
        self._queue: BatchQueue[Row] = BatchQueue()
        self._decoding = Decoding(name, decoder, decode_workers)
        self._host_buffers: Any = None  # page-locked download buffers, when the engine runs on a GPU
        if lane is not None:
            from edged.gpu.transfer import HostBuffers

            self._host_buffers = HostBuffers()
        self._threads: list[threading.Thread] = []
        # A better engine being built (edged.infer.builder), and the one ready to take over.
        self.build: Any = None
        self.swaps = 0
        self._next_engine: Engine | None = None
        self._adopt_lock = threading.Lock()  # a live update may replace `build` while its engine arrives
        self.warm_lock = threading.Lock()  # builds and updates warm on one swap lane: one at a time
        self._closing = threading.Event()  # close() began: warm-ups beside the serving engine stop
        self._adopters: list[threading.Thread] = []  # `swap-<model>` threads, joined by close()
        # Live model update (edged.serving.update), set by edged.serving.loading.load_model; hooked into the
        # batch loop, so the candidate engine has the batch thread as its one caller too.
        self.updater: Updater | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(
        self,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> ModelServer:
        """Warm the first stage (edged.serving.warmup: one shape every request can be planned into, or
        the one call an engine without per-shape costs needs), then serve; the batch thread warms the
        other declared shapes between batches. `progress(name, warmed, of)` after each shape. Raises
        what the engine raises on the first shape, WarmUpCancelled when `cancel()` turns true first."""
        self.state = "warming"
        self.plan = StagedWarmUp(self.shapes, self.needs_every_shape(self.engine))
        self._progress = progress
        if progress is not None:
            progress(self.name, 0, self.plan.total)
        first = self.plan.first()
        sample = self.warm_up(None, cancel=cancel, steps=first)
        for step in first:
            self.plan.record(step)
        self.usable = self.plan.usable
        if progress is not None:
            progress(self.name, self.plan.done, self.plan.total)
        self._decoding.warm(sample)
        self._threads = [
            threading.Thread(
                target=self._guard, args=(self._batch_loop,), name=f"model-{self.name}", daemon=True
            ),
            threading.Thread(
                target=self._guard, args=(self._decoding.loop,), name=f"model-{self.name}-decode", daemon=True
            ),
        ]
        for t in self._threads:
            t.start()
        self.state = "serving"
        return self

    def warm_up(
        self,
        progress: Callable[[str, int, int], None] | None = None,
        engine: Engine | None = None,
        lane: GpuLane | None = None,
        cancel: Callable[[], bool] | None = None,
        steps: Sequence[Step] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[Plan]] | None:
        """Run input shapes once through the real preprocessing and engine, so no shape is first seen
        live (a GPU backend's re-plan stalls every camera behind it): `steps` ((rows, (w, h)) each),
        default every declared shape. Returns one row of real outputs with its plan, to warm the
        decoders with. `engine`: another than the serving one; `lane`: the lane its preprocessing and
        downloads run on (None: the server's). `cancel()`: asked before each shape; true raises
        WarmUpCancelled (a stop waits for one shape, not all)."""
        engine = engine or self.engine
        lane = lane if lane is not None else self.lane
        sample: tuple[dict[str, np.ndarray], list[Plan]] | None = None
        shapes = list(steps) if steps is not None else self.all_steps()
        with self.warm_lock, gpu_thread() if lane is not None else nullcontext():
            for i, step in enumerate(shapes, 1):
                if cancel is not None and cancel():
                    raise WarmUpCancelled(f"model {self.name}: warm-up stopped at shape {i}/{len(shapes)}")
                out = self._warm_one(engine, lane, step, sample is None)
                if sample is None:
                    sample = out
                if progress is not None:
                    progress(self.name, i, len(shapes))
        return sample

    def _warm_one(
        self, engine: Engine, lane: GpuLane | None, step: Step, want_sample: bool
    ) -> tuple[dict[str, np.ndarray], list[Plan]] | None:
        n, (w, h) = step
        blank = Frame("warm-up", 0, np.zeros((64, 64, 3), np.uint8))
        plan = Plan(w, h, (0, 0, w, h), _scale_homography(w / 64, h / 64, 0, 0))
        tensor = self.preprocessor.rows([(blank, plan)], self.spec, n, lane)
        # The live path: reductions compiled and page-locked buffers allocated here, not live.
        out = run_engine(engine, self.decoder, {self.input_name: tensor}, n, self._host_buffers, lane)
        try:
            host = out.wait()
            return ({k: np.array(v[:1]) for k, v in host.items()}, [plan]) if want_sample else None
        finally:
            out.release()

    def all_steps(self) -> list[Step]:
        """Every declared shape, smallest first."""
        return [(n, size) for size in self.shapes.sizes for n in self.shapes.rows]

    def needs_every_shape(self, engine: Engine) -> bool:
        """Whether `engine` must run every declared shape before batches use them (see __init__)."""
        return self.warm_every_shape or bool(getattr(engine.info, "shape_warmup", True))

    def warm_steps(self, engine: Engine) -> list[Step]:
        """What an engine that takes over (a build, an update's candidate) runs before it may: every
        declared shape, or the one call an engine without per-shape costs needs."""
        if self.needs_every_shape(engine):
            return self.all_steps()
        return [(self.shapes.rows[0], self.shapes.sizes[0])]

    @property
    def warming(self) -> bool:
        """Declared shapes are still being warmed between batches (the first stage serves meanwhile)."""
        return not self.plan.finished

    def _warm_step(self) -> None:
        """One more declared shape, on the batch thread between two batches (the engine's one caller)."""
        step = self.plan.next()
        if step is None or self._closing.is_set():
            return
        try:  # the batch loop holds the CUDA context
            self._warm_one(self.engine, self.lane, step, False)
        except Exception as e:  # the shape stays unused; the others serve
            self.plan.record(step, f"{type(e).__name__}: {e}")
            log.error(
                "model %s: the engine failed on the declared shape %d x %dx%d while warming up; batches "
                "do not use it: %s",
                self.name,
                step[0],
                *step[1],
                e,
            )
        else:
            self.plan.record(step)
        self.usable = self.plan.usable
        if self._progress is not None:
            self._progress(self.name, self.plan.done, self.plan.total)
        if self.plan.finished:
            log.info("model %s: every declared shape is warm (%s)", self.name, self.usable.describe())

    def adopt_when_built(self, build: Any, lane: GpuLane | None = None, shadow: bool = False) -> None:
        """Serve on until `build` (an edged.infer.builder.BackgroundBuild) has an engine, warm it on every
        declared shape beside the serving one (on `lane`, not the server's), then swap it in between two
        batches: no request is lost, repeated or reordered, none waits for the warm-up. `shadow`: the
        engine computes differently (lower precision): it goes through the live update's shadow check
        instead (edged.serving.update.LiveUpdate.propose_engine) and serves only if it agrees."""
        self.build = build
        adopter = threading.Thread(
            target=self._guard,
            args=(lambda: self._adopt(build, lane, shadow),),
            name=f"swap-{self.name}",
            daemon=True,
        )
        self._adopters = [t for t in self._adopters if t.is_alive()] + [adopter]
        adopter.start()

    def _adopt(self, build: Any, lane: GpuLane | None, shadow: bool = False) -> None:
        while not build.wait(0.2):  # a build may take minutes; close() must not wait for it
            if self._closing.is_set():
                return  # close() cancels the build, which closes an engine it loaded meanwhile
        engine = build.poll()
        if engine is None or self.state != "serving" or self._closing.is_set():
            if engine is not None:  # failed (its status says why) or shutting down
                engine.close()
            if engine is None and shadow and self.updater is not None and self.updater.precision:
                self.updater.precision.record("failed", build.status().get("reason", ""))
            return
        if shadow and self.updater is not None:
            with self._adopt_lock:
                current = self.build is build
                if current:
                    self.build = None  # the update side owns it now
            if current:
                self.updater.propose_engine(engine, Path(build.status()["path"]))
            else:
                engine.close()
            return
        try:
            self.warm_up(engine=engine, lane=lane, cancel=self._closing.is_set, steps=self.warm_steps(engine))
        except WarmUpCancelled:
            engine.close()
            return
        except Exception as e:
            log.error(
                "model %s: the built engine failed while warming up, keeping the current one: %s",
                self.name,
                e,
            )
            engine.close()
            return
        with self._adopt_lock:
            current = self.build is build and self.state == "serving" and not self._closing.is_set()
            if current:
                self._next_engine = engine
        if not current:  # a live update changed the model meanwhile, or the server closed
            engine.close()

    def replace_build(self, build: Any, lane: GpuLane | None = None) -> None:
        """A live update changed the model (batch thread): the old model's build stops and its engine,
        if one waits, is dropped; the new model's `build` (or None) is adopted when it is ready."""
        with self._adopt_lock:
            old, self.build = self.build, build
            stale, self._next_engine = self._next_engine, None
        if stale is not None:
            stale.close()
        if old is not None and old is not build:
            old.cancel()
            left = old.poll()
            if left is not None:
                left.close()
        if build is not None:
            self.adopt_when_built(build, lane)

    def request_update(self, request: Any) -> None:
        """Ask for a live update or rollback (an edged.serving.update.UpdateRequest; any thread)."""
        if self.updater is None:
            raise RuntimeError(f"model {self.name}: live update is not set up")
        self.updater.request(request)

    def _swap(self) -> None:
        """On the batch thread, between batches: the warmed engine takes over, the old one closes."""
        new, self._next_engine = self._next_engine, None
        assert new is not None
        old, self.engine = self.engine, new
        self.all_warm()
        self.swaps += 1
        log.info(
            "model %s: now serving on %s/%s%s (swapped between batches)",
            self.name,
            new.info.backend,
            new.info.device,
            f", {new.info.detail}" if new.info.detail else "",
        )
        old.close()

    def stop_warming(self) -> None:
        """Shutdown began: no more warm-ups (between batches, or of a built engine beside the serving
        one), so the cameras' last frames are not held behind them; serving goes on until close()."""
        self._closing.set()

    def all_warm(self) -> None:
        """(batch thread) An engine warmed on every shape it needs serves now: batches use them all."""
        self.plan.mark_all_warm()
        self.usable = self.shapes

    def close(self, timeout: float = 10.0) -> None:
        """Serve what is queued, then stop both threads and every engine: the serving one, a built one
        being warmed or waiting to be swapped in (its warm-up stops at the next shape), the build's.
        When it returns, no thread of this server runs an engine (the interpreter may exit)."""
        self._closing.set()
        if self.build is not None:
            self.build.cancel()
        self._queue.close()
        deadline = time.monotonic() + timeout
        threads = [*self._adopters, *self._threads]
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
        if self.updater is not None:
            self.updater.close()
        self.engine.close()
        with self._adopt_lock:
            left, self._next_engine = self._next_engine, None
        if left is not None:
            left.close()

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
            "warmed": self.plan.done,
            # Staged warm-up: "8/27" shapes run, and what batches use meanwhile.
            "warm": {
                "done": self.plan.done,
                "total": self.plan.total,
                "every_shape": self.plan.every_shape,
                "finished": self.plan.finished,
                "usable": self.usable.describe() if self.plan.ready else "",
                "failed": [f"{r} x {w}x{h}: {why}" for (r, (w, h)), why in self.plan.failed],
            },
            "queued_rows": len(self._queue),
            "batches": self.batches,
            "rows": self.rows,
            "padded_rows": self.padded,
            "decode_workers": self._decoding.workers,
            "engine": f"{self.engine.info.backend}/{self.engine.info.device}",
            "swaps": self.swaps,
            **({"build": self.build.status()} if self.build is not None else {}),
            **({"update": self.updater.status()} if self.updater is not None else {}),
            **(
                {"precision": self.updater.precision.as_dict()}
                if self.updater is not None and self.updater.precision is not None
                else {}
            ),
        }

    # -- requests --------------------------------------------------------------------------------

    def attach(self, camera: str) -> None:
        """A camera that sends requests here: the batch thread waits for it (up to max_wait)."""
        with self._clients_lock:
            self._clients[camera] = self._clients.get(camera, 0) + 1

    def detach(self, camera: str) -> None:
        with self._clients_lock:
            left = self._clients.get(camera, 0) - 1
            if left > 0:
                self._clients[camera] = left
            else:
                self._clients.pop(camera, None)

    def submit_frame(self, frame: Frame, deliver: Deliver) -> None:
        """The whole frame as one row; `deliver([detections], None)` from the decode thread."""
        h, w, _ = frame.shape
        self._put(frame, [frame_plan(self.usable, self.spec, w, h)], deliver)

    def submit_crops(self, frame: Frame, quads: Sequence[np.ndarray], deliver: Deliver) -> None:
        """One row per crop (4x2 source corners); `deliver(rows, None)` in the order of `quads`."""
        self._put(frame, [crop_plan(self.usable, self.spec, q) for q in quads], deliver)

    def submit_region(self, frame: Frame, box: tuple[int, int, int, int], deliver: Deliver) -> None:
        """A rectangle of the frame (x1, y1, x2, y2; motion gating) as one row at the whole frame's scale,
        in a declared canvas; `deliver([detections], None)` in frame pixels."""
        h, w, _ = frame.shape
        self._put(frame, [region_plan(self.usable, self.spec, w, h, box)], deliver)

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

    def _expect_more(self, batch: list[Row]) -> bool:
        """Wait for more only while some attached camera has nothing in this batch yet."""
        with self._clients_lock:
            clients = len(self._clients)
        return len({r.frame.camera for r in batch}) < clients

    # -- threads ---------------------------------------------------------------------------------

    def _context(self) -> AbstractContextManager[Any]:
        """The CUDA context current in this thread, when the server runs on a GPU."""
        return gpu_thread() if self.lane is not None else nullcontext()

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as e:  # a bug here must show in health, not vanish with the thread
            self.state, self.failure = "failed", f"{type(e).__name__}: {e}"
            log.exception("model %s: server thread died", self.name)

    def _batch_loop(self) -> None:
        with self._context():
            while True:
                warming = self.warming
                batch = self._queue.take(
                    self.usable.max_rows, self.max_wait_s, self._expect_more, block=not warming
                )
                if batch is None:
                    self._decoding.put(None)
                    return
                if not batch:  # nothing waits: warm the next declared shape meanwhile
                    self._warm_step()
                    continue
                keep = self.usable.rows_to_take(len(batch))
                if keep < len(batch):  # the rest lead the next batch instead of padding this one
                    self._queue.put_back(batch[keep:])
                    batch = batch[:keep]
                if self._next_engine is not None:
                    self._swap()
                if self.updater is not None:
                    self.updater.between_batches()
                jobs = self._run(batch)
                if self.updater is not None:  # the shadow check runs the candidate on the same rows
                    self.updater.after_batch(jobs)
                for job in jobs:
                    self._decoding.put(job)
                if warming:  # one declared shape per batch, so warming ends under load too
                    self._warm_step()

    def _run(self, batch: list[Row]) -> list[Job]:
        """One engine call for the batch; on failure, each request alone so a bad one fails alone."""
        n = len(batch)
        padded = self.usable.rows_for(n)
        if self.on_batch is not None:
            self.on_batch(n, padded, time.perf_counter() - batch[0].t_enqueued)
        try:
            tensor = self.preprocessor.rows([(r.frame, r.plan) for r in batch], self.spec, padded, self.lane)
            outputs = run_engine(
                self.engine, self.decoder, {self.input_name: tensor}, n, self._host_buffers, self.lane
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
