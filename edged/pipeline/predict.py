"""`Predictor`: pictures through a chain over the model servers, on request (POST /predict).

Not a second pipeline: each request is a `Chain` (edged.pipeline.chain) over stages that
`build_stages` made from a chain, so its frames go to the very model servers the cameras use (batched
with their frames and crops, in order) and come back through the same filters and nesting. What a
request does not have: a tracker (one picture has no track) and a motion gate.

A request's frames are keyed by one of `max_in_flight` request slots (`@predict-<n>`), never by a
camera, so they can never touch a running camera's frame buffers (edged.gpu.preprocess keeps them per
camera and slot), and each frame gets a sequence number of its own. Bounded: at most `max_in_flight`
requests at once (`run` raises `PredictBusy` at once beyond that); a caller waits up to `timeout_s`
(`PredictTimeout`). A request's slot goes back to the pool only when its last frame has left the chain,
so the frames of a request that timed out never share buffers with the next one's; while a wedged
model keeps them, new requests get `PredictBusy` instead of piling up.

Threads: `run` is called from the health server's request threads; results arrive on the model
servers' decode threads (the chain's sink), which only store them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from edged.pipeline.chain import Chain
from edged.pipeline.stage import Stage
from edged.types import Frame, FrameResult

KEY_PREFIX = "@predict-"  # the chain's name: what the servers and preprocessors key a request's frames by


class PredictBusy(Exception):
    """Every request slot is taken (HTTP 429)."""


class PredictTimeout(Exception):
    """The chain did not answer in time (HTTP 504)."""


class _Request:
    """One request's frames: results in submission order, one per frame (or its error)."""

    def __init__(self, n: int, on_done: Callable[[], None]) -> None:
        self.results: list[FrameResult | BaseException | None] = [None] * n
        self.left = n
        self.done = threading.Event()
        self._on_done = on_done
        self._lock = threading.Lock()

    def finished(self, index: int, outcome: FrameResult | BaseException) -> None:
        with self._lock:
            self.results[index] = outcome
            self.left -= 1
            last = self.left == 0
        if last:
            self._on_done()
            self.done.set()


class Predictor:
    def __init__(self, max_in_flight: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._free = list(range(max_in_flight))  # request slots not in use
        self._lock = threading.Lock()
        self._seq = itertools.count()  # every frame of every request its own number
        self.requests = 0
        self.busy = 0
        self.timeouts = 0

    @property
    def in_flight(self) -> int:
        """Requests whose frames are in the chain (a timed-out one until its frames have left)."""
        with self._lock:
            return self.max_in_flight - len(self._free)

    def status(self) -> dict[str, int]:
        with self._lock:
            return {
                "in_flight": self.max_in_flight - len(self._free),
                "max_in_flight": self.max_in_flight,
                "requests": self.requests,
                "refused_busy": self.busy,
                "timed_out": self.timeouts,
            }

    def run(
        self, stages: Sequence[Stage], images: Sequence[np.ndarray], timeout_s: float | None = None
    ) -> list[FrameResult | BaseException]:
        """Every image (HWC uint8 BGR) through the chain, batched with whatever the servers run;
        results in the order of `images`, a frame that failed as its exception."""
        if not images:
            return []
        with self._lock:
            if not self._free:
                self.busy += 1
                raise PredictBusy(f"{self.max_in_flight} request(s) already running; retry later")
            key = self._free.pop(0)
            self.requests += 1
        now_ns, now = time.monotonic_ns(), time.time()
        frames = [Frame(f"{KEY_PREFIX}{key}", next(self._seq), img, "bgr8", now_ns, now) for img in images]
        index = {f.seq: i for i, f in enumerate(frames)}
        chain: Chain | None = None

        def release() -> None:  # the last frame has left: the slot may serve another request
            if chain is not None:
                chain.detach()
            with self._lock:
                self._free.append(key)

        req = _Request(len(frames), release)
        chain = Chain(
            f"{KEY_PREFIX}{key}",
            stages,
            lambda r: req.finished(index[r.frame.seq], r),
            on_error=lambda f, e: req.finished(index[f.seq], e),
            depth=len(frames),  # all of a request's pictures in flight at once: batched together
        )
        chain.attach()
        for frame in frames:
            chain.offer(frame)  # never refused: depth is the number of frames
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        if not req.done.wait(wait_s):
            with self._lock:
                self.timeouts += 1
            raise PredictTimeout(f"no answer from the chain within {wait_s:g} s")
        return [r for r in req.results if r is not None]
