"""NV12 (what hardware video decoders output) to RGB: the colour maths and the CPU reference.

NV12 is a full-resolution luma plane Y (height x width bytes) followed by one half-resolution plane of
interleaved chroma (U, V: height/2 rows of width bytes). Which RGB a (Y, U, V) triple means depends on
the stream's matrix (BT.601, BT.709, BT.2020; a stream that does not say is converted as BT.601,
as FFmpeg does) and range (limited: Y in 16..235,
chroma 16..240, what cameras send; full: 0..255, as JPEG). `yuv_coefficients` turns those two into the
6 numbers the fused CUDA kernel applies (edged.gpu.kernels), and `nv12_to_rgb` is the CPU reference it
is tested against: each pixel takes the chroma of its 2x2 block (nearest, as OpenCV's
`cv2.cvtColor(..., COLOR_YUV2RGB_NV12)` does) and is clamped to 0..255; the GPU then samples those RGB
pixels bilinearly through the preprocessing plan, exactly as it samples a BGR frame.

For BT.601 limited range the coefficients are OpenCV's (1.164, 1.596, 0.391, 0.813, 2.018).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Matrix = Literal["bt601", "bt709", "bt2020"]

# (Kr, Kb) of each matrix (ITU-R BT.601, BT.709, BT.2020 non-constant luminance).
KR_KB: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}


def yuv_coefficients(matrix: str, full_range: bool) -> tuple[float, float, float, float, float, float]:
    """(y_scale, y_offset, r_v, g_u, g_v, b_u) with, on 8-bit values and u = U - 128, v = V - 128:
    R = y_scale (Y - y_offset) + r_v v;  G = y_scale (Y - y_offset) - g_u u - g_v v;
    B = y_scale (Y - y_offset) + b_u u."""
    if matrix not in KR_KB:
        raise ValueError(f"unknown YUV matrix {matrix!r} (one of {', '.join(KR_KB)})")
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    y_scale, y_off, c_scale = (
        (1.0, 0.0, 255.0 / 255.0) if full_range else (255.0 / 219.0, 16.0, 255.0 / 224.0)
    )
    r_v = 2.0 * (1.0 - kr) * c_scale
    b_u = 2.0 * (1.0 - kb) * c_scale
    g_u = 2.0 * kb * (1.0 - kb) / kg * c_scale
    g_v = 2.0 * kr * (1.0 - kr) / kg * c_scale
    return y_scale, y_off, r_v, g_u, g_v, b_u


def split_nv12(nv12: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The (Y, UV) planes of a packed NV12 buffer: Y (height, width), UV (height/2, width/2, 2)."""
    flat = np.ascontiguousarray(nv12).reshape(-1)
    need = width * height * 3 // 2
    if flat.size < need:
        raise ValueError(f"an NV12 {width}x{height} frame needs {need} bytes, got {flat.size}")
    y = flat[: width * height].reshape(height, width)
    uv = flat[width * height : need].reshape(height // 2, width // 2, 2)
    return y, uv


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """The reference conversion: uint8 RGB (height, width, 3) from the Y and interleaved UV planes
    (nearest chroma per 2x2 block, rounded and clamped as OpenCV does)."""
    ys, yo, rv, gu, gv, bu = yuv_coefficients(matrix, full_range)
    h, w = y.shape
    u = np.repeat(np.repeat(uv[:, :, 0], 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32) - 128.0
    v = np.repeat(np.repeat(uv[:, :, 1], 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32) - 128.0
    luma = ys * np.maximum(y.astype(np.float32) - yo, 0.0)  # OpenCV clamps Y - 16 at 0
    rgb = np.stack([luma + rv * v, luma - gu * u - gv * v, luma + bu * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_nv12(rgb: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """Packed NV12 (height * 3/2, width) of an RGB image with even sides (chroma: the mean of each
    2x2 block): for tests and benchmarks that need NV12 frames of a known picture."""
    kr, kb = KR_KB[matrix]
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"NV12 needs even sides, got {w}x{h}")
    f = rgb.astype(np.float64) / 255.0
    ey = kr * f[..., 0] + (1 - kr - kb) * f[..., 1] + kb * f[..., 2]
    pb = (f[..., 2] - ey) / (2 * (1 - kb))
    pr = (f[..., 0] - ey) / (2 * (1 - kr))
    if full_range:
        y, u, v = 255 * ey, 128 + 255 * pb, 128 + 255 * pr
    else:
        y, u, v = 16 + 219 * ey, 128 + 224 * pb, 128 + 224 * pr
    block = (h // 2, 2, w // 2, 2)
    u2, v2 = u.reshape(block).mean(axis=(1, 3)), v.reshape(block).mean(axis=(1, 3))
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(np.rint(y), 0, 255)
    uv = out[h:].reshape(h // 2, w // 2, 2)
    uv[..., 0], uv[..., 1] = np.clip(np.rint(u2), 0, 255), np.clip(np.rint(v2), 0, 255)
    return out
