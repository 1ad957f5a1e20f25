"""Choosing an inference backend by name or `auto`, and creating its engine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edged.infer import onnxruntime as _ort  # noqa: F401  (registers the backend)
from edged.infer import onnxruntime_cuda as _ort_cuda  # noqa: F401  (onnxruntime: CUDA + IO binding with a GPU context)
from edged.infer import tensorrt as _trt  # noqa: F401  (registers the backend, import-guarded inside)
from edged.infer.base import (
    AVAILABILITY,
    BACKENDS,
    Engine,
    EngineInfo,
    EngineOptions,
    ModelLoadError,
    TensorSpec,
)

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

log = logging.getLogger(__name__)

__all__ = [
    "Engine",
    "EngineInfo",
    "EngineOptions",
    "ModelLoadError",
    "TensorSpec",
    "choose_backend",
    "create_engine",
]


def choose_backend(requested: str) -> tuple[str, str]:
    """(backend, why) for a configured backend name; `auto` prefers TensorRT, then ONNX Runtime."""
    if requested != "auto":
        reason = AVAILABILITY[requested]()
        if reason:
            raise ModelLoadError(f"backend {requested!r} is not available: {reason}")
        return requested, "configured"
    trt_reason = AVAILABILITY["tensorrt"]()
    if trt_reason is None:
        return "tensorrt", "auto: TensorRT is importable"
    ort_reason = AVAILABILITY["onnxruntime"]()
    if ort_reason is None:
        return "onnxruntime", f"auto: {trt_reason}"
    raise ModelLoadError(f"no inference backend available: {trt_reason}; {ort_reason}")


def create_engine(
    name: str,
    path: Path,
    backend: str = "auto",
    options: EngineOptions | None = None,
    lane: GpuLane | None = None,
) -> Engine:
    """An engine of `backend`; `lane`: its caller's GPU lane (see `EngineFactory`)."""
    chosen, why = choose_backend(backend)
    engine = BACKENDS[chosen](name, path, options or EngineOptions(), lane=lane)
    detail = f"; {engine.info.detail}" if engine.info.detail else ""
    log.info("model %s: backend %s on %s (%s%s)", name, chosen, engine.info.device, why, detail)
    return engine
