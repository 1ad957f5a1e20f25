"""The one CUDA context of the process, and `GpuLane` (a CUDA stream + traffic counters).

Why one owner: TensorRT, ONNX Runtime, CuPy, torch and OpenCV all use the device's *primary* context
(the CUDA runtime's). pycuda must retain that same context (`pycuda.autoprimaryctx` semantics) or
device pointers and streams from one library are "invalid resource handles" in another
(NVIDIA/TensorRT#3028). A context is current per thread, so every worker thread that launches GPU work
enters `gpu_thread()` (push on entry, pop on exit).

A lane is never implied by the thread: whoever runs GPU work on a lane is given it as an argument (a
model server hands its own to its engine at construction, and to its preprocessing and downloads).

pycuda is imported lazily (typed as `Any`) so that `import edged.gpu` works on machines without it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "ctx", "device", "cuda" once initialised
_local = threading.local()  # .depth (push count in this thread)

F = TypeVar("F", bound=Callable[..., Any])


def _driver() -> Any:
    import pycuda.driver as cuda  # deferred: pycuda exists only where CUDA does

    return cuda


def gpu_available() -> str | None:
    """None when pycuda can drive a CUDA device here, else the reason why not (for logs and test skips)."""
    try:
        cuda = _driver()
    except Exception as e:  # ImportError, or OSError when libcuda.so is missing
        return f"pycuda is not importable ({type(e).__name__}: {e})"
    try:
        cuda.init()
        n = cuda.Device.count()
    except Exception as e:
        return f"CUDA driver initialisation failed ({type(e).__name__}: {e})"
    if n == 0:
        return "no CUDA device found"
    return None


def init(device: int = 0) -> Any:
    """Retain the device's primary context once (idempotent) and make it current in this thread.

    Returns the pycuda Context. The context is popped/released at interpreter exit.
    """
    with _lock:
        if "ctx" in _state:
            return _state["ctx"]
        reason = gpu_available()
        if reason:
            raise RuntimeError(f"GPU unavailable: {reason}")
        cuda = _driver()
        dev = cuda.Device(device)
        ctx = dev.retain_primary_context()
        ctx.push()
        _local.depth = 1
        _state.update(ctx=ctx, device=dev, cuda=cuda)
        atexit.register(_shutdown)
        log.info(
            "GPU: %s (sm_%d%d, %d MiB), primary context retained",
            dev.name(),
            *dev.compute_capability(),
            dev.total_memory() // (1 << 20),
        )
        return ctx


def _shutdown() -> None:
    ctx = _state.get("ctx")
    if ctx is None:
        return
    # Only the initialising thread can pop here; worker threads popped on their own exit.
    with contextlib.suppress(Exception):
        while getattr(_local, "depth", 0) > 0:
            _driver().Context.pop()
            _local.depth -= 1
    _state.clear()


def initialized() -> bool:
    return "ctx" in _state


def device_info() -> dict[str, Any]:
    """Name, compute capability and ordinal of the initialised device (for engine cache keys, logs)."""
    dev = _state.get("device")
    if dev is None:
        init()
        dev = _state["device"]
    major, minor = dev.compute_capability()
    return {"name": dev.name(), "sm": f"{major}{minor}", "ordinal": 0, "total_memory": dev.total_memory()}


@contextlib.contextmanager
def gpu_thread() -> Iterator[Any]:
    """Make the primary context current in this thread for the duration (re-entrant)."""
    ctx = init()
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        ctx.push()
    _local.depth = depth + 1
    try:
        yield ctx
    finally:
        _local.depth -= 1
        if _local.depth == 0:
            _driver().Context.pop()


def in_gpu_thread(fn: F) -> F:
    """Decorator form of `gpu_thread()` for thread entry functions."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with gpu_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class GpuLane:
    """A GPU lane: its own stream (so lanes overlap) and its byte counters. A model server owns one
    (`model-<name>`); a preprocessor used on its own keeps one per camera. Passed as an argument to
    what runs on it; using it does not make the CUDA context current (that is `gpu_thread()`).

    `metrics` is an edged.observability.metrics.Metrics (or None); counts also accumulate in `h2d` / `d2h` so tests
    and benchmarks can read them without prometheus.
    """

    camera: str
    stream: Any = None  # pycuda.driver.Stream
    metrics: Any = None
    # Frame uploads go on a second stream (the copy engine), so batch k+1's frames cross the bus while
    # batch k computes on `stream`; whoever reads an upload makes `stream` wait on its event.
    copy_stream: Any = None
    h2d: int = 0
    d2h: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        with gpu_thread():  # a stream belongs to the context current in the creating thread
            if self.stream is None:
                self.stream = _driver().Stream()
            if self.copy_stream is None:
                self.copy_stream = _driver().Stream()

    @property
    def handle(self) -> int:
        """The raw cudaStream_t for TensorRT, ONNX Runtime, cv2.cuda.wrapStream, jetson-utils."""
        return int(self.stream.handle)

    def count_h2d(self, nbytes: int) -> None:
        with self._lock:
            self.h2d += nbytes
        if self.metrics is not None:
            self.metrics.bytes_h2d.labels(camera=self.camera).inc(nbytes)

    def count_d2h(self, nbytes: int) -> None:
        with self._lock:
            self.d2h += nbytes
        if self.metrics is not None:
            self.metrics.bytes_d2h.labels(camera=self.camera).inc(nbytes)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        """Wait for and release the stream while the context is current (a stream dropped later in a
        thread without the context leaks and makes pycuda warn)."""
        if self.stream is not None:
            with gpu_thread():
                self.copy_stream.synchronize()
                self.stream.synchronize()
                self.stream = self.copy_stream = None


def device_memory_used_mb() -> float | None:
    """Device memory in use on the GPU, by every process (MiB), or None while no context exists here (a
    CPU-only run). On a Jetson it is the shared system memory the GPU allocator holds."""
    if not initialized():
        return None
    with gpu_thread():
        free, total = _driver().mem_get_info()
    return (int(total) - int(free)) / 2**20
