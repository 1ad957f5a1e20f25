"""TensorRT 10 backend: run engines on device buffers (building lives in tensorrt_build.py).

NEVER EXECUTED in development: no TensorRT was available on any machine this was written on (the GPU
test machine has no TensorRT either). That includes `tensorrt.cuda_graph` (execute_async_v3 captured
per input shape on fixed buffers, replayed: edged.gpu.graphs). It is written against the TensorRT 10 Python API and type-checked
with `tensorrt-stubs` 10.13; treat it as untested until `pytest -m gpu tests/gpu/test_tensorrt.py` runs
on a Jetson. Inference: one execution context per engine, set_input_shape + set_tensor_address for
every I/O tensor (pooled device buffers, or the caller's device tensors), execute_async_v3 on the
stream of the GPU lane the engine was given at construction (its model server's), else on a stream of
its own. A cached plan that fails to deserialize (other TRT/GPU) is rebuilt. Given an
.onnx path, the engine comes from the engine cache, built synchronously when missing: the strict
`backend: tensorrt` meaning (no fallback); background builds go through edged/infer/builder.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.infer.base import EngineInfo, EngineOptions, ModelLoadError, TensorSpec, register_backend
from edged.infer.engine_cache import quarantine
from edged.infer.tensorrt_build import DYNAMIC_HW, TensorRTBuild, build_engine, trt_logger, unavailable_reason

if TYPE_CHECKING:
    import tensorrt as trt

    from edged.gpu.context import GpuLane

log = logging.getLogger(__name__)

__all__ = ["DYNAMIC_HW", "TensorRTBuild", "TensorRTEngine", "build_engine", "unavailable_reason"]


def _dims(d: trt.Dims) -> tuple[int, ...]:
    return tuple(int(d[i]) for i in range(len(d)))


_NP_TYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT32": "int32",
    "INT64": "int64",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


class TensorRTEngine:
    """One deserialized engine + one execution context; I/O through pooled device buffers.

    `lane`: the GPU lane of the engine's one caller (its model server): it runs on the lane's stream and
    counts the bytes it moves there. None: a stream of its own, nothing counted.
    """

    def __init__(self, name: str, path: Path, options: EngineOptions, lane: GpuLane | None = None) -> None:
        import tensorrt as trt_mod

        from edged.gpu import context
        from edged.gpu.buffers import BufferPool

        context.init()
        self.name = name
        self.options = options
        engine_path = path if path.suffix in (".engine", ".plan") else build_engine(path, options)
        runtime = trt_mod.Runtime(trt_logger())
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None and engine_path != path:
            # Moved aside with one WARNING (edged.infer.engine_cache), then built again.
            quarantine(engine_path, "TensorRT cannot deserialize it (other TensorRT/GPU, or damaged)")
            engine = runtime.deserialize_cuda_engine(build_engine(path, options).read_bytes())
        if engine is None:
            raise ModelLoadError(f"{engine_path}: TensorRT cannot deserialize it")
        self._runtime, self.engine = runtime, engine
        self.ctx = engine.create_execution_context()
        self.pool = BufferPool()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_in = {n: engine.get_tensor_mode(n) == trt_mod.TensorIOMode.INPUT for n in names}
        self.inputs = [self._spec(n) for n in names if is_in[n]]
        self.outputs = [self._spec(n) for n in names if not is_in[n]]
        self.metadata: dict[str, str] = {}
        device = f"dla{options.dla_core}" if options.dla_core is not None else "cuda"
        self.info = EngineInfo(
            backend="tensorrt", device=device, detail=f"{engine_path.name} ({options.precision})"
        )
        self.lane = lane
        # Our own stream only without a lane; the lane's is read from the lane at each call.
        self._stream: Any = context._driver().Stream() if lane is None else None
        self._event = context._driver().Event()
        # tensorrt.cuda_graph: per input shape, execute_async_v3 captured once (edged.gpu.graphs) on
        # fixed I/O buffers, then replayed; None after a capture failed (plain calls from then on).
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] | None = {} if options.trt_cuda_graph else None
        self._out_shapes: dict[tuple[tuple[int, ...], ...], dict[str, tuple[int, ...]]] = {}

    def _spec(self, name: str) -> TensorSpec:
        dt = self.engine.get_tensor_dtype(name)
        return TensorSpec(
            name,
            _dims(self.engine.get_tensor_shape(name)),
            _NP_TYPES.get(getattr(dt, "name", str(dt)), "float32"),
        )

    def _stream_handle(self) -> tuple[Any, int]:
        if self.lane is not None:  # the server's stream: ordered after its preprocessing, no sync
            return self.lane.stream, self.lane.handle
        return self._stream, int(self._stream.handle)

    def _run(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        from edged.gpu.buffers import DeviceTensor, cuda_array_info
        from edged.gpu.context import _driver

        if self._graphs is not None:
            return self._graph_run(inputs)
        cuda = _driver()
        stream, handle = self._stream_handle()
        for spec in self.inputs:
            value = inputs[spec.name]
            if isinstance(value, np.ndarray) or not hasattr(value, "__cuda_array_interface__"):
                arr = np.ascontiguousarray(value, dtype=spec.dtype)
                buf = self.pool.get(("in", spec.name), arr.nbytes)
                cuda.memcpy_htod_async(int(buf), arr, stream)
                if self.lane is not None:
                    self.lane.count_h2d(arr.nbytes)
                ptr, shape = int(buf), arr.shape
            else:
                ptr, shape, _, _ = cuda_array_info(value)
                producer = getattr(value, "stream", None)
                if producer is not None and stream is not None and int(producer.handle) != handle:
                    self._event.record(producer)
                    stream.wait_for_event(self._event)
            if not self.ctx.set_input_shape(spec.name, tuple(shape)):
                raise ValueError(
                    f"{self.name}: input {spec.name} shape {shape} is outside the engine's profile"
                )
            self.ctx.set_tensor_address(spec.name, ptr)
        outs: dict[str, Any] = {}
        for spec in self.outputs:
            shape = _dims(self.ctx.get_tensor_shape(spec.name))
            dtype = np.dtype(spec.dtype)
            buf = self.pool.get(("out", spec.name), int(np.prod(shape)) * dtype.itemsize)
            self.ctx.set_tensor_address(spec.name, int(buf))
            outs[spec.name] = DeviceTensor(int(buf), shape, dtype, owner=buf, stream=stream)
        if not self.ctx.execute_async_v3(handle):
            raise RuntimeError(f"{self.name}: TensorRT execute_async_v3 failed")
        return outs, stream

    def _graph_run(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        """`_run` as a CUDA graph per input shape: inputs copied into the shape's fixed buffers, the
        captured execute_async_v3 replayed, outputs views of its fixed output buffers (the next call of
        that shape overwrites them, enqueued on the same stream after what reads them)."""
        from edged.gpu.buffers import DeviceTensor, cuda_array_info
        from edged.gpu.context import _driver
        from edged.gpu.graphs import CapturedGraph, CudaGraphError

        assert self._graphs is not None
        cuda = _driver()
        stream, handle = self._stream_handle()
        arrays: dict[str, Any] = {}
        shapes = []
        for spec in self.inputs:
            value = inputs[spec.name]
            if isinstance(value, np.ndarray) or not hasattr(value, "__cuda_array_interface__"):
                arrays[spec.name] = np.ascontiguousarray(value, dtype=spec.dtype)
                shapes.append(tuple(arrays[spec.name].shape))
            else:
                shapes.append(cuda_array_info(value)[1])
        key = tuple(shapes)
        bufs = {}
        for spec, shape in zip(self.inputs, shapes, strict=True):
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            buf = bufs[spec.name] = self.pool.get(("graph-in", spec.name, shape), nbytes)
            if spec.name in arrays:
                cuda.memcpy_htod_async(int(buf), arrays[spec.name], stream)
                if self.lane is not None:
                    self.lane.count_h2d(nbytes)
            else:
                value = inputs[spec.name]
                producer = getattr(value, "stream", None)
                if producer is not None and stream is not None and int(producer.handle) != handle:
                    self._event.record(producer)
                    stream.wait_for_event(self._event)
                cuda.memcpy_dtod_async(int(buf), cuda_array_info(value)[0], nbytes, stream)
        graph = self._graphs.get(key)
        outs: dict[str, Any] = {}
        if graph is None:  # first call of this shape: a plain run (TensorRT's deferred set-up), then capture
            for spec, shape in zip(self.inputs, shapes, strict=True):
                if not self.ctx.set_input_shape(spec.name, tuple(shape)):
                    raise ValueError(f"{self.name}: input {spec.name} shape {shape} is outside the profile")
                self.ctx.set_tensor_address(spec.name, int(bufs[spec.name]))
        for spec in self.outputs:
            shape = (
                _dims(self.ctx.get_tensor_shape(spec.name))
                if graph is None
                else self._out_shapes[key][spec.name]
            )
            dtype = np.dtype(spec.dtype)
            buf = self.pool.get(("graph-out", spec.name, key), int(np.prod(shape)) * dtype.itemsize)
            if graph is None:
                self.ctx.set_tensor_address(spec.name, int(buf))
            outs[spec.name] = DeviceTensor(int(buf), shape, dtype, owner=buf, stream=stream)
        if graph is not None:
            graph.launch()
            return outs, stream
        if not self.ctx.execute_async_v3(handle):
            raise RuntimeError(f"{self.name}: TensorRT execute_async_v3 failed")
        self._out_shapes[key] = {n: t.shape for n, t in outs.items()}
        try:
            self._graphs[key] = CapturedGraph(handle, lambda: self._enqueue(handle))
        except CudaGraphError as e:  # plain calls then: slower, never wrong
            log.warning("model %s: no CUDA graph for input shape %s (%s); running without", self.name, key, e)
            self._graphs = None
        return outs, stream

    def _enqueue(self, handle: int) -> None:
        if not self.ctx.execute_async_v3(handle):
            raise RuntimeError(f"{self.name}: TensorRT execute_async_v3 failed during CUDA graph capture")

    def infer_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(inputs)[0]

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        outs, _ = self._run(inputs)
        return {k: v.to_host(lane=self.lane) for k, v in outs.items()}

    def close(self) -> None:
        for graph in (self._graphs or {}).values():
            graph.close()
        self._graphs = None
        self.pool.free()
        del self.ctx


register_backend("tensorrt", TensorRTEngine, unavailable_reason)
