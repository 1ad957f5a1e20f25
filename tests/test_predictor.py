"""The Predictor (edged.pipeline.predict) over real model servers on the real PP-OCR detector: a
request's pictures come back in order, as the camera path reads them; a chain that does not answer in
time is a PredictTimeout, and its slot stays taken (PredictBusy) until its frames have left the chain.
The engine is held back by a gate the test opens: fault injection through the server's constructor."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edged.decoders.registry import get_decoder
from edged.infer.base import Engine
from edged.pipeline.predict import PredictBusy, Predictor, PredictTimeout
from edged.serving.server import ModelServer
from edged.types import FrameResult
from tests.support.chain import Camera, SpyEngine, make_stage, serve
from tests.support.edged import small_sample, wait_until


def sample_images(tmp: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(small_sample(tmp)))
    images = []
    while len(images) < n:
        ok, img = cap.read()
        assert ok
        images.append(img)
    return images[2:] if n > 2 else images  # the first frames have no plate in view yet


class GatedEngine(SpyEngine):
    """The real engine, each call waiting until the test opens the gate."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.gate = threading.Event()
        self.gate.set()

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        assert self.gate.wait(30), "the test never opened the gate"
        return super().infer(inputs)


@pytest.fixture(scope="module")
def gated(ocr_engines: dict[str, Engine]) -> Iterator[tuple[ModelServer, GatedEngine]]:
    engine = GatedEngine(ocr_engines["ppocr_det"])
    # At most 320 px a side (as the daemon tests' detector): cheap on a shared 2-core machine.
    spec = dataclasses.replace(get_decoder("ppocr_det").default_preprocess, limit_side=320, limit_type="max")
    server = serve("ppocr_det", engine, spec=spec, source_sizes=((320, 240),))
    yield server, engine
    engine.gate.set()
    server.close()


def test_pictures_come_back_in_order_as_a_camera_reads_them(
    gated: tuple[ModelServer, GatedEngine], tmp_path: Path
) -> None:
    server, _ = gated
    images = sample_images(tmp_path, 6)
    stages = [make_stage("text_det", server)]
    camera = Camera("gate", stages)
    camera.run(images)
    camera.close()
    predictor = Predictor(max_in_flight=1, timeout_s=30)
    out = predictor.run(stages, images)
    assert all(isinstance(r, FrameResult) for r in out)
    got = [[d.to_dict() for d in r.detections] for r in out if isinstance(r, FrameResult)]
    assert got == [[d.to_dict() for d in r.detections] for r in camera.results]
    assert any(got), "the sample frames have text"
    assert predictor.status()["in_flight"] == 0 and predictor.status()["requests"] == 1


def test_a_timeout_keeps_its_slot_until_its_frames_have_left(
    gated: tuple[ModelServer, GatedEngine], tmp_path: Path
) -> None:
    server, engine = gated
    stages = [make_stage("text_det", server)]
    image = sample_images(tmp_path, 1)[0]
    predictor = Predictor(max_in_flight=1, timeout_s=0.2)
    engine.gate.clear()
    try:
        with pytest.raises(PredictTimeout):
            predictor.run(stages, [image])
        # Its frame is still in the chain: the slot is not given to another request.
        with pytest.raises(PredictBusy):
            predictor.run(stages, [image])
        assert predictor.status() == {
            "in_flight": 1,
            "max_in_flight": 1,
            "requests": 1,
            "refused_busy": 1,
            "timed_out": 1,
        }
    finally:
        engine.gate.set()
    # Once the frame has left, the slot serves the next request.
    assert wait_until(lambda: predictor.in_flight == 0, 30)
    out = predictor.run(stages, [image], timeout_s=30)
    assert len(out) == 1 and isinstance(out[0], FrameResult)
