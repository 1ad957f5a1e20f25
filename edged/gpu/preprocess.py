"""`GpuPreprocessor`: the Preprocessor protocol on the fused CUDA kernel.

Per frame: a host frame is uploaded once (pinned staging, async on the caller's lane; the copy into
page-locked memory runs ahead on the thread that submits the frame, `stage`) into its slot's device
buffer, and the device copy is cached by (camera, slot), so the detector and every crop batch of that
frame reuse it. A device frame (jetson-utils cudaImage, CuPy, torch: anything with
`__cuda_array_interface__`) crosses no bus: it is copied once on the device into its slot, because a
capture's buffers form a ring it reuses a few frames later (jetson-utils `videoSource`), while a frame
in flight may still be cropped. A slot is one device buffer (and, for host frames, one page-locked
buffer) of a camera; the camera's chain gives each frame in flight its own (`Frame.slot`), so a frame is
never overwritten while a later stage still reads it.
Each call is one kernel launch writing straight into a pooled buffer that is handed to the engine as a
`DeviceTensor`. The tensor stays valid until the next call for the same (lane, spec, kind).

Lanes: every call takes the caller's `GpuLane` (a model server passes its own): the upload and the
kernel run on its stream, the bytes are counted on it. Without one (tests, benchmarks, calibration:
the preprocessor used on its own) a call runs on a lane this preprocessor keeps per camera.

Frames born on the GPU by edged's own decoders (`edged.gpu.frames`: NVDEC's NV12, nvJPEG's RGB) own
their memory for as long as the Frame lives: they are read in place, with no copy at all. An NV12 frame
is sampled by the kernel itself (luma + chroma planes, the stream's colour matrix): no RGB frame is made.

Device frames must be complete when read: edged's own decoders synchronise their stream before handing a
frame on; a jetson-utils cudaImage's colour conversion is queued on CUDA's legacy default stream, which
the lanes' streams (created blocking, pycuda's default) wait for implicitly.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.gpu import kernels
from edged.gpu.buffers import BufferPool, DeviceTensor, PinnedStaging, cuda_array_info
from edged.gpu.context import GpuLane, _driver, gpu_thread, init
from edged.gpu.frames import Nv12Frame
from edged.preprocess.spec import Plan, PreprocessSpec, plan_crops, plan_frame
from edged.types import Frame, host_fmt


@dataclass(frozen=True)
class DeviceImage:
    """A uint8 HWC image in device memory as the kernel reads it."""

    ptr: int
    width: int
    height: int
    pitch: int  # bytes per row
    channels: int
    owner: Any = None
    # NV12 (edged.gpu.frames.Nv12Frame): the chroma plane and the YUV->RGB coefficients; ptr is luma.
    uv_ptr: int = 0
    yuv: tuple[float, ...] = ()

    @property
    def nv12(self) -> bool:
        return self.uv_ptr != 0


def device_image(obj: Any) -> DeviceImage:
    """View any uint8 HWC/HW device array (cudaImage, CuPy, DeviceTensor) or NV12 frame without copying."""
    if isinstance(obj, Nv12Frame):
        return DeviceImage(obj.ptr, obj.width, obj.height, obj.pitch, 3, obj, obj.uv_ptr, obj.coefficients)
    ptr, shape, dtype, strides = cuda_array_info(obj)
    if dtype != np.uint8:
        raise TypeError(f"device frames must be uint8, got {dtype}")
    h, w = shape[0], shape[1]
    c = shape[2] if len(shape) > 2 else 1
    if c not in (1, 3, 4):
        raise ValueError(f"device frames need 1, 3 or 4 channels, got {c}")
    pitch = w * c
    if strides is not None:
        if (len(shape) > 2 and (strides[1] != c or strides[2] != 1)) or (len(shape) == 2 and strides[1] != 1):
            raise ValueError(f"device frame rows must be packed pixels, got strides {strides}")
        pitch = strides[0]
    return DeviceImage(ptr, w, h, pitch, c, owner=obj)


def items_for(plans: Sequence[Plan]) -> np.ndarray:
    """The kernel's per-item parameters (homography + content rect) for a batch of plans."""
    items = np.zeros(len(plans), dtype=kernels.ITEM_DTYPE)
    for i, p in enumerate(plans):
        items[i]["h"] = np.asarray(p.h_out_to_src, dtype=np.float64).reshape(9).astype(np.float32)
        items[i]["rect"] = p.content
    return items


