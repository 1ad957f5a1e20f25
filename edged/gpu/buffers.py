"""Device memory: a small DeviceTensor type, a pool sized at start, pinned staging for uploads.

Nothing here allocates on the per-frame path once the pool holds a buffer of the needed size: a buffer
grows (logged once per growth) only when a larger shape appears (a wider crop batch, a bigger camera).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.gpu.context import GpuLane, init

log = logging.getLogger(__name__)


def _driver() -> Any:
    import pycuda.driver as cuda

    return cuda


@dataclass
class DeviceTensor:
    """A dense C-contiguous array in device memory.

    `owner` keeps the memory alive (a pool allocation, an OrtValue, a cudaImage); `stream` is the
    pycuda Stream that produces the data: consumers on another stream must wait for it.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    owner: Any = None
    stream: Any = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def first(self, rows: int) -> DeviceTensor:
        """The first `rows` items along axis 0 (same memory)."""
        return DeviceTensor(
            self.ptr, (min(rows, self.shape[0]), *self.shape[1:]), self.dtype, self.owner, self.stream
        )

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        cai: dict[str, Any] = {
            "shape": tuple(self.shape),
            "typestr": self.dtype.str,
            "data": (int(self.ptr), False),
            "version": 3,
            "strides": None,
        }
        handle = int(self.stream.handle) if self.stream is not None else 0
        if handle:  # v3: consumers (CuPy, torch) make their stream wait on ours
            cai["stream"] = handle
        return cai

    def to_host(self, out: np.ndarray | None = None, lane: GpuLane | None = None) -> np.ndarray:
        """Download (waits for the producing stream). Counts the bytes on `lane` when one is given."""
        cuda = _driver()
        host = out if out is not None else np.empty(self.shape, dtype=self.dtype)
        if self.stream is not None:
            cuda.memcpy_dtoh_async(host, self.ptr, self.stream)
            self.stream.synchronize()
        else:
            cuda.memcpy_dtoh(host, self.ptr)
        if lane is not None:
            lane.count_d2h(host.nbytes)
        return host


def on_lane(tensors: Mapping[str, Any], lane: GpuLane) -> dict[str, Any]:
    """`tensors` (an engine's outputs) to be read in the order of `lane`'s stream. A device tensor made
    on another stream is waited for by the lane's stream (an event: no host wait) and carries the lane's
    stream from then on, so what reads it (reductions into buffers kept per stream, the download) runs
    on the lane. Outputs already on the lane, and anything else, pass as they are.

    A model server's engine runs on the server's lane: nothing to do. An engine warmed beside the
    serving one (a built engine, a live update's candidate) runs on the server's stream too, while its
    warm-up reads the outputs on the swap lane, from another thread: without this its reductions would
    write into the serving stream's buffers (edged.gpu.postprocess keeps one per stream)."""
    out: dict[str, Any] = {}
    waited: dict[int, Any] = {}  # producer handle -> its event (kept until the waits are enqueued)
    for name, t in tensors.items():
        producer = t.stream if isinstance(t, DeviceTensor) else None
        if producer is None or int(producer.handle) == lane.handle:
            out[name] = t
            continue
        if int(producer.handle) not in waited:
            cuda = _driver()
            event = cuda.Event(cuda.event_flags.DISABLE_TIMING)
            event.record(producer)
            lane.stream.wait_for_event(event)
            waited[int(producer.handle)] = event
        out[name] = DeviceTensor(t.ptr, t.shape, t.dtype, owner=t.owner, stream=lane.stream)
    return out


def cuda_array_info(obj: Any) -> tuple[int, tuple[int, ...], np.dtype[Any], tuple[int, ...] | None]:
    """(pointer, shape, dtype, byte strides or None) of any object with `__cuda_array_interface__`."""
    cai = obj.__cuda_array_interface__
    strides = cai.get("strides")
    return (
        int(cai["data"][0]),
        tuple(int(d) for d in cai["shape"]),
        np.dtype(cai["typestr"]),
        (tuple(int(s) for s in strides) if strides else None),
    )


