"""Background build adoption, for a model slot (edged.serving.slot.slot): a better engine of the serving
model (edged.infer.builder.BackgroundBuild: ONNX Runtime's optimized copy, a TensorRT plan) switched in
between two batches once it is built and warm.

Threads: one `adopt:<model>` thread per build waits for it (a build may take minutes; a stop does not
wait for it), warms its engine on every declared shape beside the serving one (on the slot's lane, not
the server's: edged.serving.warming), then holds it until the batch thread `take`s it. No request is
lost, repeated or reordered, none waits for the warm-up. A lower-precision build computes differently:
it goes to the shadow check instead (`propose`, the slot's candidate path) and serves only if it agrees.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.gpu.context import GpuLane
from edged.infer.base import Engine
from edged.serving.names import thread_name
from edged.serving.warming import Warmer, WarmUpCancelled

log = logging.getLogger(__name__)

Guard = Callable[[Callable[[], None]], None]  # runs a thread's loop; a crash shows in health


class BuildAdopter:
    """The build of the serving model's better engine, and that engine once it is ready to take over."""

    def __init__(
        self,
        name: str,
        warmer: Warmer,
        guard: Guard,
        propose: Callable[[Engine, Path], None] | None = None,
        failed: Callable[[str], None] | None = None,
    ) -> None:
        """`propose(engine, path)`: a lower-precision build's engine to the shadow check (None: switched
        in directly); `failed(reason)`: such a build failed."""
        self.name = name
        self._warmer, self._guard = warmer, guard
        self._propose, self._failed = propose, failed
        self.build: Any = None  # the serving model's build, until its engine was taken
        self._ready: Engine | None = None
        self._lock = threading.Lock()  # a switch may replace `build` while its engine arrives
        self.threads: list[threading.Thread] = []  # `adopt:<model>`, joined by the server's close()

    def adopt(self, build: Any, lane: GpuLane | None = None, shadow: bool = False) -> None:
        """Wait for `build` on a thread of its own, warm its engine on `lane`, hold it for `take`."""
        self.build = build
        t = threading.Thread(
            target=self._guard,
            args=(lambda: self._wait(build, lane, shadow),),
            name=thread_name("adopt", self.name),
            daemon=True,
        )
        self.threads = [t for t in self.threads if t.is_alive()] + [t]
        t.start()

    def _wait(self, build: Any, lane: GpuLane | None, shadow: bool) -> None:
        while not build.wait(0.2):
            if self._warmer.stopped:
                return  # close() cancels the build, which closes an engine it loaded meanwhile
        engine = build.poll()
        if engine is None or self._warmer.stopped:
            if engine is not None:  # shutting down
                engine.close()
            elif shadow and self._failed is not None:  # failed: its status says why
                self._failed(build.status().get("reason", ""))
            return
        if shadow and self._propose is not None:
            with self._lock:
                current = self.build is build
                if current:
                    self.build = None  # the candidate side owns it now
            if current:
                self._propose(engine, Path(build.status()["path"]))
            else:
                engine.close()
            return
        try:
            steps = self._warmer.steps_for(engine)
            self._warmer.run(engine, lane=lane, cancel=lambda: self._warmer.stopped, steps=steps)
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
        with self._lock:
            current = self.build is build and not self._warmer.stopped
            if current:
                self._ready = engine
        if not current:  # a switch changed the model meanwhile, or the server closed
            engine.close()

    def take(self) -> Engine | None:
        """(batch thread) The warmed engine of the serving model's build, once; None before."""
        with self._lock:
            engine, self._ready = self._ready, None
        return engine

    def replace(self, build: Any, lane: GpuLane | None = None) -> None:
        """(batch thread) The slot switched to another model: the old model's build stops and its
        engine, if one waits, is dropped; the new model's `build` (or None) is adopted when ready."""
        with self._lock:
            old, self.build = self.build, build
            stale, self._ready = self._ready, None
        if stale is not None:
            stale.close()
        if old is not None and old is not build:
            drop_build(old)
        if build is not None:
            self.adopt(build, lane)

    def cancel(self) -> None:
        """Shutdown: the build stops (an engine it loaded meanwhile is closed by it)."""
        if self.build is not None:
            self.build.cancel()

    def close(self) -> None:
        """After the threads stopped: the engine waiting to be taken, if any."""
        left = self.take()
        if left is not None:
            left.close()


def drop_build(build: Any) -> None:
    """Stop a build whose model no longer serves; close its engine if it was already loaded."""
    build.cancel()
    engine = build.poll()
    if engine is not None:
        engine.close()
