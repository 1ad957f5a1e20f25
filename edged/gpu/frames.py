"""Frames born on the GPU: what the hardware decoders (edged.capture.nvdec, edged.capture.nvjpeg) hand the
chain, and how the few consumers that need pixels on the host (snapshots, thumbnails, a motion fallback)
get them.

- `Nv12Frame`: one NV12 picture (luma plane, then interleaved chroma) in device memory the frame owns,
  with the stream's colour matrix and range. The fused preprocessing kernel samples it directly
  (edged.gpu.kernels): no RGB frame is ever made for the models.
- `DeviceRgb`: an interleaved uint8 RGB picture in device memory the frame owns (nvImageCodec's output).
- `FrameMemory`: where a decoder copies each frame it hands over, out of its own surfaces (NVDEC reuses
  them on later decodes): a pycuda memory pool, so a frame's buffer returns to the pool when the last
  reference to the frame goes, and steady state allocates nothing from the driver.

Both frame types say `owned = True`: their memory lives as long as the Frame object, so the preprocessor
reads them in place instead of copying them out of a capture ring (as it must for jetson-utils
cudaImages). Both offer `get()` (the whole picture as a host RGB array) and `region(box)` (only the
pixels of a box: what a thumbnail shows), converted on the device by the same kernel (uint8 output)
and downloaded; host consumers treat the frame's "nv12" format as RGB (`edged.types.host_fmt`).

Threads: a decoder fills frames on its camera's capture thread (its own stream, synchronised before the
frame is published: device frames are complete when they enter the chain); `get`/`region` run on
whatever thread asks (HTTP, delivery) and make the CUDA context current themselves.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.gpu.context import _driver, gpu_thread, init
from edged.preprocess.nv12 import yuv_coefficients

_local = threading.local()  # .stream: each thread that converts for the host has its own


def _host_stream() -> Any:
    s = getattr(_local, "stream", None)
    if s is None:
        s = _local.stream = _driver().Stream()
    return s


class FrameMemory:
    """Device buffers for decoded frames, pooled (pycuda DeviceMemoryPool): freed to the pool when the
    frame holding one is garbage, reused by the next frame of the same size."""

    def __init__(self) -> None:
        init()
        from pycuda.tools import DeviceMemoryPool

        self._pool = DeviceMemoryPool()

    def allocate(self, nbytes: int) -> Any:
        return self._pool.allocate(int(nbytes))

    def close(self) -> None:
        """Give the pooled (unused) blocks back to the driver; frames still alive keep theirs."""
        with gpu_thread():
            self._pool.stop_holding()


def copy_plane(
    src: int, src_pitch: int, dst: int, dst_pitch: int, width_bytes: int, rows: int, stream: Any
) -> None:
    """A pitched device-to-device copy, async on `stream`."""
    copy = _driver().Memcpy2D()
    copy.set_src_device(int(src))
    copy.src_pitch = int(src_pitch)
    copy.set_dst_device(int(dst))
    copy.dst_pitch = int(dst_pitch)
    copy.width_in_bytes = int(width_bytes)
    copy.height = int(rows)
    copy(stream)


@dataclass(eq=False)
class Nv12Frame:
    """An NV12 picture in device memory this object owns (see the module docstring). The luma plane is
    `height` rows of `pitch` bytes at `ptr`; the chroma plane `height / 2` rows at `uv_ptr`."""

    ptr: int
    uv_ptr: int
    pitch: int
    width: int
    height: int
    matrix: str = "bt709"
    full_range: bool = False
    owner: Any = None
    owned = True

    @classmethod
    def copy_of(
        cls,
        memory: FrameMemory,
        y: int,
        uv: int,
        y_pitch: int,
        uv_pitch: int,
        width: int,
        height: int,
        stream: Any,
        matrix: str,
        full_range: bool,
    ) -> Nv12Frame:
        """A copy (async on `stream`: synchronise it before handing the frame on) of a decoder's NV12
        surface into pooled memory, packed (pitch = width)."""
        pitch = int(width)
        buf = memory.allocate(pitch * height * 3 // 2)
        copy_plane(y, y_pitch, int(buf), pitch, width, height, stream)
        copy_plane(uv, uv_pitch, int(buf) + pitch * height, pitch, width, height // 2, stream)
        return cls(
            int(buf), int(buf) + pitch * height, pitch, int(width), int(height), matrix, full_range, buf
        )

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the picture (edged.types.Frame.shape)."""
        return self.height, self.width, 3

    @property
    def coefficients(self) -> tuple[float, float, float, float, float, float]:
        return yuv_coefficients(self.matrix, self.full_range)

    def get(self) -> np.ndarray:
        """The whole picture as host RGB (height, width, 3) uint8."""
        return self.region((0.0, 0.0, float(self.width), float(self.height)))

    def region(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """The pixels of `box` (x1, y1, x2, y2, clipped to the picture, whole pixels) as host RGB uint8:
        converted on the device, only the region downloaded."""
        x1, y1, x2, y2 = _clip(box, self.width, self.height)
        w, h = max(1, x2 - x1), max(1, y2 - y1)
        return _render_host(self, x1, y1, w, h)


@dataclass(eq=False)
class DeviceRgb:
    """An interleaved uint8 RGB picture in device memory that `owner` (e.g. an nvImageCodec Image) keeps
    alive, rows `pitch` bytes apart."""

    ptr: int
    pitch: int
    width: int
    height: int
    owner: Any = None
    owned = True

    @classmethod
    def wrap(cls, image: Any) -> DeviceRgb:
        """View an object with `__cuda_array_interface__` (HWC uint8, 3 channels) without copying."""
        cai = image.__cuda_array_interface__
        shape = tuple(int(d) for d in cai["shape"])
        if len(shape) != 3 or shape[2] != 3 or np.dtype(cai["typestr"]) != np.uint8:
            raise ValueError(f"expected an HWC uint8 RGB image, got shape {shape} {cai['typestr']}")
        strides = cai.get("strides")
        pitch = int(strides[0]) if strides else shape[1] * 3
        return cls(int(cai["data"][0]), pitch, shape[1], shape[0], image)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 3

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": (self.height, self.width, 3),
            "typestr": "|u1",
            "data": (self.ptr, False),
            "strides": (self.pitch, 3, 1),
            "version": 3,
        }

    def get(self) -> np.ndarray:
        return self.region((0.0, 0.0, float(self.width), float(self.height)))

    def region(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """The pixels of `box` (clipped, whole pixels) as host RGB: a pitched copy of only that region."""
        x1, y1, x2, y2 = _clip(box, self.width, self.height)
        w, h = max(1, x2 - x1), max(1, y2 - y1)
        out = np.empty((h, w, 3), np.uint8)
        with gpu_thread():
            cuda = _driver()
            copy = cuda.Memcpy2D()
            copy.set_src_device(self.ptr + y1 * self.pitch + x1 * 3)
            copy.src_pitch = self.pitch
            copy.set_dst_host(out)
            copy.dst_pitch = copy.width_in_bytes = w * 3
            copy.height = h
            stream = _host_stream()
            copy(stream)
            stream.synchronize()
        return out


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    xa = min(max(math.floor(x1), 0), width - 1)
    ya = min(max(math.floor(y1), 0), height - 1)
    xb = min(max(math.ceil(x2), xa + 1), width)
    yb = min(max(math.ceil(y2), ya + 1), height)
    return xa, ya, xb, yb


def _render_host(frame: Nv12Frame, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Convert the region (x, y, w, h) of an NV12 frame to RGB on the device (one launch of the fused
    kernel: identity geometry, uint8 NHWC output) and download it."""
    from edged.gpu import kernels

    items = np.zeros(1, dtype=kernels.ITEM_DTYPE)
    # Output pixel (u, v) samples source pixel (u + x, v + y): an integer shift, so bilinear = exact.
    items[0]["h"] = np.array([1, 0, x, 0, 1, y, 0, 0, 1], np.float32)
    items[0]["rect"] = (0, 0, w, h)
    items[0]["src"] = frame.ptr
    items[0]["src_dims"] = (frame.width, frame.height, frame.pitch, 3, 0)
    items[0]["uv"] = frame.uv_ptr
    items[0]["uv_pitch"] = frame.pitch
    items[0]["yuv"] = frame.coefficients
    out = np.empty((h, w, 3), np.uint8)
    with gpu_thread():
        cuda = _driver()
        stream = _host_stream()
        dev_items = cuda.mem_alloc(items.nbytes)
        dev_out = cuda.mem_alloc(out.nbytes)
        try:
            cuda.memcpy_htod_async(dev_items, items, stream)
            kernels.launch_preprocess(
                src_ptr=frame.ptr,
                src_w=frame.width,
                src_h=frame.height,
                src_pitch=frame.pitch,
                src_c=3,
                items_ptr=int(dev_items),
                batch=1,
                dst_ptr=int(dev_out),
                out_w=w,
                out_h=h,
                pad=0.0,
                scale=np.ones(3, np.float32),
                bias=np.zeros(3, np.float32),
                swap=False,
                nchw=False,
                half=False,
                u8=True,
                stream=stream,
            )
            cuda.memcpy_dtoh_async(out, dev_out, stream)
            stream.synchronize()
        finally:
            dev_items.free()
            dev_out.free()
    return out
