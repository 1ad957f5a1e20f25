"""ONNX Runtime backend: CPU everywhere, CUDA execution provider where onnxruntime-gpu is installed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edged.infer.base import EngineInfo, EngineOptions, ModelLoadError, TensorSpec, register_backend

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


def unavailable_reason() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeEngine:
    """One InferenceSession. `infer` takes and returns numpy arrays (host memory)."""

    def __init__(self, name: str, path: Path, options: EngineOptions):
        import onnxruntime as ort

        self.name = name
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.intra_op_threads:
            so.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads:
            so.inter_op_num_threads = options.inter_op_threads
        so.log_severity_level = 3  # warnings from ORT's graph passes are noise for operators
        providers: list[Any] = list(options.providers) if options.providers else default_providers()
        providers = [
            ("CUDAExecutionProvider", {"use_tf32": "1" if options.tf32 else "0"})
            if p == "CUDAExecutionProvider"
            else p
            for p in providers
        ]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises several private exception types for bad files
            raise ModelLoadError(
                f"{path}: ONNX Runtime cannot load it: {str(e).strip().splitlines()[0]}"
            ) from None
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        used = self.session.get_providers()
        self.info = EngineInfo(
            backend="onnxruntime",
            device="cuda" if used and used[0] == "CUDAExecutionProvider" else "cpu",
            providers=list(used),
        )
        self._output_names = [o.name for o in self.outputs]

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        results = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


register_backend("onnxruntime", OnnxRuntimeEngine, unavailable_reason)
