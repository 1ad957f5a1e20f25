"""Fused CUDA kernels (pycuda SourceModule, compiled once per process and cached).

`preprocess`: for every output pixel of every batch item (blockIdx.z), if it lies inside the item's
content rectangle, map it through the item's 3x3 output->source homography (pixel-centre convention,
as edged.preprocess.spec defines) and sample the uint8 HWC source bilinearly with coordinates clamped
to the image (= cv2 INTER_LINEAR + BORDER_REPLICATE), else use pad_value; swap channels if asked;
x*a+b per channel; store NCHW or NHWC, fp32 or fp16 (or uint8, for host images: snapshots,
thumbnails), straight into the engine's input buffer.
One launch per frame, one launch for a whole batch of crops (axis boxes and rotated quads alike), and
one launch for a cross-camera batch of frames (each item then names its own source image).

NV12 sources (hardware decoders' output): an item whose `uv` plane is set samples the luma plane and
the interleaved chroma plane itself. Each of the four bilinear taps is converted to RGB first (the
chroma of its 2x2 block, the item's 6 coefficients of edged.preprocess.nv12.yuv_coefficients, clamped
to 0..255), then the taps are blended: the same as converting the frame with OpenCV and sampling that,
without an RGB frame in between.

Post-processing kernels (download results, not maps): `ctc_argmax` reduces the recognizer's
[rows, classes] scores to (argmax, max) per row; `threshold_bits` packs a probability map > threshold
into a bit mask (32 pixels per uint32, LSB first).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

# One item of a batch: homography (row-major, float32), content rect (x, y, w, h) and, for batches of
# frames from several cameras, the item's own source image (src = 0: the launch's source) as
# (width, height, pitch, channels, swap); for an NV12 source also its chroma plane (uv, uv_pitch) and
# YUV->RGB coefficients (yuv). align=True lays it out as the C struct `Item` below.
ITEM_DTYPE = np.dtype(
    [
        ("h", np.float32, (9,)),
        ("rect", np.int32, (4,)),
        ("src", np.uint64),
        ("src_dims", np.int32, (5,)),
        ("uv", np.uint64),
        ("uv_pitch", np.int32),
        ("yuv", np.float32, (6,)),
    ],
    align=True,
)

CUDA_SOURCE = r"""
#include <cuda_fp16.h>

struct Item {
    float h[9]; int cx, cy, cw, ch; unsigned long long src; int sw, sh, spitch, sc, swap;
    unsigned long long uv; int uvpitch; float yuv[6];
};

// OUT: 0 fp32, 1 fp16, 2 uint8 (rounded, clamped: host images).
template <int OUT>
__device__ __forceinline__ void put(void* dst, size_t i, float v) {
    if (OUT == 1) reinterpret_cast<__half*>(dst)[i] = __float2half_rn(v);
    else if (OUT == 2) reinterpret_cast<unsigned char*>(dst)[i] = (unsigned char)__float2uint_rn(fminf(fmaxf(v, 0.0f), 255.0f));
    else reinterpret_cast<float*>(dst)[i] = v;
}

// One NV12 pixel as RGB: its luma, the chroma of its 2x2 block, clamped like an 8-bit conversion.
__device__ __forceinline__ void nv12_rgb(const unsigned char* __restrict__ y, int ypitch,
                                         const unsigned char* __restrict__ uv, int uvpitch,
                                         int px, int py, const float* k, float* rgb) {
    const float l = k[0] * fmaxf((float)__ldg(y + (size_t)py * ypitch + px) - k[1], 0.0f);
    const unsigned char* c = uv + (size_t)(py >> 1) * uvpitch + (px >> 1) * 2;
    const float u = (float)__ldg(c) - 128.0f, v = (float)__ldg(c + 1) - 128.0f;
    rgb[0] = fminf(fmaxf(l + k[2] * v, 0.0f), 255.0f);
    rgb[1] = fminf(fmaxf(l - k[3] * u - k[4] * v, 0.0f), 255.0f);
    rgb[2] = fminf(fmaxf(l + k[5] * u, 0.0f), 255.0f);
}

