"""Helpers for chain tests on the real models: a delegating spy engine and a stage builder."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from edged.chain.chain import Stage
from edged.chain.pipeline import Pipeline
from edged.infer.base import Engine
from edged.models import build_decoder, get_decoder
from edged.preprocess import CpuPreprocessor
from edged.types import Frame, FrameResult


class SpyEngine:
    """Wraps a real engine, records the batch rows of each call and can fail one call on purpose.

    It delegates every call to the real engine: a spy for counting, not a fake of the model.
    """

    def __init__(self, engine: Engine, fail_on_call: int | None = None):
        self._engine = engine
        self.calls: list[int] = []
        self.fail_on_call = fail_on_call
        self.name, self.inputs, self.outputs = engine.name, engine.inputs, engine.outputs
        self.metadata, self.info = engine.metadata, engine.info

    @property
    def rows(self) -> int:
        return sum(self.calls)

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(int(next(iter(inputs.values())).shape[0]))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine failure injected by the test")
        return self._engine.infer(inputs)

    def close(self) -> None:
        self._engine.close()


def make_stage(kind: str, name: str, engine: Engine, **kw: Any) -> Stage:
    """A chain stage with the kind's default decoder params and preprocessing, on the CPU."""
    return Stage(
        name,
        engine,
        build_decoder(kind, {}, metadata=engine.metadata),
        get_decoder(kind).default_preprocess,
        CpuPreprocessor(),
        **kw,
    )


def run_cameras(pipes: Mapping[str, Pipeline], image_for: Callable[[str, int], Any], frames: int) -> None:
    """Start every camera's pipeline, feed each `frames` frames from its own thread (cameras submit at
    the same time), then drain and stop them all."""
    for p in pipes.values():
        p.start()

    def feed(cam: str) -> None:
        for seq in range(frames):
            pipes[cam].submit(Frame(cam, seq, image_for(cam, seq)), timeout=60)

    threads = [threading.Thread(target=feed, args=(c,)) for c in pipes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for p in pipes.values():
        assert p.stop(120), f"pipeline {p.name} did not drain"


def reads_by_frame(results: list[FrameResult], stage: str = "rec") -> list[tuple[int, list[str]]]:
    """(frame seq, labels the `stage` gave under the frame's detections) for each result, in order."""
    return [
        (r.frame.seq, [k.label for d in r.detections for k in d.children.get(stage, [])]) for r in results
    ]


def text_frame(text: str, seq: int) -> np.ndarray:
    img = np.full((240, 320, 3), 255, np.uint8)
    cv2.putText(img, f"{text}{seq}", (20, 130), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3, cv2.LINE_AA)
    return img
