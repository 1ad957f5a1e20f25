"""Precision as a build product and CUDA graphs on a GPU (issue 28, items 1 and 2): run on the GPU
machine with `pytest -m gpu tests/gpu/test_precision_gpu.py -s` (docs/gpu.md).

- `precision: auto` on ONNX Runtime's CUDA provider serves fp32 at once, then the fp16 version (the
  `<stem>.fp16.onnx` beside the model when there, else built in the background: needs the `onnx`
  package) is shadow-checked against it on the real sample frames and either switched in or refused
  with a reason; the reads of the chain are those of fp32 either way.
- `onnxruntime.cuda_graph: true`: the same outputs as without, on two shapes, also when the input
  changes between replays (the graph reads the fixed buffer the new input was copied into).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.config.cameras import CameraConfig
from edged.config.inference import ModelConfig
from edged.demo.sample import make_sample
from edged.demo.truth import read_video, result_texts
from edged.infer.base import EngineOptions
from edged.pipeline.chain import run_frames
from edged.pipeline.stage import build_stages
from edged.serving.loading import load_model
from edged.types import Frame

pytestmark = pytest.mark.gpu

CHAIN = [{"model": "text_det", "min_score": 0.5}, {"model": "text_rec", "on": "text_det"}]


def test_auto_precision_swaps_to_fp16_only_when_the_shadow_check_agrees(
    ort_cuda: Any, ppocr_models: Path, tmp_path: Path
) -> None:
    video = tmp_path / "plates.mp4"
    make_sample(video, frames=60, seed=7, size=(1920, 1080))
    frames = read_video(video)
    models = {
        name: load_model(
            name,
            ModelConfig.model_validate(
                {
                    "path": ppocr_models / file,
                    "kind": kind,
                    "update": {"shadow_frames": 10},
                    "tensorrt": {"cache_dir": tmp_path / "engines"},
                }
            ),
        )
        for name, file, kind in (
            ("text_det", "PP-OCRv6_det_small.onnx", "ppocr_det"),
            ("text_rec", "PP-OCRv6_rec_small.onnx", "ppocr_rec"),
        )
    }
    try:
        for m in models.values():
            assert m.engine.info.device == "cuda", m.engine.info
            assert m.server.status()["precision"]["target"] == "fp16", m.server.status()["precision"]
        stages = build_stages(CameraConfig.model_validate({"source": "file://x", "chain": CHAIN}), models)
        baseline, failed = run_frames("cam", stages, (Frame("cam", i, f) for i, f in enumerate(frames[:20])))
        assert not failed
        fp32_reads = [result_texts(r) for r in baseline]
        deadline = time.monotonic() + 600  # the fp16 build (when no file is there) and the shadow check
        seq = 20
        while time.monotonic() < deadline:
            states = {n: m.server.status()["precision"] for n, m in models.items()}
            if all(s["state"] in ("switched", "refused", "failed") for s in states.values()):
                break
            run_frames("cam", stages, (Frame("cam", seq + i, frames[i % 20]) for i in range(10)))
            seq += 10
        print(f"\n[precision] {states}")
        for name, st in states.items():
            assert st["state"] in ("switched", "refused", "failed"), (name, st)
            assert st["state"] == "switched" or st["reason"], (name, st)  # a refusal says why
            assert st["serving"] == ("fp16" if st["state"] == "switched" else "fp32"), (name, st)
        after, failed = run_frames(
            "cam", stages, (Frame("cam", 10_000 + i, f) for i, f in enumerate(frames[:20]))
        )
        assert not failed
        assert [result_texts(r) for r in after] == fp32_reads  # exact reads unchanged, or refused
    finally:
        for m in models.values():
            m.close()


def test_cuda_graphs_give_the_same_outputs(ort_cuda: Any, ppocr_models: Path) -> None:
    from edged.infer.onnxruntime_cuda import OrtCudaEngine

    rec = ppocr_models / "PP-OCRv6_rec_small.onnx"
    plain = OrtCudaEngine("rec", rec, EngineOptions(tf32=False))
    graphed = OrtCudaEngine("rec", rec, EngineOptions(tf32=False, cuda_graph=True))
    rng = np.random.default_rng(0)
    try:
        assert "CUDA graphs" in graphed.info.detail
        for shape in ((1, 3, 48, 320), (4, 3, 48, 640)):
            for _ in range(3):  # the first calls capture, the later ones replay with new input data
                x = {"x": rng.uniform(-1, 1, shape).astype(np.float32)}
                want, got = plain.infer(x), graphed.infer(x)
                for k in want:
                    np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
    finally:
        plain.close()
        graphed.close()
