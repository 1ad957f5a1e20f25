"""Decoding batches in worker processes (DecodePool): the same detections as in-thread decoding, in row
order, from real PP-OCR detector outputs; a killed worker degrades to in-thread decoding, loudly."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest

from edged.chain.decodepool import DecodePool
from edged.infer.base import Engine
from edged.models import build_decoder, get_decoder
from edged.preprocess import CpuPreprocessor
from edged.types import Frame
from tests.test_batching import models, text_frame  # noqa: F401  (module fixture: the real engines)


@pytest.fixture(scope="module")
def batch(models: dict[str, Engine]) -> tuple[dict[str, np.ndarray], list]:  # noqa: F811
    """Detector outputs for 9 frames of different text, and their plans."""
    det = models["det"]
    frames = [Frame(f"c{i}", i, text_frame(["AB", "XY", "KM"][i % 3] * (1 + i % 2), i)) for i in range(9)]
    tensor, plans = CpuPreprocessor().frames(frames, get_decoder("ppocr_det").default_preprocess)
    return det.infer({det.inputs[0].name: tensor}), plans


def boxes(found: list) -> list[list[tuple]]:
    return [[(d.label, round(d.score, 6), d.box, d.polygon) for d in dets] for dets in found]


def test_workers_decode_exactly_what_one_thread_does(batch: tuple) -> None:
    outputs, plans = batch
    decoder = build_decoder("ppocr_det", {})
    want = decoder.decode(outputs, plans)
    assert all(want), "every frame has text: an empty comparison would prove nothing"
    pool = DecodePool(decoder, workers=2)
    try:
        for _ in range(2):  # the shared block is reused across batches
            assert boxes(pool.decode(outputs, plans)) == boxes(want)
        assert boxes(pool.decode({k: v[:5] for k, v in outputs.items()}, plans[:5])) == boxes(want[:5])
        assert pool.broken is None
    finally:
        pool.close()


def test_a_killed_worker_falls_back_to_in_thread_decoding(
    batch: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    outputs, plans = batch
    decoder = build_decoder("ppocr_det", {})
    want = boxes(decoder.decode(outputs, plans))
    pool = DecodePool(decoder, workers=2)
    try:
        assert boxes(pool.decode(outputs, plans)) == want  # workers are up
        for pid in list(pool._pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.ERROR):
            assert boxes(pool.decode(outputs, plans)) == want
            assert boxes(pool.decode(outputs, plans)) == want
        assert pool.broken is not None
        assert [r.getMessage() for r in caplog.records].count(
            f"decode workers failed ({pool.broken}): decoding in one thread from now on"
        ) == 1
    finally:
        pool.close()
