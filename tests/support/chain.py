"""Helpers for chain tests on the real models: a delegating spy engine, model servers over the shared
real engines, stages, and a synchronous driver for a camera's flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from edged.decoders.registry import build_decoder, get_decoder
from edged.infer.base import Engine
from edged.pipeline.chain import Stage
from edged.pipeline.delivery import Delivery
from edged.pipeline.flow import CameraFlow
from edged.preprocess.cpu import CpuPreprocessor
from edged.serving.server import ModelServer
from edged.serving.shapes import declare_shapes
from edged.types import Frame, FrameResult

# Sinks of all test cameras run here, as the daemon's do on its Delivery.
DELIVERY = Delivery()
# Recognizer widths for tests: few shapes, so warming a server takes well under a second.
TEST_WIDTHS = (320, 640, 2048)


class SpyEngine:
    """Wraps a real engine, records the batch rows of each call and can fail calls on purpose.

    It delegates every call to the real engine: a spy for counting, not a fake of the model. It does
    not close the engine it wraps (tests share one real engine per model for the whole session).
    """

    def __init__(self, engine: Engine, fail_on_call: int | None = None):
        self._engine = engine
        self.calls: list[int] = []
        self.shapes: list[tuple[int, ...]] = []
        self.fail_on_call = fail_on_call
        self.fail_when: Callable[[np.ndarray], bool] | None = None
        self.name, self.inputs, self.outputs = engine.name, engine.inputs, engine.outputs
        self.metadata, self.info = engine.metadata, engine.info
        # A GPU engine's device path (outputs left on the device for reductions) is spied on too.
        inner = getattr(engine, "infer_device", None)
        self.infer_device: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
        if inner is not None:
            self.infer_device = lambda inputs: inner(self._check(inputs))

    @property
    def rows(self) -> int:
        return sum(self.calls)

    def reset(self) -> None:
        self.calls.clear()
        self.shapes.clear()

    def _check(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        tensor = next(iter(inputs.values()))
        self.calls.append(int(tensor.shape[0]))
        self.shapes.append(tuple(tensor.shape))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine failure injected by the test")
        if self.fail_when is not None and self.fail_when(tensor):
            raise RuntimeError("engine failure injected by the test")
        return inputs

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._engine.infer(self._check(inputs))

    def close(self) -> None:
        pass


def serve(
    kind: str, engine: Engine, *, max_batch: int = 4, max_wait_ms: float = 2.0, **kw: Any
) -> ModelServer:
    """A started model server (CPU preprocessing, the kind's default decoder) over a spy of `engine`."""
    spec = kw.pop("spec", None) or get_decoder(kind).default_preprocess
    shapes = declare_shapes(
        spec,
        max_batch=max_batch,
        pad_to_max=kw.pop("pad_to_max", False),
        source_sizes=kw.pop("source_sizes", ((320, 240), (640, 480))),
        widths=kw.pop("widths", TEST_WIDTHS),
    )
    spy = engine if isinstance(engine, SpyEngine) else SpyEngine(engine)
    decoder = build_decoder(kind, {}, metadata=engine.metadata)
    pre = kw.pop("preprocessor", None) or CpuPreprocessor()
    server = ModelServer(kind, spy, decoder, spec, pre, shapes, max_wait_ms=max_wait_ms, **kw)
    server.start()
    spy.reset()  # warm-up calls are not the test's
    return server


def spy_of(server: ModelServer) -> SpyEngine:
    assert isinstance(server.engine, SpyEngine)
    return server.engine


def make_stage(name: str, server: ModelServer, **kw: Any) -> Stage:
    return Stage(name, server, **kw)


class Camera:
    """A camera's flow fed synchronously by a test: `run(frames)` offers each frame as soon as the flow
    has room and returns the results (and failures) once everything has left the chain."""

    def __init__(self, name: str, stages: Sequence[Stage], depth: int = 2) -> None:
        self.results: list[FrameResult] = []
        self.failed: list[tuple[int, BaseException]] = []
        self._room = threading.Event()
        self.flow = CameraFlow(
            name,
            stages,
            self.results.append,
            on_error=lambda f, e: self.failed.append((f.seq, e)),
            on_free=self._room.set,
            lane=DELIVERY.lane(name),
            depth=depth,
        )
        self.flow.attach()

    def feed(self, images: Sequence[Any], first_seq: int = 0) -> None:
        for i, img in enumerate(images):
            frame = Frame(self.flow.name, first_seq + i, img)
            deadline = time.monotonic() + 120
            while not self.flow.offer(frame):
                assert time.monotonic() < deadline, "the flow never made room"
                self._room.wait(0.05)
                self._room.clear()

    def run(self, images: Sequence[Any], first_seq: int = 0) -> list[FrameResult]:
        start = len(self.results)
        self.feed(images, first_seq)
        assert self.flow.drain(120), f"camera {self.flow.name} did not drain"
        return self.results[start:]

    def close(self) -> None:
        self.flow.detach()


def run_cameras(cams: Mapping[str, Camera], image_for: Callable[[str, int], Any], frames: int) -> None:
    """Feed every camera `frames` frames from its own thread (cameras submit at the same time), then
    wait until all have drained."""

    def feed(cam: str) -> None:
        cams[cam].feed([image_for(cam, seq) for seq in range(frames)])

    threads = [threading.Thread(target=feed, args=(c,)) for c in cams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for name, c in cams.items():
        assert c.flow.drain(120), f"camera {name} did not drain"


def reads_by_frame(results: list[FrameResult], stage: str = "rec") -> list[tuple[int, list[str]]]:
    """(frame seq, labels the `stage` gave under the frame's detections) for each result, in order."""
    return [
        (r.frame.seq, [k.label for d in r.detections for k in d.children.get(stage, [])]) for r in results
    ]


def frame_text(text: str, seq: int) -> str:
    """What `text_frame(text, seq)` shows: the text and seq + 1, never a 0: PP-OCR reads a Hershey "0" after
    letters as "0" on some machines and as "O" (p = 0.97) on others, with the same packages."""
    if not 0 <= seq < 9:
        raise ValueError("text frames number 0..8 (one digit 1-9)")
    return f"{text}{seq + 1}"


def text_frame(text: str, seq: int) -> np.ndarray:
    img = np.full((240, 320, 3), 255, np.uint8)
    cv2.putText(
        img, frame_text(text, seq), (20, 130), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3, cv2.LINE_AA
    )
    return img
