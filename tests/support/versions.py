"""Shared by the tests of a model's other versions (int8: test_quantize.py, fp16: test_fp16.py): the small
detector config they convert, and what the real det -> rec chain reads with each version of the detector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edged.config.cameras import CameraConfig
from edged.config.inference import ModelConfig
from edged.demo.truth import result_texts
from edged.pipeline.flow import run_frames
from edged.pipeline.runner import build_stages
from edged.serving.loading import LoadedModel, load_model
from edged.types import Frame

DET = {"kind": "ppocr_det", "preprocess": {"limit_side": 480, "limit_type": "max"}}
CHAIN = [{"model": "text_det", "min_score": 0.5}, {"model": "text_rec", "on": "text_det"}]


def reads_per_detector(
    detectors: Sequence[LoadedModel], models: Path, frames: Sequence[np.ndarray], seqs: Sequence[int]
) -> list[list[list[str]]]:
    """For each detector in turn: the strings the chain (with the real float recognizer) reads on
    frames[seqs], one list per frame."""
    rec = load_model(
        "text_rec",
        ModelConfig.model_validate({"path": models / "PP-OCRv6_rec_small.onnx", "kind": "ppocr_rec"}),
    )
    cam = CameraConfig.model_validate({"source": "file://x", "chain": CHAIN})
    reads = []
    try:
        for det in detectors:
            stages = build_stages(cam, {"text_det": det, "text_rec": rec})
            results, failed = run_frames("t", stages, (Frame("t", i, frames[i]) for i in seqs))
            assert not failed
            reads.append([result_texts(r) for r in results])
    finally:
        rec.close()
    return reads
