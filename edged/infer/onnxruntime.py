"""ONNX Runtime backend: CPU everywhere, CUDA execution provider where onnxruntime-gpu is installed.

On CPU sessions the backend loads the model's offline-optimized copy from the engine cache when one
is there (made by `edged build-engine` or a background build: `optimize` below), which skips ONNX
Runtime's graph optimization at every start. Optimized graphs may hold CPU-specific fused operators,
so the cache key names the ONNX Runtime version and CPU architecture, and CUDA sessions never use it.
An engine is owned by one caller (its model server) and is not thread-safe.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.infer.base import EngineInfo, EngineOptions, ModelLoadError, TensorSpec, register_backend
from edged.infer.engine_cache import EngineCache, EngineKey, engine_key, quarantine

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

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


def cpu_only(options: EngineOptions) -> bool:
    providers = list(options.providers) if options.providers else default_providers()
    return providers[:1] == ["CPUExecutionProvider"]


def optimized_key(model: Path) -> EngineKey:
    """Cache key of the offline-optimized copy of `model` (shape-independent, so no shape profiles)."""
    import onnxruntime as ort

    return engine_key(
        model,
        builder="onnxruntime",
        builder_version=ort.__version__,
        device=f"{platform.machine()}/cpu",
        dla_core=None,
        precision="fp32",
        calibration_cache=None,
        shapes=[],
        suffix=".onnx",
    )


def cached_optimized(model: Path, options: EngineOptions) -> Path | None:
    """The optimized copy of `model` in the engine cache, when this session would run on the CPU."""
    if model.suffix != ".onnx" or not cpu_only(options):
        return None
    if not (options.cache_dir / model.stem).is_dir():  # no cache: skip hashing the model file
        return None
    return EngineCache(options.cache_dir).find(optimized_key(model))


def optimize(model: Path, dest: Path) -> None:
    """Offline optimization: ONNX Runtime applies every graph optimization for this CPU and saves the
    result to `dest` (the engine cache's temporary file; EngineCache publishes it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(dest)
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several private exception types for bad files
        raise ModelLoadError(
            f"{model}: ONNX Runtime cannot optimize it: {str(e).strip().splitlines()[0]}"
        ) from None
    if not dest.is_file():
        raise ModelLoadError(f"{model}: ONNX Runtime wrote no optimized model to {dest}")


def load_problem(path: Path) -> str | None:
    """Why ONNX Runtime's CPU provider cannot load the model at `path` (no graph passes run), or None."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        return f"ONNX Runtime cannot load it: {str(e).strip().splitlines()[0] if str(e).strip() else e}"
    return None


def _cpu_memory(so: Any, mode: str) -> Any:
    """Session and run options for the CPU provider's memory `mode` (EngineOptions.cpu_memory; measured
    in docs/benchmarks.md "Memory"): the RunOptions every call passes, or None."""
    import onnxruntime as ort

    if mode == "arena":
        return None
    so.enable_mem_pattern = False  # one pre-planned block per input shape, kept: not with many shapes
    if mode == "no_arena":
        so.enable_cpu_mem_arena = False
        return None
    ro = ort.RunOptions()
    # The arena's chunks not in use go back after each run: it no longer keeps the largest shape's
    # activations (the detector at 4 x 1920x1088 is gigabytes) for the process's lifetime.
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return ro


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


def model_inputs(path: Path) -> list[TensorSpec]:
    """The inputs an ONNX model declares, read without optimizing or building anything: a model server
    declares its shapes from them before any engine (a TensorRT profile needs them) is built."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelLoadError(
            f"{path}: ONNX Runtime cannot load it: {str(e).strip().splitlines()[0]}"
        ) from None
    return [_spec(i) for i in session.get_inputs()]


class OnnxRuntimeEngine:
    """One InferenceSession. `infer` takes and returns numpy arrays (host memory)."""

    def __init__(self, name: str, path: Path, options: EngineOptions):
        import onnxruntime as ort

        self.name = name
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = model = Path(path)  # some callers pass str
        optimized = cached_optimized(path, options)
        if optimized is not None:
            # Already optimized offline for this CPU and ORT version: loading skips the graph passes.
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            path = optimized
        if options.intra_op_threads:
            so.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads:
            so.inter_op_num_threads = options.inter_op_threads
        so.log_severity_level = 3  # warnings from ORT's graph passes are noise for operators
        providers: list[Any] = list(options.providers) if options.providers else default_providers()
        self._run_options: Any = None
        if providers[:1] == ["CPUExecutionProvider"]:
            self._run_options = _cpu_memory(so, options.cpu_memory)
        providers = [
            ("CUDAExecutionProvider", {"use_tf32": "1" if options.tf32 else "0"})
            if p == "CUDAExecutionProvider"
            else p
            for p in providers
        ]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises several private exception types for bad files
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if optimized is None:
                raise ModelLoadError(f"{path}: ONNX Runtime cannot load it: {why}") from None
            # A cached copy that passed its checksum yet does not load: moved aside like a damaged
            # one; the shipped model serves and the caller's background build writes a new copy.
            quarantine(optimized, f"ONNX Runtime cannot load it: {why}")
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            optimized, path = None, Path(model)
            try:
                self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
            except Exception as e2:
                why = str(e2).strip().splitlines()[0] if str(e2).strip() else type(e2).__name__
                raise ModelLoadError(f"{path}: ONNX Runtime cannot load it: {why}") from None
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        used = self.session.get_providers()
        self.info = EngineInfo(
            backend="onnxruntime",
            device="cuda" if used and used[0] == "CUDAExecutionProvider" else "cpu",
            providers=list(used),
            detail=f"optimized model {optimized}" if optimized is not None else "",
            shape_warmup=bool(used) and used[0] != "CPUExecutionProvider",
        )
        self.path = path
        self._output_names = [o.name for o in self.outputs]

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        results = self.session.run(self._output_names, feeds, self._run_options)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def create(name: str, path: Path, options: EngineOptions, lane: GpuLane | None = None) -> OnnxRuntimeEngine:
    """The backend factory: host memory in and out, so no GPU lane (where pycuda drives a GPU,
    edged.infer.onnxruntime_cuda registers its own factory, which passes the lane to its engine)."""
    return OnnxRuntimeEngine(name, path, options)


register_backend("onnxruntime", create, unavailable_reason)