def set_sources(items: np.ndarray, srcs: Sequence[DeviceImage], swaps: Sequence[bool]) -> None:
    """Name each item's own source image (cross-camera batches, NV12 frames) in the kernel's table."""
    for i, (s, swap) in enumerate(zip(srcs, swaps, strict=True)):
        items[i]["src"] = s.ptr
        items[i]["src_dims"] = (s.width, s.height, s.pitch, s.channels, int(swap and s.channels >= 3))
        if s.nv12:
            items[i]["uv"] = s.uv_ptr
            items[i]["uv_pitch"] = s.pitch
            items[i]["yuv"] = s.yuv


def _slot(frame: Frame) -> tuple[str, int]:
    """The frame's buffer slot: the one its camera's flow gave it; outside a flow (tests, benchmarks,
    calibration: one frame at a time) two slots by parity, so the previous frame stays readable."""
    return frame.camera, frame.slot if frame.slot is not None else frame.seq % 2


def _copy_on_device(src: DeviceImage, dst_ptr: int, stream: Any) -> None:
    """Copy a (possibly pitched) device image into a packed buffer, async on `stream`."""
    copy = _driver().Memcpy2D()
    copy.set_src_device(src.ptr)
    copy.src_pitch = src.pitch
    copy.set_dst_device(dst_ptr)
    copy.dst_pitch = copy.width_in_bytes = src.width * src.channels
    copy.height = src.height
    copy(stream)


def needs_swap(spec: PreprocessSpec, fmt: str) -> bool:
    """Whether the source's channel order is not the model's (NV12 frames sample as RGB)."""
    return (spec.color == "rgb") != (host_fmt(fmt) == "rgb8")


