"""The fp16 PP-OCR detector (edged.infer.quantize.convert_fp16) on ONNX Runtime's CUDA provider at 1080p:
no NaN (everything in fp16 gave NaN in every pixel at 1088x1920: its spatial means overflow) and the
decoder's bitmap as with the fp32 model, at 1 and 4 rows; loaded through edged with `onnxruntime.fp16`
it runs on the CUDA provider without the CPU warning.

The fp16 file is made beforehand (`edged make-fp16 <model>` needs the `onnx` package,
which the GPU machine lacks) and put beside the float model in the models folder; without it, or without
a working CUDA provider, every test here skips.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.infer.base import EngineOptions
from edged.preprocess.cpu import preprocess_frame

pytestmark = pytest.mark.gpu

DET, DET_FP16 = "PP-OCRv6_det_small.onnx", "PP-OCRv6_det_small.fp16.onnx"
THRESH = 0.3  # the ppocr_det decoder's default bitmap threshold


@pytest.fixture(scope="module")
def fp16_file(ppocr_models: Path) -> Path:
    path = ppocr_models / DET_FP16
    if not path.is_file():
        pytest.skip(f"{path} not found: make it with `edged make-fp16` and copy it there")
    return path


@pytest.fixture(scope="module")
def engines(ort_cuda: Any, ppocr_models: Path, fp16_file: Path) -> dict[str, Any]:
    from edged.infer.onnxruntime_cuda import OrtCudaEngine

    # The reference computes in full fp32 (no TF32), as the CPU does.
    return {
        "fp32": OrtCudaEngine("det", ppocr_models / DET, EngineOptions(tf32=False)),
        "fp16": OrtCudaEngine("det-fp16", fp16_file, EngineOptions()),
    }


def _batch(rows: int) -> np.ndarray:
    """`rows` 1080p frames of the plate scene (plates, asphalt, edges), preprocessed as edged does for
    the detector by default: [rows, 3, 1088, 1920] float32."""
    from edged.config.inference import ModelConfig, effective_preprocess
    from edged.demo.sample import SampleScene

    spec = effective_preprocess(ModelConfig.model_validate({"path": DET, "kind": "ppocr_det"}))
    scene = SampleScene(frames=40, seed=7, size=(1920, 1080))
    x = np.concatenate([preprocess_frame(scene.render(10 + 7 * i), spec)[0] for i in range(rows)])
    assert x.shape == (rows, 3, 1088, 1920) and x.dtype == np.float32
    return x


@pytest.mark.parametrize("rows", [1, 4])
def test_fp16_detector_matches_fp32_at_1080p(engines: dict[str, Any], rows: int) -> None:
    x = _batch(rows)
    prob = {}
    for k, e in engines.items():
        assert e.info.device == "cuda" and e.session.get_providers()[0] == "CUDAExecutionProvider"
        prob[k] = next(iter(e.infer({e.inputs[0].name: x}).values()))
    half, full = prob["fp16"], prob["fp32"]
    assert half.dtype == np.float32 and half.shape == full.shape
    assert not np.isnan(half).any()
    differ = float(np.mean((half > THRESH) != (full > THRESH)))
    worst = float(np.abs(half - full).max())
    print(f"rows {rows}: bitmap pixels that differ {differ:.2e}, max |fp16 - fp32| {worst:.4f}")
    assert (full > THRESH).mean() > 1e-3  # the frames have text: the bitmap is not empty
    assert differ < 1e-3  # 4.8e-5 measured on an H200 (docs/benchmarks.md)


def test_fp16_switch_loads_on_the_cuda_provider_without_the_cpu_warning(
    ort_cuda: Any, fp16_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edged.config.inference import ModelConfig
    from edged.serving.loading import load_model

    cfg = ModelConfig.model_validate(
        {
            "path": fp16_file.with_name(DET),
            "kind": "ppocr_det",
            "backend": "onnxruntime",
            "onnxruntime": {"fp16": True},
            "batching": {"max_batch": 1, "source_sizes": [[640, 480]]},
        }
    )
    with caplog.at_level(logging.WARNING, logger="edged.serving.loading"):
        lm = load_model("text_det", cfg)
    try:
        assert lm.engine.info.device == "cuda"
        assert not [r for r in caplog.records if "onnxruntime.fp16" in r.getMessage()]
    finally:
        lm.close()
