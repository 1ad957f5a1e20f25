"""`Warmer`: runs a model's declared input shapes through its real preprocessing and an engine, so no
shape is first seen live (a GPU backend's re-plan stalls every camera behind it).

One per model server, made by it. It warms the serving engine (stage 0 at start, then one declared
shape between two batches, on the batch thread: edged.serving.warmup says which, in which order) and
the engines that may take over (a background build, a candidate file: edged.serving.slot), which are
warmed beside the serving one on the slot's own lane (their preprocessing and downloads; the engine
runs on the stream it was given). Warm-ups run one at a time (`lock`): they share that lane's pooled
buffers. `usable` is what batches may use now; the shadow check (edged.serving.slot.shadow_run) feeds
its candidate through the same `tensor`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from edged.decoders.base import Decoder
from edged.gpu.context import GpuLane, gpu_thread
from edged.infer.base import Engine
from edged.preprocess.base import Preprocessor
from edged.preprocess.spec import Plan, PreprocessSpec, _scale_homography
from edged.serving.outputs import run_engine
from edged.serving.shapes import ShapeSet
from edged.serving.warmup import StagedWarmUp, Step, WarmUpCancelled
from edged.types import Frame

log = logging.getLogger(__name__)

Sample = tuple[dict[str, np.ndarray], list[Plan]]  # one row of real outputs with its plan
__all__ = ["Sample", "WarmUpCancelled", "Warmer"]


class Warmer:
    """The warm-up side of one model (see the module docstring). `every_shape`: warm every declared
    shape even on an engine whose new shapes cost nothing (`batching.warm_up: all`)."""

    def __init__(
        self,
        name: str,
        spec: PreprocessSpec,
        preprocessor: Preprocessor,
        shapes: ShapeSet,
        decoder: Decoder,
        input_name: str,
        lane: GpuLane | None = None,
        every_shape: bool = False,
    ) -> None:
        self.name, self.spec, self.preprocessor, self.shapes = name, spec, preprocessor, shapes
        self.decoder, self.input_name = decoder, input_name
        self.lane = lane  # the server's
        self.host_buffers: Any = None  # page-locked download buffers (the server's), on a GPU
        if lane is not None:
            from edged.gpu.transfer import HostBuffers

            self.host_buffers = HostBuffers()
        self.every_shape = every_shape
        self.plan = StagedWarmUp(shapes, True)
        self.usable = shapes
        self.progress: Callable[[str, int, int], None] | None = None
        self.lock = threading.Lock()  # builds and candidates warm on one lane: one at a time
        self._stopped = threading.Event()  # shutdown began: warm-ups beside the serving engine stop

    # -- any thread ------------------------------------------------------------------------------

    def tensor(self, items: Sequence[tuple[Frame, Plan]], rows: int, lane: GpuLane | None) -> Any:
        """The engine input of `items` padded to `rows` (the real preprocessing, on `lane`)."""
        return self.preprocessor.rows(list(items), self.spec, rows, lane)

    def run(
        self,
        engine: Engine,
        lane: GpuLane | None = None,
        cancel: Callable[[], bool] | None = None,
        steps: Sequence[Step] | None = None,
    ) -> Sample | None:
        """Run `steps` ((rows, (w, h)) each; default every declared shape) once through `engine`, its
        preprocessing and downloads on `lane` (None: the server's). Returns one row of real outputs
        with its plan, to warm the decoders with. `cancel()`: asked before each shape; true raises
        WarmUpCancelled (a stop waits for one shape, not all)."""
        lane = lane if lane is not None else self.lane
        sample: Sample | None = None
        shapes = list(steps) if steps is not None else self.all_steps()
        with self.lock, gpu_thread() if lane is not None else nullcontext():
            for i, step in enumerate(shapes, 1):
                if cancel is not None and cancel():
                    raise WarmUpCancelled(f"model {self.name}: warm-up stopped at shape {i}/{len(shapes)}")
                out = self._one(engine, lane, step, sample is None)
                sample = sample or out
        return sample

    def _one(self, engine: Engine, lane: GpuLane | None, step: Step, want_sample: bool) -> Sample | None:
        n, (w, h) = step
        blank = Frame("warm-up", 0, np.zeros((64, 64, 3), np.uint8))
        plan = Plan(w, h, (0, 0, w, h), _scale_homography(w / 64, h / 64, 0, 0))
        tensor = self.tensor([(blank, plan)], n, lane)
        # The live path: reductions compiled and page-locked buffers allocated here, not live.
        out = run_engine(engine, self.decoder, {self.input_name: tensor}, n, self.host_buffers, lane)
        try:
            host = out.wait()
            return ({k: np.array(v[:1]) for k, v in host.items()}, [plan]) if want_sample else None
        finally:
            out.release()

    def all_steps(self) -> list[Step]:
        """Every declared shape, smallest first."""
        return [(n, size) for size in self.shapes.sizes for n in self.shapes.rows]

    def needs_every_shape(self, engine: Engine) -> bool:
        """Whether `engine` must run every declared shape before batches use them."""
        return self.every_shape or bool(getattr(engine.info, "shape_warmup", True))

    def steps_for(self, engine: Engine) -> list[Step]:
        """What an engine that takes over (a build, a candidate) runs before it may: every declared
        shape, or the one call an engine without per-shape costs needs."""
        if self.needs_every_shape(engine):
            return self.all_steps()
        return [(self.shapes.rows[0], self.shapes.sizes[0])]

    def stop(self) -> None:
        """Shutdown began: no more warm-ups between batches or beside the serving engine."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def warming(self) -> bool:
        """Declared shapes are still being warmed between batches (the first stage serves meanwhile)."""
        return not self.plan.finished

    # -- the serving engine ----------------------------------------------------------------------

    def start(
        self,
        engine: Engine,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Sample | None:
        """Warm the first stage of `engine` (one shape every request can be planned into, or the one
        call an engine without per-shape costs needs); `progress(name, warmed, of)` after each shape."""
        self.plan = StagedWarmUp(self.shapes, self.needs_every_shape(engine))
        self.progress = progress
        if progress is not None:
            progress(self.name, 0, self.plan.total)
        first = self.plan.first()
        sample = self.run(engine, cancel=cancel, steps=first)
        for step in first:
            self.plan.record(step)
        self.usable = self.plan.usable
        if progress is not None:
            progress(self.name, self.plan.done, self.plan.total)
        return sample

    def step(self, engine: Engine) -> None:
        """(batch thread, between two batches: the engine's one caller) One more declared shape."""
        step = self.plan.next()
        if step is None or self.stopped:
            return
        try:  # the batch loop holds the CUDA context
            self._one(engine, self.lane, step, False)
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
        if self.progress is not None:
            self.progress(self.name, self.plan.done, self.plan.total)
        if self.plan.finished:
            log.info("model %s: every declared shape is warm (%s)", self.name, self.usable.describe())

    def all_warm(self) -> None:
        """(batch thread) An engine warmed on every shape it needs serves now: batches use them all."""
        self.plan.mark_all_warm()
        self.usable = self.shapes

    def status(self) -> dict[str, Any]:
        """Staged warm-up: "8/27" shapes run, and what batches use meanwhile."""
        plan = self.plan
        return {
            "done": plan.done,
            "total": plan.total,
            "every_shape": plan.every_shape,
            "finished": plan.finished,
            "usable": self.usable.describe() if plan.ready else "",
            "failed": [f"{r} x {w}x{h}: {why}" for (r, (w, h)), why in plan.failed],
        }