class BufferPool:
    """Device buffers by key, reused across frames; `reserve` at start, `get` on the hot path."""

    def __init__(self) -> None:
        self._bufs: dict[Hashable, tuple[Any, int]] = {}
        self._lock = threading.Lock()
        self.allocated_bytes = 0

    def reserve(self, key: Hashable, nbytes: int) -> None:
        self.get(key, nbytes)

    def get(self, key: Hashable, nbytes: int) -> Any:
        """A DeviceAllocation of at least nbytes for this key (grows, never shrinks)."""
        nbytes = max(int(nbytes), 1)
        with self._lock:
            held = self._bufs.get(key)
            if held is not None and held[1] >= nbytes:
                return held[0]
            init()
            # Round up to 1 MiB so small shape changes (crop batch width) don't regrow every frame.
            size = (nbytes + (1 << 20) - 1) & ~((1 << 20) - 1) if nbytes > (1 << 16) else nbytes
            alloc = _driver().mem_alloc(size)
            if held is not None:
                log.info("GPU buffer %r grows %d -> %d bytes", key, held[1], size)
                self.allocated_bytes -= held[1]
                held[0].free()
            self._bufs[key] = (alloc, size)
            self.allocated_bytes += size
            return alloc

    def release(self, which: Callable[[Hashable], bool]) -> int:
        """Free the buffers whose key `which` accepts (their users are gone); returns the bytes freed."""
        with self._lock:
            keys = [k for k in self._bufs if which(k)]
            freed = 0
            for k in keys:
                alloc, size = self._bufs.pop(k)
                alloc.free()
                freed += size
            self.allocated_bytes -= freed
            return freed

    def free(self) -> None:
        with self._lock:
            for alloc, _ in self._bufs.values():
                alloc.free()
            self._bufs.clear()
            self.allocated_bytes = 0


class PinnedStaging:
    """A page-locked host buffer for async uploads, with an event so it is never overwritten while a
    previous copy from it may still be pending on its stream.

    The host copy can run ahead on another thread: `fill` copies into the buffer and remembers a tag (a
    frame's identity); `upload` then starts the async copy to the device, copying the host array first
    only if the last fill did not carry its tag. One lock makes the two atomic against each other."""

    def __init__(self, nbytes: int = 0) -> None:
        self._buf: np.ndarray | None = None
        self._event: Any = None
        self._filled = 0  # bytes of the last fill
        self.tag: Hashable | None = None
        self.lock = threading.Lock()
        if nbytes:
            self._ensure(nbytes)

    def _ensure(self, nbytes: int) -> np.ndarray:
        if self._buf is None or self._buf.nbytes < nbytes:
            if self._buf is not None:
                log.info("pinned staging buffer grows %d -> %d bytes", self._buf.nbytes, nbytes)
            self.wait()
            self._buf = _driver().pagelocked_empty(nbytes, np.uint8)
        return self._buf

    def wait(self) -> None:
        if self._event is not None:
            self._event.synchronize()

    def close(self) -> None:
        """Let the page-locked memory go, after any copy from it has finished."""
        with self.lock:
            self.wait()
            self._buf, self._event, self.tag = None, None, None

    def fill(self, host: np.ndarray, tag: Hashable | None = None) -> None:
        """Copy `host` into the buffer (after any pending copy from it has finished). Needs the CUDA
        context current (the event and a first allocation do)."""
        with self.lock:
            self._fill(host, tag)

    def _fill(self, host: np.ndarray, tag: Hashable | None) -> np.ndarray:
        src = np.ascontiguousarray(host)
        buf = self._ensure(src.nbytes)
        self.wait()
        np.copyto(buf[: src.nbytes], src.reshape(-1).view(np.uint8))
        self._filled, self.tag = src.nbytes, tag
        return buf

    def upload(self, host: np.ndarray, dst_ptr: int, stream: Any, tag: Hashable | None = None) -> int:
        """host -> pinned -> device (async on `stream`); with a tag the last fill carried, the staged
        copy goes up as it is. Returns the byte count."""
        with self.lock:
            buf = self._buf
            if buf is None or tag is None or tag != self.tag:
                buf = self._fill(host, tag)
            cuda = _driver()
            cuda.memcpy_htod_async(dst_ptr, buf[: self._filled], stream)
            if self._event is None:
                self._event = cuda.Event(cuda.event_flags.DISABLE_TIMING)
            self._event.record(stream)
            return self._filled
