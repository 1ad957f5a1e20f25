"""ONNX Runtime on the CUDA execution provider with IO binding on our device buffers.

Inputs that are already in device memory (a `DeviceTensor` from the GPU preprocessor, or anything with
`__cuda_array_interface__`) are bound by pointer — no copy; host numpy inputs are uploaded once by ORT.
Outputs are allocated on the device by ORT (its arena, no per-call cudaMalloc) and either handed out
as DeviceTensors (`infer_device`: the model server reduces them on the device and downloads them
asynchronously, edged.gpu.transfer) or downloaded here (`infer`, with pycuda, which lets other Python
threads run during the copy: ORT's own `copy_outputs_to_cpu` holds the GIL until the GPU has finished,
measured as 77 % of the GIL-holding samples of a 16-camera run on an H200).

`infer_device` does not wait for the GPU (run option `disable_synchronize_execution_providers`): it
returns once the work is enqueued on our stream, so the caller can prepare the next batch meanwhile.
Anything that reads the outputs must run on the same stream or wait for it (the DeviceTensors carry it).

The session runs on one stream (CUDA EP option `user_compute_stream`): its model server's GPU lane's,
given at construction (the server's preprocessing is on that stream too, so the engine is ordered after
it without a wait), else a stream the engine makes for itself. An input produced on another stream is
ordered with an event wait, not a host sync. ORT's own copies stay on the default stream
(`do_copy_in_default_stream=1`, ORT's recommended, race-free setting); with IO binding on device there
are no copies on the hot path except the final download. Host inputs (uploaded by ORT) and `infer`'s
downloads are counted on the lane.

One session per input shape: the CUDA EP keeps the cuDNN state of one input shape per Conv node and
rebuilds it whenever the shape changes (measured on an H200 with the PP-OCR detector at 1920x1088:
1.5-2.8 s per change with EXHAUSTIVE search, 0.13-0.3 s with DEFAULT, against 11-36 ms per call when the
shape repeats, even after every shape was run once). A model server feeds a few declared shapes in any
order, so each shape gets its own session, created the first time it is seen (the server's warm-up,
before ready); a session never sees a second shape and never re-plans. Each costs its own weights and
arena on the device, which is why the declared set is kept small.

This module replaces the `onnxruntime` backend factory: where pycuda drives a GPU (edged.gpu's context,
initialised on first use) and the CUDA EP is available it builds this engine, otherwise the host engine
from edged.infer.onnxruntime (which still uses the CUDA EP with host I/O if pycuda is missing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.infer import onnxruntime as _host
from edged.infer.base import EngineInfo, EngineOptions, ModelLoadError, register_backend

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane

log = logging.getLogger(__name__)

_preload_lock = threading.Lock()
_preloaded: list[bool] = []


def _ort() -> Any:
    import onnxruntime as ort

    with _preload_lock:
        if not _preloaded:
            # onnxruntime-gpu >= 1.21: load CUDA/cuDNN from the nvidia-* pip packages before a session.
            if hasattr(ort, "preload_dlls"):
                try:
                    ort.preload_dlls()
                except Exception as e:  # missing DLLs show up again, clearer, when the session starts
                    log.debug("onnxruntime.preload_dlls failed: %s", e)
            _preloaded.append(True)
    return ort


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def cuda_unavailable_reason() -> str | None:
    """None when ORT's CUDA EP can run here with our GPU context, else why not."""
    from edged.gpu import context

    if not context.initialized():
        # Not yet initialised (engines load before preprocessors): usable if pycuda can drive a GPU.
        reason = context.gpu_available()
        if reason:
            return reason
    try:
        ort = _ort()
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


