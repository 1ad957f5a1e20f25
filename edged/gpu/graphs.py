"""CUDA graph capture of a stream's work, through the CUDA runtime's C API (ctypes): what TensorRT's
`execute_async_v3` needs to be replayed as one graph launch (edged.infer.tensorrt, `tensorrt.cuda_graph`).

NEVER EXECUTED in development (no GPU with TensorRT here): written against the CUDA 12 runtime API
(cudaStreamBeginCapture, cudaStreamEndCapture, cudaGraphInstantiate with flags, cudaGraphLaunch,
cudaGraphExecDestroy, cudaGraphDestroy), type-checked, covered by tests/gpu/test_tensorrt.py on a device.
pycuda wraps the driver API without stream capture; libcudart's functions accept the same stream
handles (a CUstream is a cudaStream_t).

Threads: a `CapturedGraph` belongs to its engine's one caller, like the engine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import Any

_CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal: other threads' CUDA calls go on


class CudaGraphError(RuntimeError):
    """The CUDA runtime refused a capture or launch (the engine then runs without graphs)."""


@functools.cache
def _cudart() -> Any:
    for name in ("libcudart.so", "libcudart.so.12", ctypes.util.find_library("cudart")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise CudaGraphError("the CUDA runtime library (libcudart) is not found")


def _check(code: int, what: str) -> None:
    if code != 0:
        lib = _cudart()
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        raise CudaGraphError(f"{what} failed: {lib.cudaGetErrorString(code).decode(errors='replace')}")


class CapturedGraph:
    """The work `enqueue(stream)` puts on `stream`, captured once and replayed by `launch()`. The
    addresses it uses are frozen into the graph: callers keep their buffers fixed."""

    def __init__(self, stream: int, enqueue: Callable[[], None]) -> None:
        lib = _cudart()
        self.stream = ctypes.c_void_p(stream)
        _check(lib.cudaStreamBeginCapture(self.stream, _CAPTURE_MODE_THREAD_LOCAL), "cudaStreamBeginCapture")
        graph = ctypes.c_void_p()
        try:
            enqueue()
        finally:  # always end the capture, or the stream stays unusable
            end = lib.cudaStreamEndCapture(self.stream, ctypes.byref(graph))
        _check(end, "cudaStreamEndCapture")
        self._graph = graph
        self._exec = ctypes.c_void_p()
        _check(
            lib.cudaGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph, ctypes.c_ulonglong(0)),
            "cudaGraphInstantiateWithFlags",
        )

    def launch(self) -> None:
        _check(_cudart().cudaGraphLaunch(self._exec, self.stream), "cudaGraphLaunch")

    def close(self) -> None:
        lib = _cudart()
        if self._exec:
            lib.cudaGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph:
            lib.cudaGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()
