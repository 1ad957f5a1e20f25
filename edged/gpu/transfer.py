"""Downloads into page-locked host memory that return at once: the copy runs on the producing stream,
the reader waits for it later (on another thread), and the host buffers are reused.

A model server's batch thread calls `download` right after enqueuing the engine and its reductions,
then moves on to the next batch; its decode thread calls `Download.wait()` (a CUDA event wait, which
releases the GIL, unlike ONNX Runtime's `copy_outputs_to_cpu`) and `release()` once decoded. So the
GPU runs batch k+1 while the host decodes batch k, and no Python thread blocks the others while the
bus is busy.

Ownership: one `HostBuffers` per model server. `download` is called by one thread; `wait`/`release`
by another; the free list is locked.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from edged.gpu.buffers import DeviceTensor, _driver
from edged.gpu.context import GpuLane, gpu_thread


class HostBuffers:
    """Page-locked byte buffers: one is taken per download and given back after the decode; a take
    reuses the smallest free buffer that is large enough. So the pool holds about as many buffers as
    batches in flight (batch thread, decode queue, decode thread), each of the largest size seen."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.nbytes >= nbytes]
            if fits:  # by index: list.remove would compare arrays element-wise
                return self._free.pop(min(fits, key=lambda i: self._free[i].nbytes))
        # Rounded up (4 KiB, or 1 MiB past 1 MiB) so batches of a few rows more still fit.
        step = 1 << 20 if nbytes > 1 << 20 else 1 << 12
        return _driver().pagelocked_empty(-(-max(nbytes, 1) // step) * step, np.uint8)

    def give(self, buf: np.ndarray) -> None:
        with self._lock:
            self._free.append(buf)


class Download:
    """Host copies of some device tensors, valid after `wait()` and until `release()`."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        event: Any,
        buffers: list[np.ndarray],
        owner: HostBuffers,
        keep: Any,
    ) -> None:
        self.arrays = arrays
        self._event = event  # None once the copies are known to have run
        self._buffers = buffers
        self._owner = owner
        self._keep = keep  # the device tensors: alive until their copy has run

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the copies have run (a CUDA event wait: other Python threads run meanwhile)."""
        if self._event is not None:
            with gpu_thread():  # the caller (a decode thread) may have no CUDA context current
                self._event.synchronize()
                # Dropped while the context is current: pycuda cannot destroy an event (or free memory)
                # from a thread without it, so it would leak one event per batch, with a warning.
                self._event = self._keep = None
        self._keep = None
        return self.arrays

    def release(self) -> None:
        """Give the host buffers back (the arrays must not be used any more). After a failed `wait`
        the buffers are not reused: a copy into them might still run."""
        if self._event is None:
            for buf in self._buffers:
                self._owner.give(buf)
        self._buffers = []


def download(
    tensors: Mapping[str, DeviceTensor | np.ndarray], buffers: HostBuffers, lane: GpuLane | None = None
) -> Download:
    """Enqueue the copy of every tensor into pinned host memory on its own stream; returns at once.
    Host arrays among them pass through. Bytes are counted on `lane` (the model server's GPU lane,
    shown in /metrics)."""
    cuda = _driver()
    arrays: dict[str, np.ndarray] = {}
    taken: list[np.ndarray] = []
    streams: list[Any] = []
    for name, t in tensors.items():
        if isinstance(t, np.ndarray):
            arrays[name] = t
            continue
        buf = buffers.take(t.nbytes)
        taken.append(buf)
        host = buf[: t.nbytes].view(t.dtype).reshape(t.shape)
        if t.stream is not None:
            cuda.memcpy_dtoh_async(host, t.ptr, t.stream)
            streams.append(t.stream)
        else:
            cuda.memcpy_dtoh(host, t.ptr)
        arrays[name] = host
        if lane is not None:
            lane.count_d2h(t.nbytes)
    event = None
    if streams:
        for s in streams[1:]:
            if s is not streams[0]:  # outputs of one engine share a stream; others would need waits
                raise ValueError("download: tensors from different streams")
        event = cuda.Event(cuda.event_flags.DISABLE_TIMING)
        event.record(streams[0])
    return Download(arrays, event, taken, buffers, keep=dict(tensors))
