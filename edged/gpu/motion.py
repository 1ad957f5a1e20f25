"""Motion gating's small grey frame, made on the device: a frame already in GPU memory (a jetson-utils
cudaImage, CuPy, anything with `__cuda_array_interface__`) is shrunk to `height` rows and turned grey
by one small kernel, and only that (e.g. 213x120 bytes for a 1080p frame instead of 6 MB) is
downloaded. The rest of the motion step (background, threshold, contours) stays on the CPU with OpenCV
(edged.pipeline.motion), on the small image.

The kernel matches the CPU path (`edged.pipeline.motion.small_grey`: cv2.cvtColor to grey, then
cv2.resize INTER_AREA) to within a grey level: the grey of each source pixel uses OpenCV's own
fixed-point weights (15-bit, rounded), and each output pixel is the area-weighted mean of the source
pixels it covers (fractional overlaps at its edges, as INTER_AREA does when shrinking), rounded once.

Ownership and threads: one `DeviceGrey` per camera's gate, called from that camera's loop thread only.
It makes the process's CUDA context current for the call (`gpu_thread`) and works on its own stream;
device frames must be complete when passed in (the capture side syncs, as for preprocessing). pycuda
loads on first use; `device_grey_unavailable()` says why this path cannot run (no GPU: the gate
downloads the frame and uses the CPU path).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np

from edged.gpu.context import GpuLane, _driver, gpu_available, gpu_thread

CUDA_SOURCE = r"""
// One thread per output pixel: area-weighted mean of the 8-bit grey of the source pixels it covers.
extern "C" __global__ void area_grey(
    const unsigned char* __restrict__ src, int sw, int sh, int pitch, int sc, int ri, int bi,
    unsigned char* __restrict__ dst, int dw, int dh, float fx, float fy)
{
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= dw || oy >= dh) return;
    const float x0 = ox * fx, x1 = fminf((ox + 1) * fx, (float)sw);
    const float y0 = oy * fy, y1 = fminf((oy + 1) * fy, (float)sh);
    const int xa = (int)floorf(x0), xb = min((int)ceilf(x1), sw);
    const int ya = (int)floorf(y0), yb = min((int)ceilf(y1), sh);
    float acc = 0.0f;
    for (int y = ya; y < yb; ++y) {
        const float wy = fminf((float)(y + 1), y1) - fmaxf((float)y, y0);
        if (wy <= 0.0f) continue;
        const unsigned char* row = src + (size_t)y * pitch;
        float racc = 0.0f;
        for (int x = xa; x < xb; ++x) {
            const float wx = fminf((float)(x + 1), x1) - fmaxf((float)x, x0);
            if (wx <= 0.0f) continue;
            const unsigned char* p = row + (size_t)x * sc;
            // cv2.cvtColor(..., *2GRAY) on 8-bit: 15-bit fixed point, rounded (exactly OpenCV's value).
            const int g = sc >= 3 ? (p[ri] * 9798 + p[1] * 19235 + p[bi] * 3735 + 16384) >> 15 : p[0];
            racc += wx * (float)g;
        }
        acc += wy * racc;
    }
    const float v = acc / ((x1 - x0) * (y1 - y0));
    dst[(size_t)oy * dw + ox] = (unsigned char)min(255, max(0, __float2int_rn(v)));
}
"""

_lock = threading.Lock()
_kernel: dict[str, Any] = {}
BLOCK = (32, 8, 1)


def device_grey_unavailable() -> str | None:
    """None when the device path can run here, else why not (for the gate's one log line, test skips)."""
    return gpu_available()


def _compile() -> Any:
    with _lock:
        if "fn" not in _kernel:
            from pycuda.compiler import SourceModule

            mod = SourceModule(CUDA_SOURCE, no_extern_c=True, options=["-O3"])
            fn = mod.get_function("area_grey")
            fn.prepare("PiiiiiiPiiff")
            _kernel.update(fn=fn, module=mod)
        return _kernel["fn"]


class DeviceGrey:
    """Small grey copies of one camera's device frames (see the module docstring)."""

    def __init__(self, camera: str, metrics: Any = None) -> None:
        self.camera = camera
        self.pipe = GpuLane(f"{camera}-motion", metrics=metrics)  # its own stream; counts the download
        self._out: Any = None  # device buffer, grows to the largest small frame
        self._out_bytes = 0
        self._host: np.ndarray | None = None  # pinned download buffer

    def __call__(self, image: Any, fmt: str, height: int) -> np.ndarray | None:
        """The small grey frame (uint8, `height` rows) of a device image; None when the kernel does not
        apply (the frame is smaller than the small one: INTER_AREA enlarges bilinearly; use the CPU)."""
        from edged.gpu.preprocess import device_image  # imports pycuda: only once a device frame came

        cuda = _driver()
        src = device_image(image)
        if src.nv12:  # an NV12 frame's luma plane is its grey picture (limited range: a lower contrast)
            src = dataclasses.replace(src, channels=1, uv_ptr=0)
        dw, dh = small_size(src.width, src.height, height)
        if dw > src.width or dh > src.height:
            return None
        n = dw * dh
        with gpu_thread():
            if n > self._out_bytes:
                self._out = cuda.mem_alloc(n)
                self._out_bytes = n
                self._host = cuda.pagelocked_empty(n, np.uint8)
            assert self._host is not None
            # Source channel positions of red and blue: bgr8 frames keep blue first (RGBA counts as rgb).
            red, blue = (0, 2) if fmt == "rgb8" else (2, 0)
            grid = ((dw + BLOCK[0] - 1) // BLOCK[0], (dh + BLOCK[1] - 1) // BLOCK[1], 1)
            _compile().prepared_async_call(
                grid,
                BLOCK,
                self.pipe.stream,
                src.ptr,
                src.width,
                src.height,
                src.pitch,
                src.channels,
                red,
                blue,
                int(self._out),
                dw,
                dh,
                np.float32(src.width / dw),
                np.float32(src.height / dh),
            )
            host = self._host[:n]
            cuda.memcpy_dtoh_async(host, self._out, self.pipe.stream)
            self.pipe.stream.synchronize()
        self.pipe.count_d2h(n)
        return host.reshape(dh, dw).copy()

    def close(self) -> None:
        self.pipe.close()


def small_size(width: int, height: int, rows: int) -> tuple[int, int]:
    """(width, height) of the small frame: `rows` high, the frame's aspect (as the CPU path rounds it)."""
    return max(1, round(width * rows / height)), rows
