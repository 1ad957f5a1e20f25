"""GPU test fixtures: every test here is skipped, with the reason shown, where pycuda or a GPU is missing.

Run on a CUDA machine with `pytest -m gpu tests/gpu` (the default addopts deselect the `gpu` marker).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.gpu.context import gpu_available
from tests.support.gpu import models_dir


@pytest.fixture(scope="session")
def gpu() -> Iterator[Any]:
    """The retained primary context (skips the test with the reason when there is no usable GPU)."""
    reason = gpu_available()
    if reason:
        pytest.skip(f"no GPU: {reason}")
    from edged.gpu import context

    yield context.init()


@pytest.fixture(scope="session")
def ppocr_models() -> Path:
    d = models_dir()
    if d is None:
        pytest.skip("PP-OCR ONNX models not found (set EDGED_MODELS_DIR or extract them into .models/)")
    return d


@pytest.fixture(scope="session")
def ort_cuda(gpu: Any) -> Any:
    """onnxruntime with a working CUDA EP (skips with the reason otherwise)."""
    from edged.infer.onnxruntime_cuda import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        pytest.skip(f"ONNX Runtime CUDA EP unavailable: {reason}")
    import onnxruntime

    return onnxruntime
