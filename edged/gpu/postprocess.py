"""GPU reductions that shrink what crosses the bus: download results, not score tensors.

Device level (what a model server runs between the engine and the download; nothing waits here):
  `ctc_best_device`   the recognizer's [N, T, C] class scores (C = 18710 for PP-OCR: ~3 MB per crop)
                      -> the best class and its score per step, [N, T] int32 + float32 (~0.5 KB per
                      crop), which is all greedy CTC decoding needs;
  `quantize_u8_device` a probability map in [0, 1] -> bytes round(p * 255) (4x fewer bytes; a threshold
                      t on p is the threshold t * 255 on the bytes).
Host level (download included, for tests and benchmarks): `ctc_best`, `threshold_mask`; given a lane,
they run on its stream when the input has none, and count the download on it.

Results land in buffers owned by this module, one per (stream, name): they are written and read in
the order of their stream, so the next batch's kernel on that stream cannot overwrite a result before
its download (enqueued earlier on the same stream) has run.
"""

from __future__ import annotations

import numpy as np

from edged.gpu import kernels
from edged.gpu.buffers import BufferPool, DeviceTensor
from edged.gpu.context import GpuLane

_pool = BufferPool()


def _key(t: DeviceTensor, name: str) -> tuple[int, str]:
    return (int(t.stream.handle) if t.stream is not None else 0, name)


def ctc_best_device(scores: DeviceTensor, rows: int | None = None) -> tuple[DeviceTensor, DeviceTensor]:
    """[N, T, C] float32 scores (first `rows` of N) -> (argmax [rows, T] int32, max [rows, T] float32),
    on the device, enqueued on the scores' stream. Ties go to the lowest class index, like numpy."""
    if scores.dtype != np.float32 or len(scores.shape) != 3:
        raise ValueError(f"ctc_best needs [N, T, C] float32, got {scores.shape} {scores.dtype}")
    n, t, c = scores.shape
    n = n if rows is None else min(rows, n)
    idx = _pool.get(_key(scores, "ctc_idx"), n * t * 4)
    val = _pool.get(_key(scores, "ctc_val"), n * t * 4)
    kernels.launch_ctc_argmax(scores.ptr, n * t, c, int(idx), int(val), scores.stream)
    return (
        DeviceTensor(int(idx), (n, t), np.dtype(np.int32), owner=idx, stream=scores.stream),
        DeviceTensor(int(val), (n, t), np.dtype(np.float32), owner=val, stream=scores.stream),
    )


def quantize_u8_device(prob: DeviceTensor, rows: int | None = None) -> DeviceTensor:
    """A float32 map [N, ...] in [0, 1] (first `rows` of N) -> uint8 round(p * 255) of the same shape."""
    if prob.dtype != np.float32:
        raise ValueError(f"quantize_u8 needs float32, got {prob.dtype}")
    shape = prob.shape if rows is None else (min(rows, prob.shape[0]), *prob.shape[1:])
    n = int(np.prod(shape, dtype=np.int64))
    out = _pool.get(_key(prob, "u8"), n)
    kernels.launch_quantize_u8(prob.ptr, n, int(out), prob.stream)
    return DeviceTensor(int(out), tuple(shape), np.dtype(np.uint8), owner=out, stream=prob.stream)


def _on(t: DeviceTensor, lane: GpuLane | None) -> DeviceTensor:
    """`t` with a stream to run on: its own, else the lane's."""
    if t.stream is None and lane is not None:
        return DeviceTensor(t.ptr, t.shape, t.dtype, owner=t.owner, stream=lane.stream)
    return t


def ctc_best(scores: DeviceTensor, lane: GpuLane | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[N, T, C] float32 device scores -> (argmax [N, T] int64, max score [N, T] float32) on the host."""
    idx, val = ctc_best_device(_on(scores, lane))
    return idx.to_host(lane=lane).astype(np.int64), val.to_host(lane=lane)


def threshold_mask(prob: DeviceTensor, thresh: float, lane: GpuLane | None = None) -> np.ndarray:
    """float32 device map (any shape) -> bool host array of the same shape, prob > thresh."""
    if prob.dtype != np.float32:
        raise ValueError(f"threshold_mask needs float32, got {prob.dtype}")
    prob = _on(prob, lane)
    n = int(np.prod(prob.shape))
    words = (n + 31) // 32
    bits = _pool.get(_key(prob, "mask"), words * 4)
    kernels.launch_threshold_bits(prob.ptr, n, thresh, int(bits), prob.stream)
    packed = DeviceTensor(int(bits), (words,), np.dtype(np.uint32), owner=bits, stream=prob.stream).to_host(
        lane=lane
    )
    flat = np.unpackbits(packed.view(np.uint8), bitorder="little")[:n]
    return flat.astype(bool).reshape(prob.shape)
