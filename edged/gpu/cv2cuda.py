"""The cv2.cuda implementation of the Preprocessor protocol (`preprocess.device: cv2cuda`).

It reads the same device frame as the kernel path (shares a GpuPreprocessor's upload cache), wraps it
with `createGpuMatFromCudaMemory` (no copy), runs on the caller's lane's stream (else the kernel
preprocessor's own lane for the camera) through `cv2.cuda.wrapStream`,
and writes into the same pooled engine-input buffers: warpAffine (affine plans) or warpPerspective (quads),
split into planes, then `convertTo(x*a+b)` per channel straight into each output plane, so the channel
swap is only a choice of plane. Several launches per image (the fused kernel does one per batch), and the
warps quantize source coordinates (1/32 pixel) like CPU warpPerspective: compare with image-level bounds.
Available only where OpenCV was built with CUDA (`cv2.cuda.getCudaEnabledDeviceCount() > 0`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from edged.gpu.buffers import DeviceTensor
from edged.gpu.context import GpuLane
from edged.gpu.preprocess import DeviceImage, GpuPreprocessor, needs_swap
from edged.preprocess.spec import Plan, PreprocessSpec, plan_crops, plan_frame
from edged.types import Frame


def _cv2() -> Any:
    import cv2

    return cv2


def unavailable_reason() -> str | None:
    try:
        cv2 = _cv2()
    except ImportError as e:
        return f"OpenCV is not importable ({e})"
    if not hasattr(cv2, "cuda"):
        return "this OpenCV build has no cv2.cuda module"
    try:
        n = int(cv2.cuda.getCudaEnabledDeviceCount())
    except Exception as e:
        return f"cv2.cuda.getCudaEnabledDeviceCount() failed ({e})"
    return None if n > 0 else "OpenCV was built without CUDA (cv2.cuda.getCudaEnabledDeviceCount() == 0)"


def _is_affine(h: np.ndarray) -> bool:
    return bool(abs(h[2, 0]) < 1e-12 and abs(h[2, 1]) < 1e-12 and abs(h[2, 2] - 1.0) < 1e-12)


class Cv2CudaPreprocessor:
    name = "cv2cuda"

    def __init__(self, base: GpuPreprocessor) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.base = base
        self._streams: dict[int, Any] = {}
        self._mats: dict[Hashable, Any] = {}  # scratch GpuMats, allocated once per shape

    def _stream(self, pipe: GpuLane) -> Any:
        # cv::cuda::Stream is not thread-safe: one wrapper per lane.
        if pipe.handle not in self._streams:
            self._streams[pipe.handle] = _cv2().cuda.wrapStream(pipe.handle)
        return self._streams[pipe.handle]

    def _scratch(self, key: Hashable, rows: int, cols: int, typ: int) -> Any:
        mat = self._mats.get(key)
        if mat is None or mat.size() != (cols, rows) or mat.type() != typ:
            mat = _cv2().cuda.GpuMat(rows, cols, typ)
            self._mats[key] = mat
        return mat

    def stage(self, frame: Frame) -> None:
        self.base.stage(frame)

    def forget(self, camera: str) -> None:
        self.base.forget(camera)

    def frame(
        self, frame: Frame, spec: PreprocessSpec, lane: GpuLane | None = None
    ) -> tuple[DeviceTensor, Plan]:
        if frame.fmt == "nv12":  # cv2.cuda has no NV12 sampler: the fused kernel reads the planes itself
            return self.base.frame(frame, spec, lane)
        pipe = self.base.lane_for(lane, frame.camera)
        src = self.base.source(frame, pipe)
        plan = plan_frame(spec, src.width, src.height)
        return self._render(src, [plan], spec, frame.fmt, pipe, "frame"), plan

    def rows(
        self,
        items: Sequence[tuple[Frame, Plan]],
        spec: PreprocessSpec,
        rows: int = 0,
        lane: GpuLane | None = None,
    ) -> DeviceTensor:
        """Rows of one source image (a camera's crops) go through cv2.cuda; rows of several images take
        the fused kernel: cv2.cuda has no call that reads several sources at once, and a launch per
        image is what batching is meant to avoid."""
        frame = items[0][0]
        if rows > len(items) or frame.fmt == "nv12" or any(f is not frame for f, _ in items):
            return self.base.rows(items, spec, rows, lane)
        pipe = self.base.lane_for(lane, frame.camera)
        src = self.base.source(frame, pipe)
        return self._render(src, [p for _, p in items], spec, frame.fmt, pipe, "rows")

    def crops(
        self,
        frame: Frame,
        quads: Sequence[np.ndarray],
        spec: PreprocessSpec,
        lane: GpuLane | None = None,
    ) -> tuple[DeviceTensor, list[Plan]]:
        plans = plan_crops(spec, quads)
        if not plans or frame.fmt == "nv12":
            return self.base.crops(frame, quads, spec, lane)
        pipe = self.base.lane_for(lane, frame.camera)
        src = self.base.source(frame, pipe)
        return self._render(src, plans, spec, frame.fmt, pipe, "crops"), plans

    def _render(
        self,
        src: DeviceImage,
        plans: Sequence[Plan],
        spec: PreprocessSpec,
        fmt: str,
        pipe: GpuLane,
        kind: str,
    ) -> DeviceTensor:
        cv2 = _cv2()
        s = self._stream(pipe)
        out_w, out_h = plans[0].out_w, plans[0].out_h
        n = len(plans)
        dtype = np.dtype(spec.dtype)
        el = dtype.itemsize
        depth = cv2.CV_16F if spec.dtype == "float16" else cv2.CV_32F
        shape = spec.batch_shape(n, out_w, out_h)
        out = self.base.pool.get((pipe.camera, "cv2out", kind, spec), n * 3 * out_h * out_w * el)
        base = int(out)
        gsrc = cv2.cuda.createGpuMatFromCudaMemory(
            src.height, src.width, cv2.CV_8UC(src.channels), src.ptr, src.pitch
        )
        if src.channels != 3:
            code = cv2.COLOR_GRAY2BGR if src.channels == 1 else cv2.COLOR_BGRA2BGR
            gsrc = cv2.cuda.cvtColor(
                gsrc,
                code,
                dst=self._scratch(("bgr", pipe.handle), src.height, src.width, cv2.CV_8UC3),
                stream=s,
            )
        a, b = spec.scale_bias
        pad_vals = [float(spec.pad_value * a[k] + b[k]) for k in range(3)]
        # Output channel k comes from source plane order[k].
        order = (2, 1, 0) if needs_swap(spec, fmt) else (0, 1, 2)
        plane = out_h * out_w
        for i, plan in enumerate(plans):
            x, y, cw, ch = plan.content
            padded = (cw, ch) != (out_w, out_h)
            to_content = np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)
            hc = plan.h_out_to_src @ to_content
            content = self._scratch(("content", pipe.handle, kind, i % 2, cw, ch), ch, cw, cv2.CV_8UC3)
            # Not cv2.cuda.resize: at integer downscales it does not sample at (x + 0.5) * s - 0.5 as the
            # contract says (measured on an H100: p99 28 levels off on a smooth 1080p frame scaled by 1/3).
            # warpAffine with the plan's own matrix samples where the spec says.
            if _is_affine(hc):
                cv2.cuda.warpAffine(
                    gsrc,
                    hc[:2],
                    (cw, ch),
                    dst=content,
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                    stream=s,
                )
            else:
                cv2.cuda.warpPerspective(
                    gsrc,
                    hc,
                    (cw, ch),
                    dst=content,
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                    stream=s,
                )
            planes = [self._scratch(("plane", pipe.handle, k), ch, cw, cv2.CV_8UC1) for k in range(3)]
            cv2.cuda.split(content, planes, s)
            if spec.layout == "nchw":
                for k in range(3):
                    ptr = base + ((i * 3 + k) * plane) * el
                    if padded:
                        full = cv2.cuda.createGpuMatFromCudaMemory(
                            out_h, out_w, cv2.CV_MAKETYPE(depth, 1), ptr, out_w * el
                        )
                        full.setTo(pad_vals[k], stream=s)
                    dst = cv2.cuda.createGpuMatFromCudaMemory(
                        ch, cw, cv2.CV_MAKETYPE(depth, 1), ptr + (y * out_w + x) * el, out_w * el
                    )
                    planes[order[k]].convertTo(cv2.CV_MAKETYPE(depth, 1), float(a[k]), float(b[k]), s, dst)
            else:
                ptr = base + (i * plane) * 3 * el
                if padded:
                    full = cv2.cuda.createGpuMatFromCudaMemory(
                        out_h, out_w, cv2.CV_MAKETYPE(depth, 3), ptr, out_w * 3 * el
                    )
                    full.setTo((*pad_vals, 0.0), stream=s)
                fplanes = []
                for k in range(3):
                    f = self._scratch(
                        ("fplane", pipe.handle, k, spec.dtype), ch, cw, cv2.CV_MAKETYPE(depth, 1)
                    )
                    planes[order[k]].convertTo(cv2.CV_MAKETYPE(depth, 1), float(a[k]), float(b[k]), s, f)
                    fplanes.append(f)
                dst = cv2.cuda.createGpuMatFromCudaMemory(
                    ch, cw, cv2.CV_MAKETYPE(depth, 3), ptr + (y * out_w + x) * 3 * el, out_w * 3 * el
                )
                cv2.cuda.merge(fplanes, dst, s)
        return DeviceTensor(base, shape, dtype, owner=out, stream=pipe.stream)