class OrtCudaEngine:
    """One InferenceSession on the CUDA EP. `infer` accepts DeviceTensor/device arrays or numpy.

    `lane`: the GPU lane of the engine's one caller (its model server): the session runs on its stream
    and the bytes the engine moves are counted on it. None: a stream of the engine's own, nothing counted.
    """

    def __init__(self, name: str, path: Path, options: EngineOptions, lane: GpuLane | None = None) -> None:
        from edged.gpu import context

        ort = _ort()
        context.init()  # the primary context must exist before ORT creates its CUDA objects
        self.name = name
        self.device_id = int(context.device_info()["ordinal"])
        self._cuda = context._driver()
        self.lane = lane
        if lane is not None:
            # The lane's stream is read from the lane at each use, not kept here (a lane releases its
            # stream on close, while the context is current).
            self._stream: Any = None
            self.stream_handle = lane.handle
        else:
            self._stream = self._cuda.Stream()
            self.stream_handle = int(self._stream.handle)
        self._event = self._cuda.Event(self._cuda.event_flags.DISABLE_TIMING)
        cuda_opts = {
            "device_id": str(self.device_id),
            "has_user_compute_stream": "1",
            "user_compute_stream": str(self.stream_handle),
            "do_copy_in_default_stream": "1",
            # EXHAUSTIVE searches once per input shape: one session per declared shape, warmed at load.
            "cudnn_conv_algo_search": options.conv_algo_search.upper(),
            "use_tf32": "1" if options.tf32 else "0",
        }
        # CUDA graphs (ORT `enable_cuda_graph`): each shape's session replays its captured graph; its
        # inputs and outputs must stay at the same device addresses, so they live in fixed buffers
        # (`_Graphed`). The plain session of the shape only finds its output shapes.
        self.cuda_graph = options.cuda_graph
        graph_opts = {**cuda_opts, "enable_cuda_graph": "1"}
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # The GPU does the work: a CPU thread pool per session (one session per shape) would only add
        # hundreds of spinning threads that compete with capture and decoding.
        so.intra_op_num_threads = options.intra_op_threads or 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._open = lambda graph=False: ort.InferenceSession(
            str(path),
            sess_options=so,
            providers=[("CUDAExecutionProvider", graph_opts if graph else cuda_opts), "CPUExecutionProvider"],
        )
        self._graphed: dict[tuple[tuple[int, ...], ...], _Graphed] = {}
        try:
            self.session = self._open()
        except Exception as e:
            raise ModelLoadError(
                f"{path}: ONNX Runtime (CUDA) cannot load it: {str(e).strip().splitlines()[0]}"
            ) from None
        # input shape -> its own session; the first shape seen takes the session opened above.
        self._sessions: dict[tuple[tuple[int, ...], ...], Any] = {}
        used = self.session.get_providers()
        if not used or used[0] != "CUDAExecutionProvider":
            raise ModelLoadError(f"{path}: ONNX Runtime did not enable the CUDA EP (providers {used})")
        self.inputs = [_host._spec(i) for i in self.session.get_inputs()]
        self.outputs = [_host._spec(o) for o in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map or {})
        self.info = EngineInfo(
            backend="onnxruntime",
            device="cuda",
            providers=list(used),
            detail="IO binding on device buffers" + (", CUDA graphs per shape" if self.cuda_graph else ""),
        )
        self._input_dtypes = {s.name: np.dtype(s.dtype) for s in self.inputs}
        self._no_sync = ort.RunOptions()
        self._no_sync.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self._output_names = [o.name for o in self.outputs]

    def _session_for(self, inputs: Mapping[str, Any]) -> Any:
        key = tuple(
            tuple(
                int(d)
                for d in (v.shape if isinstance(v, np.ndarray) else v.__cuda_array_interface__["shape"])
            )
            for v in inputs.values()
        )
        session = self._sessions.get(key)
        if session is None:
            session = self.session if not self._sessions else self._open()
            self._sessions[key] = session
            if len(self._sessions) > 1:
                log.debug("model %s: session %d for input shape %s", self.name, len(self._sessions), key)
        return session

    def _bind(self, inputs: Mapping[str, Any]) -> Any:
        from edged.gpu.buffers import cuda_array_info

        session = self._session_for(inputs)
        io = session.io_binding()
        for name, value in inputs.items():
            if not isinstance(value, np.ndarray) and hasattr(value, "__cuda_array_interface__"):
                ptr, shape, dtype, strides = cuda_array_info(value)
                if strides is not None and strides != _c_strides(shape, dtype.itemsize):
                    raise ValueError(f"{self.name}: device input {name!r} must be C-contiguous")
                self._order_after(getattr(value, "stream", None))
                io.bind_input(name, "cuda", self.device_id, dtype.type, list(shape), ptr)
            else:
                arr = np.ascontiguousarray(value, dtype=self._input_dtypes.get(name))
                io.bind_cpu_input(name, arr)
                if self.lane is not None:
                    self.lane.count_h2d(arr.nbytes)
        for name in self._output_names:
            io.bind_output(name, "cuda", self.device_id)
        return session, io

    def _order_after(self, producer: Any) -> None:
        """Make our compute stream wait for the stream that produced an input (no host sync)."""
        if producer is None or int(producer.handle) == self.stream_handle:
            return
        self._event.record(producer)
        self._stream_object().wait_for_event(self._event)

    def _stream_object(self) -> Any:
        """The pycuda Stream our work is enqueued on: the lane's, or our own."""
        return self.lane.stream if self.lane is not None else self._stream

    def infer_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run without waiting for the GPU; outputs stay on the device as DeviceTensors produced on our
        stream (each keeps its OrtValue, hence its memory, alive)."""
        from edged.gpu.buffers import DeviceTensor

        if self.cuda_graph:
            return self._graph_run(inputs)
        session, io = self._bind(inputs)
        stream = self._stream_object()
        session.run_with_iobinding(io, self._no_sync)
        return {
            name: DeviceTensor(
                int(val.data_ptr()),
                tuple(val.shape()),
                np.dtype(_host._ORT_TYPES.get(val.data_type(), "float32")),
                owner=val,
                stream=stream,
            )
            for name, val in zip(self._output_names, io.get_outputs(), strict=True)
        }

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run; outputs downloaded to host numpy arrays (bytes counted on the lane)."""
        return {name: t.to_host(lane=self.lane) for name, t in self.infer_device(inputs).items()}

    def _graph_run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """One call through the shape's CUDA-graph session: the inputs are copied into its fixed input
        buffers on our stream, the graph runs (captured by ORT on the session's first runs, replayed
        after), the outputs are views of its fixed output buffers. The next call of the same shape
        overwrites them; it is enqueued on the same stream after whatever reads them (the model
        server's reductions and downloads), so stream order keeps them intact until read."""
        from edged.gpu.buffers import DeviceTensor, cuda_array_info

        key = self._shape_key(inputs)
        graphed = self._graphed.get(key)
        if graphed is None:
            graphed = self._graphed[key] = self._make_graphed(inputs)
        stream = self._stream_object()
        for name, value in inputs.items():
            dest = graphed.inputs[name]
            if not isinstance(value, np.ndarray) and hasattr(value, "__cuda_array_interface__"):
                ptr, shape, dtype, _strides = cuda_array_info(value)
                self._order_after(getattr(value, "stream", None))
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                self._cuda.memcpy_dtod_async(int(dest.data_ptr()), ptr, nbytes, stream)
            else:
                arr = np.ascontiguousarray(value, dtype=self._input_dtypes.get(name))
                dest.update_inplace(arr)  # a synchronous copy from host memory
                if self.lane is not None:
                    self.lane.count_h2d(arr.nbytes)
        graphed.session.run_with_iobinding(graphed.io, self._no_sync)
        return {
            name: DeviceTensor(
                int(val.data_ptr()),
                tuple(val.shape()),
                np.dtype(_host._ORT_TYPES.get(val.data_type(), "float32")),
                owner=val,
                stream=stream,
            )
            for name, val in graphed.outputs.items()
        }

    @staticmethod
    def _shape_key(inputs: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
        return tuple(
            tuple(
                int(d)
                for d in (v.shape if isinstance(v, np.ndarray) else v.__cuda_array_interface__["shape"])
            )
            for v in inputs.values()
        )

    def _make_graphed(self, inputs: Mapping[str, Any]) -> _Graphed:
        """A CUDA-graph session for this input shape: its output shapes from one run of the plain
        session, fixed input and output buffers bound once."""
        ort = _ort()
        session, io = self._bind(inputs)  # the plain session of this shape: output shapes
        session.run_with_iobinding(io)
        shapes = {n: tuple(v.shape()) for n, v in zip(self._output_names, io.get_outputs(), strict=True)}
        types = {o.name: np.dtype(o.dtype) for o in self.outputs}
        try:
            graph_session = self._open(True)
        except Exception as e:
            raise ModelLoadError(
                f"model {self.name}: ONNX Runtime cannot run it as a CUDA graph (every node must run on "
                f"the CUDA provider; set onnxruntime.cuda_graph: false): {str(e).strip().splitlines()[0]}"
            ) from None
        graph_io = graph_session.io_binding()
        ins, outs = {}, {}
        for name, shape in zip(inputs, self._shape_key(inputs), strict=True):
            ins[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                list(shape), self._input_dtypes.get(name, np.dtype(np.float32)), "cuda", self.device_id
            )
            graph_io.bind_ortvalue_input(name, ins[name])
        for name in self._output_names:
            outs[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                list(shapes[name]), types[name], "cuda", self.device_id
            )
            graph_io.bind_ortvalue_output(name, outs[name])
        log.debug("model %s: CUDA graph session for input shape %s", self.name, self._shape_key(inputs))
        return _Graphed(graph_session, graph_io, ins, outs)

    def close(self) -> None:
        self._graphed.clear()
        self._sessions.clear()
        self.session = None


class _Graphed:
    """One input shape's CUDA-graph session with its fixed, bound input and output buffers."""

    def __init__(self, session: Any, io: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        self.session, self.io, self.inputs, self.outputs = session, io, inputs, outputs


def cuda_engine_reason(options: EngineOptions) -> str | None:
    """None when `create` makes an OrtCudaEngine for these options, else why it makes a host engine."""
    wants_cuda = options.providers is None or "CUDAExecutionProvider" in options.providers
    return cuda_unavailable_reason() if wants_cuda else "CPU providers configured"


def create(name: str, path: Path, options: EngineOptions, lane: GpuLane | None = None) -> Any:
    """The `onnxruntime` backend: CUDA + IO binding (on `lane`) when a GPU context can run, else host
    memory (no lane)."""
    reason = cuda_engine_reason(options)
    if reason is None:
        return OrtCudaEngine(name, path, options, lane)
    log.debug("model %s: ONNX Runtime on host memory (%s)", name, reason)
    return _host.OnnxRuntimeEngine(name, path, options)


register_backend("onnxruntime", create, _host.unavailable_reason)
