"""Cross-camera batching on the real PP-OCR models: results go back to the right camera and frame."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from edged.chain.chain import Chain
from edged.chain.pipeline import Pipeline
from edged.infer.base import Engine
from edged.infer.batching import BatchingEngine
from edged.types import FrameResult
from tests._chain import SpyEngine, make_stage, reads_by_frame, run_cameras, text_frame


def make_chain(det: Engine, rec: Engine) -> Chain:
    return Chain([make_stage("ppocr_det", "det", det), make_stage("ppocr_rec", "rec", rec, on="det")])


def test_batches_split_back_to_the_right_camera_and_frame(ocr_engines: dict[str, Engine]) -> None:
    spy = SpyEngine(ocr_engines["ppocr_det"])
    shared = BatchingEngine(spy, max_batch=4, max_wait_ms=200)  # generous wait: deterministic merging
    cameras = {"north": "AB", "south": "XY", "east": "KM"}
    frames_each = 3
    results: dict[str, list[FrameResult]] = {c: [] for c in cameras}
    pipes = {
        c: Pipeline(make_chain(shared, ocr_engines["ppocr_rec"]), results[c].append, name=c) for c in cameras
    }
    run_cameras(pipes, lambda cam, seq: text_frame(cameras[cam], seq), frames_each)
    shared.close(close_inner=False)  # the engines are shared by the whole session (ocr_engines)

    for cam, prefix in cameras.items():
        got = reads_by_frame(results[cam])
        assert got == [(s, [f"{prefix}{s}"]) for s in range(frames_each)], (cam, got)
    total = len(cameras) * frames_each
    assert set(spy.calls) <= set(shared.sizes), f"batch sizes outside the fixed set: {spy.calls}"
    assert max(spy.calls) > 1, f"no request was merged: {spy.calls}"
    assert len(spy.calls) < total and sum(spy.calls) >= total


def test_different_shapes_are_not_merged_and_errors_reach_every_caller(
    ocr_engines: dict[str, Engine],
) -> None:
    spy = SpyEngine(ocr_engines["ppocr_rec"])
    eng = BatchingEngine(spy, max_batch=8, max_wait_ms=100)
    a = np.zeros((1, 3, 48, 320), np.float32)
    b = np.zeros((2, 3, 48, 480), np.float32)
    out: dict[str, Any] = {}
    ts = [
        threading.Thread(target=lambda k=k, x=x: out.__setitem__(k, eng.infer({"x": x})))
        for k, x in (("a", a), ("b", b))
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(spy.calls) == [1, 2]
    assert next(iter(out["a"].values())).shape[0] == 1 and next(iter(out["b"].values())).shape[0] == 2
    with pytest.raises(Exception, match=r"(?i)invalid|got|dimension|rank"):
        eng.infer({"x": np.zeros((1, 3, 5), np.float32)})  # a real ORT error, raised in the caller
    eng.close(close_inner=False)
