"""GPU post-processing that shrinks what crosses the bus: download results, not score tensors.

`ctc_best`: the recognizer's [N, T, C] class scores (C = 18710 for PP-OCR: ~18 MB for a batch of 6)
reduced on the GPU to the best class and its score per step, [N, T] int32 + float32 (~2 KB), which is
all greedy CTC decoding needs. `threshold_mask`: a probability map > threshold as a packed bit mask
(1/32 of the map's bytes), unpacked on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edged.gpu import kernels
from edged.gpu.buffers import BufferPool, DeviceTensor
from edged.gpu.context import GpuLane, current_pipeline

_pool = BufferPool()


def _stream_and_pipe(t: DeviceTensor, pipe: GpuLane | None) -> tuple[Any, GpuLane | None]:
    pipe = pipe or current_pipeline()
    stream = t.stream if t.stream is not None else (pipe.stream if pipe is not None else None)
    return stream, pipe


def ctc_best(scores: DeviceTensor, pipe: GpuLane | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[N, T, C] float32 device scores -> (argmax [N, T] int64, max score [N, T] float32) on the host.

    Ties go to the lowest class index, like numpy.argmax.
    """
    if scores.dtype != np.float32 or len(scores.shape) != 3:
        raise ValueError(f"ctc_best needs [N, T, C] float32, got {scores.shape} {scores.dtype}")
    n, t, c = scores.shape
    rows = n * t
    stream, pipe = _stream_and_pipe(scores, pipe)
    key = pipe.camera if pipe is not None else ""
    idx = _pool.get((key, "ctc_idx"), rows * 4)
    val = _pool.get((key, "ctc_val"), rows * 4)
    kernels.launch_ctc_argmax(scores.ptr, rows, c, int(idx), int(val), stream)
    best = DeviceTensor(int(idx), (n, t), np.dtype(np.int32), owner=idx, stream=stream).to_host(pipeline=pipe)
    conf = DeviceTensor(int(val), (n, t), np.dtype(np.float32), owner=val, stream=stream).to_host(
        pipeline=pipe
    )
    return best.astype(np.int64), conf


def threshold_mask(prob: DeviceTensor, thresh: float, pipe: GpuLane | None = None) -> np.ndarray:
    """float32 device map (any shape) -> bool host array of the same shape, prob > thresh."""
    if prob.dtype != np.float32:
        raise ValueError(f"threshold_mask needs float32, got {prob.dtype}")
    n = int(np.prod(prob.shape))
    words = (n + 31) // 32
    stream, pipe = _stream_and_pipe(prob, pipe)
    key = pipe.camera if pipe is not None else ""
    bits = _pool.get((key, "mask"), words * 4)
    kernels.launch_threshold_bits(prob.ptr, n, thresh, int(bits), stream)
    packed = DeviceTensor(int(bits), (words,), np.dtype(np.uint32), owner=bits, stream=stream).to_host(
        pipeline=pipe
    )
    flat = np.unpackbits(packed.view(np.uint8), bitorder="little")[:n]
    return flat.astype(bool).reshape(prob.shape)