class GpuPreprocessor:
    """Preprocessor on the fused kernel. Share one instance between all models of a camera: the
    uploaded frame is cached per camera, so det and crops of the same frame upload it once."""

    name = "kernel"

    def __init__(self, metrics: Any = None, pool: BufferPool | None = None) -> None:
        init()
        self.metrics = metrics
        self.pool = pool or BufferPool()
        self._lock = threading.Lock()
        self._pipes: dict[str, GpuLane] = {}
        self._frame_staging: dict[tuple[str, int], PinnedStaging] = {}  # per (camera, slot)
        self._param_staging: dict[str, PinnedStaging] = {}
        self._last_items: dict[tuple[str, str, PreprocessSpec], tuple[int, bytes]] = {}
        # (camera, slot) -> (seq, id(image), image): the frame that slot's device buffer holds.
        self._cache: dict[tuple[str, int], tuple[int, int, DeviceImage]] = {}
        # (camera, slot) -> an event recorded after the slot's last upload (on the uploading lane's copy
        # stream). A slot is rewritten only once its previous frame has left the camera's flow
        # (edged.pipeline.chain), i.e. after every kernel that read it has finished.
        self._uploaded: dict[tuple[str, int], Any] = {}

    # -- plumbing --------------------------------------------------------------------------------
    def own_lane(self, camera: str) -> GpuLane:
        """The lane this preprocessor keeps for `camera`: for calls that come without one."""
        with self._lock:
            if camera not in self._pipes:
                self._pipes[camera] = GpuLane(camera, metrics=self.metrics)
            return self._pipes[camera]

    def lane_for(self, lane: GpuLane | None, camera: str) -> GpuLane:
        """The caller's lane, else this preprocessor's own for `camera`."""
        return lane if lane is not None else self.own_lane(camera)

    def source(self, frame: Frame, lane: GpuLane | None = None) -> DeviceImage:
        """The frame in its slot's device buffer, on `lane` (None: this preprocessor's own lane for the
        camera): a host frame is uploaded once per (camera, seq); a device frame is copied once on the
        device, because it lives in its capture's ring of buffers (jetson-utils `videoSource`), which
        the capture reuses a few frames later while this frame may still be cropped."""
        pipe = self.lane_for(lane, frame.camera)
        if getattr(frame.image, "owned", False):  # born on the GPU in memory of its own: read in place
            return device_image(frame.image)
        slot = _slot(frame)
        cached = self._cache.get(slot)
        if cached is not None and cached[0] == frame.seq and cached[1] == id(frame.image):
            pipe.stream.wait_for_event(self._uploaded[slot])  # copied on another lane: may be in flight
            return cached[2]
        on_device = device_image(frame.image) if frame.on_device else None  # checked before allocating
        h, w, c = (on_device.height, on_device.width, on_device.channels) if on_device else frame.shape
        buf = self.pool.get((frame.camera, "frame", slot[1]), h * w * c)
        if on_device is not None:
            _copy_on_device(on_device, int(buf), pipe.copy_stream)
        else:
            tag = (frame.seq, id(frame.image))  # staged ahead by the submitting thread, usually (`stage`)
            host = self._host(frame)
            pipe.count_h2d(self._slot_staging(slot).upload(host, int(buf), pipe.copy_stream, tag))
        done = self._uploaded.get(slot)
        if done is None:
            cuda = _driver()
            done = self._uploaded[slot] = cuda.Event(cuda.event_flags.DISABLE_TIMING)
        done.record(pipe.copy_stream)
        pipe.stream.wait_for_event(done)  # the kernels on the lane's stream start after the copy
        img = DeviceImage(int(buf), w, h, w * c, c, owner=buf)
        self._cache[slot] = (frame.seq, id(frame.image), img)
        return img

    def stage(self, frame: Frame) -> None:
        """Copy a host frame into its slot's page-locked buffer now, on the calling thread (the frame
        dispatcher's, when the first model server takes the frame), so the server's batch thread only
        starts the upload: the copies run beside the engine's batches instead of between them."""
        if frame.on_device or frame.image.dtype != np.uint8:
            return  # device frames need no upload; a bad frame fails in source(), on its own request
        staging, tag = self._slot_staging(_slot(frame)), (frame.seq, id(frame.image))
        if staging.tag != tag:  # crops of a frame the detector already took: staged once
            with gpu_thread():
                staging.fill(frame.image, tag)

    def forget(self, camera: str) -> None:
        """Free the camera's frame slots (device buffers, page-locked buffers, events) and its own lane:
        a removed or renamed camera must not keep them for the daemon's lifetime. Call it only once
        every frame of the camera has left its flow (no kernel or copy still reads a slot)."""
        with self._lock:
            staging = [self._frame_staging.pop(k) for k in list(self._frame_staging) if k[0] == camera]
            for table in (self._cache, self._uploaded):
                for k in [k for k in table if k[0] == camera]:
                    del table[k]
            self._pipes.pop(camera, None)
        with gpu_thread():  # called by whoever stops the camera (a reload, a command): no CUDA context there
            for st in staging:
                st.close()
            self.pool.release(lambda key: isinstance(key, tuple) and key[:2] == (camera, "frame"))

    def _slot_staging(self, slot: tuple[str, int]) -> PinnedStaging:
        with self._lock:
            return self._frame_staging.setdefault(slot, PinnedStaging())

    @staticmethod
    def _host(frame: Frame) -> np.ndarray:
        host = np.ascontiguousarray(frame.image)
        if host.dtype != np.uint8:
            raise TypeError(f"camera {frame.camera}: frames must be uint8, got {host.dtype}")
        return host

    # -- Preprocessor protocol -------------------------------------------------------------------
    def frame(
        self, frame: Frame, spec: PreprocessSpec, lane: GpuLane | None = None
    ) -> tuple[DeviceTensor, Plan]:
        with gpu_thread():  # re-entrant: a no-op in a thread that holds the context already
            pipe = self.lane_for(lane, frame.camera)
            src = self.source(frame, pipe)
            plan = plan_frame(spec, src.width, src.height)
            return self.render(src, [plan], spec, frame.fmt, pipe, kind="frame"), plan

    def crops(
        self,
        frame: Frame,
        quads: Sequence[np.ndarray],
        spec: PreprocessSpec,
        lane: GpuLane | None = None,
    ) -> tuple[DeviceTensor, list[Plan]]:
        pipe = self.lane_for(lane, frame.camera)
        plans = plan_crops(spec, quads)
        if not plans:
            return DeviceTensor(0, spec.batch_shape(0), np.dtype(spec.dtype), stream=pipe.stream), []
        with gpu_thread():
            src = self.source(frame, pipe)
            return self.render(src, plans, spec, frame.fmt, pipe, kind="crops"), plans

    def rows(
        self,
        items: Sequence[tuple[Frame, Plan]],
        spec: PreprocessSpec,
        rows: int = 0,
        lane: GpuLane | None = None,
    ) -> DeviceTensor:
        """A model server's batch: each (frame, plan) into its row of one tensor, in one launch (every
        kernel item names its own source image); rows after the items (padding to the row bucket) are
        zeroed. Runs on `lane` (the model server's; None: this preprocessor's own lane "batch")."""
        with gpu_thread():
            pipe = self.lane_for(lane, "batch")
            srcs = [self.source(f, pipe) for f, _ in items]
            plans = [p for _, p in items]
            table = items_for(plans)
            set_sources(table, srcs, [needs_swap(spec, f.fmt) for f, _ in items])
            return self.render(srcs[0], plans, spec, items[0][0].fmt, pipe, "rows", table, rows)

    def render(
        self,
        src: DeviceImage,
        plans: Sequence[Plan],
        spec: PreprocessSpec,
        fmt: str,
        pipe: GpuLane,
        kind: str,
        items: np.ndarray | None = None,
        rows: int = 0,
    ) -> DeviceTensor:
        """One kernel launch: all plans (same output size) into one pooled batch tensor of
        max(rows, len(plans)) rows, the rows after the plans zeroed."""
        out_w, out_h = plans[0].out_w, plans[0].out_h
        if any(p.out_w != out_w or p.out_h != out_h for p in plans):
            raise ValueError("a batch needs one output size (use fixed_height, letterbox or stretch)")
        n = len(plans)
        total = max(rows, n)
        dtype = np.dtype(spec.dtype)
        shape = spec.batch_shape(total, out_w, out_h)
        row_bytes = 3 * out_h * out_w * dtype.itemsize
        out = self.pool.get((pipe.camera, "out", kind, spec), total * row_bytes)
        if items is None:
            items = items_for(plans)
            if src.nv12:  # the launch's own source parameters describe packed pixels only
                set_sources(items, [src] * n, [needs_swap(spec, fmt)] * n)
        dev_items = self.pool.get((pipe.camera, "items", kind, spec), items.nbytes)
        # A fixed camera gives the same detector plan every frame: upload parameters only on change.
        pkey = (pipe.camera, kind, spec)
        blob = items.tobytes()
        if self._last_items.get(pkey) != (int(dev_items), blob):
            staging = self._param_staging.setdefault(f"{pipe.camera}/{kind}", PinnedStaging())
            pipe.count_h2d(staging.upload(items, int(dev_items), pipe.stream))
            self._last_items[pkey] = (int(dev_items), blob)
        a, b = spec.scale_bias
        kernels.launch_preprocess(
            src_ptr=src.ptr,
            src_w=src.width,
            src_h=src.height,
            src_pitch=src.pitch,
            src_c=src.channels,
            items_ptr=int(dev_items),
            batch=n,
            dst_ptr=int(out),
            out_w=out_w,
            out_h=out_h,
            pad=spec.pad_value,
            scale=a,
            bias=b,
            swap=needs_swap(spec, fmt) and src.channels >= 3,
            nchw=spec.layout == "nchw",
            half=spec.dtype == "float16",
            stream=pipe.stream,
        )
        if total > n:
            _driver().memset_d8_async(int(out) + n * row_bytes, 0, (total - n) * row_bytes, pipe.stream)
        return DeviceTensor(int(out), shape, dtype, owner=out, stream=pipe.stream)
