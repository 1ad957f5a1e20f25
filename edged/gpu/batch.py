"""Device-side batching: copy several cameras' input tensors into one pooled batch buffer.

Used by edged.infer.batching for cross-camera batches of device tensors: each request's tensor was
written by its camera's stream, so the copy stream waits for each producer (events, no host sync),
then copies device-to-device into consecutive rows of one buffer (a few MB at ~3 TB/s on an H100).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from edged.gpu.buffers import BufferPool, DeviceTensor, cuda_array_info
from edged.gpu.context import _driver, gpu_thread


class DeviceConcat:
    def __init__(self) -> None:
        self._pool = BufferPool()
        self._stream: Any = None
        self._event: Any = None
        self._lock = threading.Lock()

    def __call__(self, key: Any, tensors: Sequence[Any], total_rows: int = 0) -> DeviceTensor:
        """Rows of `tensors` in order, zero rows after them up to `total_rows`."""
        cuda = _driver()
        with gpu_thread(), self._lock:
            if self._stream is None:
                self._stream = cuda.Stream()
                self._event = cuda.Event(cuda.event_flags.DISABLE_TIMING)
            infos = [cuda_array_info(t) for t in tensors]
            dtype = infos[0][2]
            rows = max(total_rows, sum(shape[0] for _, shape, _, _ in infos))
            shape = (rows, *infos[0][1][1:])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            buf = self._pool.get(key, nbytes)
            offset = 0
            for t, (ptr, tshape, tdtype, _) in zip(tensors, infos, strict=True):
                producer = getattr(t, "stream", None)
                if producer is not None:
                    self._event.record(producer)
                    self._stream.wait_for_event(self._event)
                size = int(np.prod(tshape, dtype=np.int64)) * tdtype.itemsize
                cuda.memcpy_dtod_async(int(buf) + offset, ptr, size, self._stream)
                offset += size
            if offset < nbytes:
                cuda.memset_d8_async(int(buf) + offset, 0, nbytes - offset, self._stream)
            return DeviceTensor(int(buf), shape, dtype, owner=buf, stream=self._stream)
