"""From one engine call to host outputs, moving as few bytes as the decoder allows.

On a GPU engine (one with `infer_device`): the engine's outputs stay on the device, the decoder's
`reduce_on_device` shrinks them there (PP-OCR: the detector map as bytes, the recognizer's best class
per step instead of every class score), and what is left is copied asynchronously into page-locked
host memory (edged.gpu.transfer). Nothing here waits for the GPU: the model server's batch thread
enqueues batch k and goes on to prepare batch k+1 while the decode thread waits for batch k's copy.
On a host engine the outputs are already host arrays.

`Outputs.wait()` gives the host arrays (first `rows` items only: padding rows never cross the bus);
`release()` hands page-locked buffers back once decoded. The reductions and the copies run on the
caller's GPU lane (the model server's, passed in), and the bytes that cross are counted on it
(edged_gpu_d2h_bytes_total in /metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edged.decoders.base import Decoder
from edged.infer.base import Engine

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane


class Outputs(Protocol):
    # The dict `wait()` returns (its arrays are filled once the copy has run): an identity that marks
    # the batch without waiting (edged.serving.slot.decoder).
    arrays: dict[str, np.ndarray]

    def wait(self) -> dict[str, np.ndarray]: ...

    def release(self) -> None: ...


class HostOutputs:
    """Outputs that are host arrays already."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def wait(self) -> dict[str, np.ndarray]:
        return self.arrays

    def release(self) -> None:
        pass


def to_host(value: Any, lane: GpuLane | None = None) -> np.ndarray:
    """A host array of `value`; a DeviceTensor's download is counted on `lane`."""
    if isinstance(value, np.ndarray):
        return value
    getter = getattr(value, "get", None)  # device arrays (CuPy) download with .get()
    if callable(getter):
        return np.asarray(getter())
    to_host_method = getattr(value, "to_host", None)  # edged.gpu.buffers.DeviceTensor
    if callable(to_host_method):
        return np.asarray(to_host_method(lane=lane))
    return np.asarray(value)


def run_engine(
    engine: Engine,
    decoder: Decoder,
    inputs: Mapping[str, Any],
    rows: int,
    buffers: Any = None,
    lane: GpuLane | None = None,
) -> Outputs:
    """Run `engine` once and start bringing the first `rows` items of its outputs to the host.
    `buffers`: the caller's edged.gpu.transfer.HostBuffers (page-locked, reused); None: download
    synchronously, as a host engine does. `lane`: the caller's GPU lane: the outputs are reduced and
    copied on its stream (edged.gpu.buffers.on_lane) and the bytes counted on it."""
    infer_device = getattr(engine, "infer_device", None)
    if buffers is None or infer_device is None:
        return HostOutputs({k: to_host(v, lane)[:rows] for k, v in engine.infer(inputs).items()})
    from edged.gpu.buffers import on_lane
    from edged.gpu.transfer import download

    device = infer_device(inputs)
    if lane is not None:
        device = on_lane(device, lane)
    reduced = decoder.reduce_on_device(device, rows)
    if reduced is None:
        reduced = {k: v.first(rows) for k, v in device.items()}
    return download(reduced, buffers, lane)
