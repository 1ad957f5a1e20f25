"""TensorRT backend on a real model (skipped where TensorRT is not importable — every machine edged was
developed on; this is the first thing to run on a Jetson: `pytest -m gpu tests/gpu/test_tensorrt.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.infer.base import EngineOptions

pytestmark = pytest.mark.gpu


def test_trt_engine_matches_onnxruntime_and_caches(gpu: Any, ppocr_models: Path, tmp_path: Path) -> None:
    from edged.infer.tensorrt_build import tensorrt_missing

    if tensorrt_missing():
        pytest.skip(str(tensorrt_missing()))
    from edged.infer.onnxruntime import OnnxRuntimeEngine
    from edged.infer.tensorrt import TensorRTEngine, build_engine

    model = ppocr_models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    opts = EngineOptions(precision="fp32", max_batch=8, cache_dir=tmp_path)
    phases: list[str] = []
    plan = build_engine(model, opts, progress=lambda phase, step, total: phases.append(phase))
    assert plan.is_file() and plan.parent == tmp_path / model.stem  # the engine cache's layout
    assert build_engine(model, opts) == plan  # cached: same key, no rebuild
    eng = TensorRTEngine("cls", model, opts)
    ref = OnnxRuntimeEngine("cls", model, EngineOptions(providers=("CPUExecutionProvider",)))
    x = np.random.default_rng(0).normal(size=(6, 3, 48, 192)).astype(np.float32)
    got = eng.infer({eng.inputs[0].name: x})
    want = ref.infer({ref.inputs[0].name: x})
    for k in want:
        assert np.abs(got[k] - want[k]).max() < 1e-2


def test_trt_background_build_hands_over_a_working_engine(
    gpu: Any, ppocr_models: Path, tmp_path: Path
) -> None:
    """The builder process path (edged/infer/builder.py) with the real TensorRT builder."""
    from edged.infer.tensorrt_build import tensorrt_missing

    if tensorrt_missing():
        pytest.skip(str(tensorrt_missing()))
    from edged.infer.builder import BackgroundBuild
    from edged.infer.builds import BuildJob
    from edged.infer.onnxruntime import OnnxRuntimeEngine

    model = ppocr_models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    opts = EngineOptions(precision="fp32", max_batch=8, cache_dir=tmp_path)
    build = BackgroundBuild(BuildJob("cls", model, "tensorrt", opts)).start()
    assert build.wait(900), build.status()
    eng = build.poll()
    assert eng is not None and build.status()["state"] == "ready", build.status()
    ref = OnnxRuntimeEngine("cls", model, EngineOptions(providers=("CPUExecutionProvider",)))
    x = np.random.default_rng(1).normal(size=(4, 3, 48, 192)).astype(np.float32)
    got, want = eng.infer({eng.inputs[0].name: x}), ref.infer({ref.inputs[0].name: x})
    for k in want:
        assert np.abs(got[k] - want[k]).max() < 1e-2