template <bool NCHW, int OUT>
__device__ __forceinline__ void preprocess(
    const unsigned char* __restrict__ src, int src_w, int src_h, int src_pitch, int src_c,
    const Item* __restrict__ items, void* __restrict__ dst, int out_w, int out_h,
    float pad, float a0, float a1, float a2, float b0, float b1, float b2, int swap)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    if (x >= out_w || y >= out_h) return;
    const Item* it = items + n;  // same address for the whole block: a broadcast load
    if (it->src) {  // a cross-camera batch (or an NV12 source): every item samples its own frame
        src = reinterpret_cast<const unsigned char*>(it->src);
        src_w = it->sw; src_h = it->sh; src_pitch = it->spitch; src_c = it->sc; swap = it->swap;
    }
    float v0 = pad, v1 = pad, v2 = pad;
    if (x >= it->cx && x < it->cx + it->cw && y >= it->cy && y < it->cy + it->ch) {
        const float fx = (float)x, fy = (float)y;
        const float iw = 1.0f / (it->h[6] * fx + it->h[7] * fy + it->h[8]);
        float sx = (it->h[0] * fx + it->h[1] * fy + it->h[2]) * iw;
        float sy = (it->h[3] * fx + it->h[4] * fy + it->h[5]) * iw;
        // Beyond the border every tap replicates the edge, so clamping the coordinate first is exact
        // and keeps the int conversion safe for wild homographies.
        sx = fminf(fmaxf(sx, -1.0f), (float)src_w);
        sy = fminf(fmaxf(sy, -1.0f), (float)src_h);
        const float x0f = floorf(sx), y0f = floorf(sy);
        const float ax = sx - x0f, ay = sy - y0f;
        const int x0 = (int)x0f, y0 = (int)y0f;
        const int xa = min(max(x0, 0), src_w - 1), xb = min(max(x0 + 1, 0), src_w - 1);
        const int ya = min(max(y0, 0), src_h - 1), yb = min(max(y0 + 1, 0), src_h - 1);
        float v[3];
        if (it->uv) {  // NV12: convert each tap, then blend (see the module docstring)
            const unsigned char* uvp = reinterpret_cast<const unsigned char*>(it->uv);
            float t00[3], t01[3], t10[3], t11[3];
            nv12_rgb(src, src_pitch, uvp, it->uvpitch, xa, ya, it->yuv, t00);
            nv12_rgb(src, src_pitch, uvp, it->uvpitch, xb, ya, it->yuv, t01);
            nv12_rgb(src, src_pitch, uvp, it->uvpitch, xa, yb, it->yuv, t10);
            nv12_rgb(src, src_pitch, uvp, it->uvpitch, xb, yb, it->yuv, t11);
            #pragma unroll
            for (int c = 0; c < 3; ++c) {
                const float top = t00[c] + (t01[c] - t00[c]) * ax;
                const float bot = t10[c] + (t11[c] - t10[c]) * ax;
                v[c] = top + (bot - top) * ay;
            }
        } else {
            const unsigned char* r0 = src + (size_t)ya * src_pitch;
            const unsigned char* r1 = src + (size_t)yb * src_pitch;
            const int pa = xa * src_c, pb = xb * src_c;
            #pragma unroll
            for (int c = 0; c < 3; ++c) {
                const int cs = src_c >= 3 ? c : 0;  // gray sources feed all three channels
                const float p00 = __ldg(r0 + pa + cs), p01 = __ldg(r0 + pb + cs);
                const float p10 = __ldg(r1 + pa + cs), p11 = __ldg(r1 + pb + cs);
                const float top = p00 + (p01 - p00) * ax;
                const float bot = p10 + (p11 - p10) * ax;
                v[c] = top + (bot - top) * ay;
            }
        }
        v0 = v[0]; v1 = v[1]; v2 = v[2];
    }
    const float o0 = (swap ? v2 : v0) * a0 + b0;
    const float o1 = v1 * a1 + b1;
    const float o2 = (swap ? v0 : v2) * a2 + b2;
    if (NCHW) {
        const size_t plane = (size_t)out_w * out_h;
        const size_t base = (size_t)n * 3 * plane + (size_t)y * out_w + x;
        put<OUT>(dst, base, o0);
        put<OUT>(dst, base + plane, o1);
        put<OUT>(dst, base + 2 * plane, o2);
    } else {
        const size_t base = (((size_t)n * out_h + y) * out_w + x) * 3;
        put<OUT>(dst, base, o0);
        put<OUT>(dst, base + 1, o1);
        put<OUT>(dst, base + 2, o2);
    }
}

#define PP_ENTRY(NAME, NCHW, OUT)                                                               \
extern "C" __global__ void NAME(                                                                \
    const unsigned char* __restrict__ src, int src_w, int src_h, int src_pitch, int src_c,     \
    const Item* __restrict__ items, void* __restrict__ dst, int out_w, int out_h,              \
    float pad, float a0, float a1, float a2, float b0, float b1, float b2, int swap) {          \
    preprocess<NCHW, OUT>(src, src_w, src_h, src_pitch, src_c, items, dst, out_w, out_h,       \
                           pad, a0, a1, a2, b0, b1, b2, swap);                                 \
}
PP_ENTRY(pp_nchw_f32, true, 0)
PP_ENTRY(pp_nchw_f16, true, 1)
PP_ENTRY(pp_nhwc_f32, false, 0)
PP_ENTRY(pp_nhwc_f16, false, 1)
PP_ENTRY(pp_nhwc_u8, false, 2)

// One block per row: argmax and max over `classes` scores (recognizer output [N*T, C]).
extern "C" __global__ void ctc_argmax(const float* __restrict__ scores, int rows, int classes,
                                      int* __restrict__ idx_out, float* __restrict__ val_out) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* p = scores + (size_t)row * classes;
    float best = -3.402823466e38f;
    int bi = 0x7fffffff;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) {
        const float v = p[c];
        if (v > best) { best = v; bi = c; }  // strided: the first max per thread wins
    }
    // Warp then block reduction; ties resolve to the lowest index (numpy argmax semantics).
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_down_sync(0xffffffffu, best, off);
        const int oi = __shfl_down_sync(0xffffffffu, bi, off);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sv[warp] = best; si[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        const int nw = (blockDim.x + 31) >> 5;
        best = lane < nw ? sv[lane] : -3.402823466e38f;
        bi = lane < nw ? si[lane] : 0x7fffffff;
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_down_sync(0xffffffffu, best, off);
            const int oi = __shfl_down_sync(0xffffffffu, bi, off);
            if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
        }
        if (lane == 0) { idx_out[row] = bi; val_out[row] = best; }
    }
}

