"""`Chain`: one camera's stages run over the model servers, in capture order, with no thread of its own.

A frame goes to the first stage's server; when that server's decode thread hands the detections back,
the chain calls the stage's `accept` (filter, tracker), asks the next stage for its `crops` and sends them
to that stage's server, whose hand-back it `nest`s under their parents, and so on (the stages' methods:
edged.pipeline.stage); after the last stage the result goes to the sink. Every step runs on a model
server's decode thread, so threads scale with models, not cameras. docs/frame-path.md follows a frame
thread by thread from capture to the broker's PUBACK.

At most `depth` frames of a camera are in flight, sink included (`offer` refuses more: the capture side
then keeps only the newest frame), so frame N+1's detection overlaps frame N's recognition and no
backlog builds. Each frame taken gets the lowest of `depth` buffer slots no frame in flight holds
(`Frame.slot`: where the GPU preprocessor keeps the frame's device copy), whatever frames the capture
side dropped in between; a slot is free again once its frame's sink has returned. So a camera whose
chain keeps up uses one slot (one frame buffer), and only a busy one grows to `depth`. Results leave in
capture order: a frame that needs no later stage waits for an older one that does. The sink runs on the
camera's delivery lane (edged.pipeline.delivery), not on the server thread that finished the frame.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from edged.pipeline.delivery import SerialLane
from edged.pipeline.motion import Box
from edged.pipeline.stage import FrameState, Stage
from edged.types import Detection, Frame, FrameResult

log = logging.getLogger(__name__)


class _InFlight:
    """A frame in the chain: its results so far (`state`), the stage it is at and, for a later stage,
    the parents whose crops that stage runs on. `deliver` is the model servers' hand-back, `leave` the
    delivery lane's call; both go straight to the chain's methods."""

    __slots__ = ("chain", "done", "error", "index", "on_turn", "parents", "skipped", "started", "state")

    def __init__(
        self,
        chain: Chain,
        frame: Frame,
        on_turn: Callable[[], None] | None = None,
        skipped: bool = False,
        region: Box | None = None,
    ) -> None:
        self.chain = chain
        self.state = FrameState(frame, region)
        self.index = 0  # the stage under way
        self.started = 0.0  # when it was submitted (perf_counter), for its latency
        self.parents: list[Detection] = []  # a later stage's parents, in the order of its crops
        self.done = False
        self.error: BaseException | None = None
        self.on_turn = on_turn  # run when every older frame has left (a skipped frame's track hold)
        self.skipped = skipped  # the chain did not run on it: not counted in `completed`

    def deliver(self, rows: list[list[Detection]] | None, error: BaseException | None) -> None:
        self.chain._stage_done(self, rows, error)

    def leave(self) -> None:
        self.chain._finish(self, sinking=True)


class Chain:
    """One camera's (or one /predict request's) frames through its stages; see the module docstring."""

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        sink: Callable[[FrameResult], None],
        *,
        on_error: Callable[[Frame, BaseException], None] | None = None,
        on_free: Callable[[], None] | None = None,
        lane: SerialLane | None = None,
        depth: int = 2,
    ) -> None:
        if not stages:
            raise ValueError("a chain needs at least one stage")
        self.name = name
        self.stages = list(stages)
        self.sink = sink
        self.on_error = on_error
        self.on_free = on_free  # called when a slot frees up (the dispatcher offers the next frame)
        self.lane = lane  # runs the sink off the model servers' threads (None: in the calling thread)
        self.depth = max(1, depth)
        self.completed = 0
        self.last_progress = time.monotonic()
        self._pending: deque[_InFlight] = deque()
        self._sinking = 0  # finished frames handed to the lane whose sink has not run yet
        self._busy_slots: set[int] = set()
        self._lock = threading.Lock()  # guards _pending/_sinking and keeps results in order
        self._attached = False

    @property
    def in_flight(self) -> int:
        return len(self._pending) + self._sinking

    def attach(self) -> None:
        """Tell the servers this camera sends them frames (they wait for it when batching)."""
        if not self._attached:
            for server in {id(s.server): s.server for s in self.stages}.values():
                server.attach(self.name)
            self._attached = True

    def detach(self) -> None:
        if self._attached:
            for server in {id(s.server): s.server for s in self.stages}.values():
                server.detach(self.name)
            self._attached = False

    def offer(self, frame: Frame, region: Box | None = None) -> bool:
        """Start a frame through the chain; False (nothing done) while `depth` frames are in flight.
        `region` (motion gating): the first stage runs on that rectangle only; results in frame pixels."""
        with self._lock:
            if len(self._pending) + self._sinking >= self.depth:
                return False
            slot = min(set(range(self.depth)) - self._busy_slots)  # skipped frames hold none: one is free
            self._busy_slots.add(slot)
            item = _InFlight(self, dataclasses.replace(frame, slot=slot), region=region)
            self._pending.append(item)
        self._step(item, 0)
        return True

    def skip(self, frame: Frame, on_turn: Callable[[], None] | None = None) -> bool:
        """A frame the chain need not run (motion gating): it leaves in its place in capture order as a
        result without detections; `on_turn` runs first, once every older frame has left."""
        with self._lock:
            if len(self._pending) + self._sinking >= self.depth:
                return False
            item = _InFlight(self, frame, on_turn, skipped=True)
            self._pending.append(item)
        self._complete(item, None)
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every frame in flight has left (for stop/reload). True if it did in time."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.in_flight

    def _step(self, item: _InFlight, index: int) -> None:
        """Submit the frame to stage `index`'s server (a later stage with no parents to crop records
        none and goes on to the next), or finish the frame after the last stage."""
        state = item.state
        try:
            for stage in self.stages[index:]:
                item.index, item.started = index, time.perf_counter()
                if stage.on is None:
                    if state.region is not None:
                        stage.server.submit_region(state.frame, state.region, item.deliver)
                    else:
                        stage.server.submit_frame(state.frame, item.deliver)
                    return
                item.parents, quads = stage.crops(state)
                if item.parents:
                    stage.server.submit_crops(state.frame, quads, item.deliver)
                    return
                stage.nest(state, [], [])
                state.latency_ms[stage.name] = 0.0
                index += 1
        except Exception as e:  # a frame the server cannot take (an empty image, shutdown) fails alone
            self._complete(item, e)
            return
        self._complete(item, None)

    def _stage_done(
        self, item: _InFlight, rows: list[list[Detection]] | None, error: BaseException | None
    ) -> None:
        """A server's hand-back (its decode thread): record the stage's results, go on to the next."""
        if error is not None or rows is None:
            self._complete(item, error or RuntimeError("no result"))
            return
        stage, state = self.stages[item.index], item.state
        try:
            if stage.on is None:
                stage.accept(state, rows[0])
            else:
                stage.nest(state, item.parents, rows)
        except Exception as e:
            self._complete(item, e)
            return
        state.latency_ms[stage.name] = (time.perf_counter() - item.started) * 1000.0
        self._step(item, item.index + 1)

    def _complete(self, item: _InFlight, error: BaseException | None) -> None:
        """Mark a frame finished; send every finished frame at the head of the line to the sink."""
        with self._lock:
            item.done, item.error = True, error
            while self._pending and self._pending[0].done:
                head = self._pending.popleft()
                self.last_progress = time.monotonic()
                if head.on_turn is not None:
                    try:
                        head.on_turn()
                    except Exception as e:
                        head.error = head.error or e
                if self.lane is None:
                    self._finish(head)
                    self._release(head)
                    continue
                self._sinking += 1  # submitted under the lock: the lane sees frames in capture order
                self.lane.submit(head.leave)
        if self.lane is None and self.on_free is not None:
            self.on_free()

    def _finish(self, item: _InFlight, sinking: bool = False) -> None:
        try:
            if item.error is not None:
                self._failed(item.state.frame, item.error)
                return
            try:
                self.sink(item.state.result())
            except Exception as e:  # one bad frame must not stop the camera
                self._failed(item.state.frame, e)
            else:
                self.completed += 0 if item.skipped else 1
        finally:
            if sinking:
                with self._lock:
                    self._sinking -= 1
                    self._release(item)
                self.last_progress = time.monotonic()
                if self.on_free is not None:
                    self.on_free()

    def _release(self, item: _InFlight) -> None:
        """The frame has left (its sink returned): its buffer slot may be given again. Under the lock."""
        if not item.skipped and item.state.frame.slot is not None:
            self._busy_slots.discard(item.state.frame.slot)

    def _failed(self, frame: Frame, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(frame, error)
        else:
            log.error("camera %s: frame %d failed: %s", frame.camera, frame.seq, error)


def run_frames(
    name: str, stages: Sequence[Stage], frames: Iterable[Frame], *, depth: int = 2, timeout_s: float = 600.0
) -> tuple[list[FrameResult], list[tuple[Frame, BaseException]]]:
    """Offline use (benchmarks, comparisons): every frame through the chain, in order, none dropped;
    returns the results and the frames that failed."""
    results: list[FrameResult] = []
    failed: list[tuple[Frame, BaseException]] = []
    room = threading.Event()
    chain = Chain(
        name,
        stages,
        results.append,
        on_error=lambda f, e: failed.append((f, e)),
        on_free=room.set,
        depth=depth,
    )
    chain.attach()
    deadline = time.monotonic() + timeout_s
    try:
        for frame in frames:
            while not chain.offer(frame):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: the chain made no room within {timeout_s:.0f} s")
                room.wait(0.05)
                room.clear()
        if not chain.drain(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"{name}: frames still in flight after {timeout_s:.0f} s")
    finally:
        chain.detach()
    return results, failed
