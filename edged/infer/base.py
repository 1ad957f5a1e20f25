"""Engine protocol and backend registry.

An engine runs tensors and knows nothing of chains or decoders. Inputs and outputs are host numpy
arrays or device buffers (objects with `__cuda_array_interface__`); a backend never copies what is
already where it needs to be.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A model file could not be loaded (missing, not ONNX, unsupported); the message says why.

    `transient`: the cause is the machine's state, not the file or its settings (GPU or host memory
    exhausted, a CUDA/driver error), so a restart of the process may load it; by default it is judged
    from the message (`transient_cause`)."""

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        self.transient = transient_cause(message) if transient is None else transient


# Failures of the machine, not of the model: out of (device or host) memory, CUDA/cuDNN/cuBLAS/driver
# errors. A restart may help these; a bad file or setting (everything else) it never does.
_TRANSIENT = re.compile(
    r"out of memory|bad_alloc|failed to allocate|cudaErrorMemoryAllocation|CUDA (?:failure|error)|"
    r"cudaError|CUDNN_STATUS_(?:ALLOC_FAILED|INTERNAL_ERROR|EXECUTION_FAILED)|CUBLAS_STATUS_"
    r"(?:ALLOC_FAILED|INTERNAL_ERROR|EXECUTION_FAILED)|CUDA driver|device-side assert",
    re.IGNORECASE,
)


def transient_cause(message: str) -> bool:
    """Whether a load failure's message names a machine state a restart may clear (see ModelLoadError)."""
    return bool(_TRANSIENT.search(message))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    # -1 (or a symbolic name, shown as -1) marks a dynamic dimension.
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "float16", "int64", ...


@dataclass
class EngineInfo:
    backend: str  # "onnxruntime" | "tensorrt"
    device: str  # "cpu" | "cuda" | "dla0" ...
    providers: list[str] = field(default_factory=list)
    detail: str = ""
    # Whether the engine's first call of a new input shape is slow (GPU backends re-plan: the model
    # server warms every declared shape before a batch uses it). ONNX Runtime on the CPU: False
    # (measured: its first call of a new shape costs what later ones cost, docs/benchmarks.md).
    shape_warmup: bool = True


class Engine(Protocol):
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    info: EngineInfo

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run once. Host inputs give host outputs; device inputs give device outputs where supported."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    """Plain backend options (built from config by edged/serving/loading.py; infer/ never reads config objects).
    Plain data: they cross into the engine builder process. The GPU lane an engine runs on is not an
    option but an argument of the factory (`EngineFactory`)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    providers: tuple[str, ...] | None = None
    tf32: bool = True  # ONNX Runtime CUDA EP `use_tf32`
    conv_algo_search: str = "heuristic"  # ONNX Runtime CUDA EP `cudnn_conv_algo_search`
    # ONNX Runtime's CPU provider memory: "shrink" (arena given back after every run, no memory
    # patterns), "arena" (ORT's default: grows to the largest shape run, kept), "no_arena".
    cpu_memory: str = "shrink"
    # CUDA graphs per declared input shape: ONNX Runtime's CUDA provider (`enable_cuda_graph` on fixed
    # buffers) and TensorRT (capture of execute_async_v3). GPU only; off until A/B'd on a GPU.
    cuda_graph: bool = False
    trt_cuda_graph: bool = False
    precision: str = "fp16"
    workspace_mb: int = 1024
    dla_core: int | None = None
    calibration_cache: Path | None = None
    max_batch: int = 16
    cache_dir: Path = Path("/var/cache/edged/engines")
    # The decoder kind (`ppocr_rec`, ...): picks TensorRT's default H/W ranges when no shapes are declared.
    model_kind: str = ""
    # Input shapes the model server will run ({input name: shape} each); TensorRT builds its profile
    # from them and they are part of the engine cache key. Empty: the kind's default ranges.
    shapes: tuple[dict[str, tuple[int, ...]], ...] = ()


class EngineFactory(Protocol):
    """Makes a backend's engine. `lane`: the edged.gpu GpuLane of the engine's one caller (its model
    server): a GPU engine runs on the lane's stream, ordered after the caller's preprocessing on it,
    and counts the bytes it moves on the lane; None: a GPU engine makes a stream of its own and counts
    nothing. Host engines ignore it."""

    def __call__(
        self, name: str, path: Path, options: EngineOptions, lane: GpuLane | None = None
    ) -> Engine: ...


BACKENDS: dict[str, EngineFactory] = {}
# Why `auto` chose a backend, for the startup summary.
AVAILABILITY: dict[str, Callable[[], str | None]] = {}


def register_backend(name: str, factory: EngineFactory, unavailable_reason: Callable[[], str | None]) -> None:
    BACKENDS[name] = factory
    AVAILABILITY[name] = unavailable_reason