// Bit i of the mask (word i/32, bit i%32) = prob[i] > thr. n need not be a multiple of 32.
extern "C" __global__ void threshold_bits(const float* __restrict__ prob, int n, float thr,
                                          unsigned int* __restrict__ bits) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const bool on = i < n && prob[i] > thr;
    const unsigned int word = __ballot_sync(0xffffffffu, on);
    if ((threadIdx.x & 31) == 0 && i < n) bits[i >> 5] = word;
}

// A probability map in [0, 1] as bytes: round(p * 255), clamped. 4x fewer bytes to download; a
// threshold t on p is the threshold t * 255 on the bytes (exact except at p == t).
extern "C" __global__ void quantize_u8(const float* __restrict__ src, int n,
                                       unsigned char* __restrict__ dst) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = (unsigned char)__float2uint_rn(fminf(fmaxf(src[i], 0.0f), 1.0f) * 255.0f);
}
"""

_lock = threading.Lock()
_module: dict[str, Any] = {}


def _compile() -> dict[str, Any]:
    """Compile once per process (pycuda caches the cubin on disk too) and prepare every entry point."""
    with _lock:
        if _module:
            return _module
        from pycuda.compiler import SourceModule

        from edged.gpu.context import init

        init()
        mod = SourceModule(CUDA_SOURCE, no_extern_c=True, options=["-O3"])
        fmt = "PiiiiPPii" + "f" * 7 + "i"
        for name in ("pp_nchw_f32", "pp_nchw_f16", "pp_nhwc_f32", "pp_nhwc_f16", "pp_nhwc_u8"):
            fn = mod.get_function(name)
            fn.prepare(fmt)
            _module[name] = fn
        argmax = mod.get_function("ctc_argmax")
        argmax.prepare("PiiPP")
        bits = mod.get_function("threshold_bits")
        bits.prepare("PifP")
        quant = mod.get_function("quantize_u8")
        quant.prepare("PiP")
        _module.update(ctc_argmax=argmax, threshold_bits=bits, quantize_u8=quant, module=mod)
        return _module


BLOCK = (32, 8, 1)


def launch_preprocess(
    *,
    src_ptr: int,
    src_w: int,
    src_h: int,
    src_pitch: int,
    src_c: int,
    items_ptr: int,
    batch: int,
    dst_ptr: int,
    out_w: int,
    out_h: int,
    pad: float,
    scale: np.ndarray,
    bias: np.ndarray,
    swap: bool,
    nchw: bool,
    half: bool,
    stream: Any,
    u8: bool = False,
) -> None:
    """One launch for `batch` output images; all pointers are raw device addresses (ints). `u8`: uint8
    output (NHWC only; for host images), else fp16 when `half`, else fp32."""
    if u8 and nchw:
        raise ValueError("uint8 output is NHWC only")
    fn = _compile()[f"pp_{'nchw' if nchw else 'nhwc'}_{'u8' if u8 else 'f16' if half else 'f32'}"]
    grid = ((out_w + BLOCK[0] - 1) // BLOCK[0], (out_h + BLOCK[1] - 1) // BLOCK[1], batch)
    fn.prepared_async_call(
        grid,
        BLOCK,
        stream,
        src_ptr,
        src_w,
        src_h,
        src_pitch,
        src_c,
        items_ptr,
        dst_ptr,
        out_w,
        out_h,
        float(pad),
        float(scale[0]),
        float(scale[1]),
        float(scale[2]),
        float(bias[0]),
        float(bias[1]),
        float(bias[2]),
        int(swap),
    )


def launch_ctc_argmax(
    scores_ptr: int, rows: int, classes: int, idx_ptr: int, val_ptr: int, stream: Any
) -> None:
    if rows:
        _compile()["ctc_argmax"].prepared_async_call(
            (rows, 1, 1), (256, 1, 1), stream, scores_ptr, rows, classes, idx_ptr, val_ptr
        )


def launch_threshold_bits(prob_ptr: int, n: int, thr: float, bits_ptr: int, stream: Any) -> None:
    if n:
        _compile()["threshold_bits"].prepared_async_call(
            ((n + 255) // 256, 1, 1), (256, 1, 1), stream, prob_ptr, n, float(thr), bits_ptr
        )


def launch_quantize_u8(src_ptr: int, n: int, dst_ptr: int, stream: Any) -> None:
    if n:
        _compile()["quantize_u8"].prepared_async_call(
            ((n + 255) // 256, 1, 1), (256, 1, 1), stream, src_ptr, n, dst_ptr
        )
