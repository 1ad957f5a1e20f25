"""The preprocessing contract shared by the CPU reference and the GPU kernels.

A `PreprocessSpec` says what a model wants (size policy, channel order, normalization, layout,
dtype). `plan_frame` / `plan_crops` turn it into concrete geometry: for every output image a 3x3
homography from output pixels to source pixels plus the rectangle of the output that holds image
content (the rest is padding). Every implementation (cv2 on the CPU, the fused CUDA kernel,
cv2.cuda) samples bilinearly through exactly that homography, so they agree up to rounding.

Conventions follow OpenCV: pixel centres at integer coordinates, so scaling by s maps an output
pixel x to source (x + 0.5) / s - 0.5, which is what cv2.resize(INTER_LINEAR) does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ResizeMode = Literal["letterbox", "stretch", "limit_side", "fixed_height"]


@dataclass(frozen=True)
class PreprocessSpec:
    """What one model expects as input. Plain data so gpu/ and preprocess/ need no config objects."""

    resize: ResizeMode = "letterbox"
    # Output (width, height) for letterbox/stretch; for fixed_height: (max width, height).
    size: tuple[int, int] = (640, 640)
    # limit_side: scale so the min (or max) side reaches limit_side, then round to `multiple`.
    limit_side: int = 736
    limit_type: Literal["min", "max"] = "min"
    multiple: int = 32
    # fixed_height: the batch width is at least height * min_ratio (PP-OCR: 320/48).
    min_ratio: float = 320 / 48
    # fixed_height: round the batch width up to a multiple of this (fewer distinct input shapes, which
    # GPU backends need: each new shape costs them a re-plan). 1 = exact width, as PP-OCR does.
    width_multiple: int = 1
    color: Literal["bgr", "rgb"] = "rgb"
    # Normalization on pixel/255: (x/255 - mean) / std, per channel in the model's channel order.
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Padding value in pixel units (0..255), before normalization (YOLO uses 114).
    pad_value: float = 0.0
    # Where the content sits inside a padded output.
    pad_align: Literal["center", "top_left"] = "center"
    layout: Literal["nchw", "nhwc"] = "nchw"
    dtype: Literal["float32", "float16"] = "float32"

    def batch_shape(
        self, n: int, out_w: int | None = None, out_h: int | None = None
    ) -> tuple[int, int, int, int]:
        """Shape of a batch of n outputs in this spec's layout (default size when not given)."""
        w, h = out_w or self.size[0], out_h or self.size[1]
        return (n, 3, h, w) if self.layout == "nchw" else (n, h, w, 3)

    @property
    def scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (a, b) such that normalized = pixel * a + b (what kernels apply)."""
        std = np.asarray(self.std, dtype=np.float64)
        mean = np.asarray(self.mean, dtype=np.float64)
        return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


@dataclass(frozen=True)
class Plan:
    """Geometry of one output image: output size, content rectangle and output->source homography."""

    out_w: int
    out_h: int
    content: tuple[int, int, int, int]  # x, y, w, h inside the output
    # 3x3 float64, maps output pixel (x, y, 1) to source pixel coordinates (homogeneous).
    h_out_to_src: np.ndarray = field(repr=False)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map Nx2 points in output (model input) coordinates back to source-image coordinates.

        Points here are continuous coordinates (box corners), not pixel centres, so the half-pixel
        offsets of the sampling convention cancel out: we use the pure scale/offset part.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        h = self.corner_homography()
        ones = np.ones((pts.shape[0], 1))
        src = np.hstack([pts, ones]) @ h.T
        return (src[:, :2] / src[:, 2:3]).astype(np.float32)

    def corner_homography(self) -> np.ndarray:
        """The output->source map for continuous coordinates (pixel edges, not centres)."""
        shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], dtype=np.float64)
        unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], dtype=np.float64)
        # h_out_to_src works on centres: src_c = H @ out_c, with x_c = x_edge - 0.5.
        return shift @ self.h_out_to_src @ unshift


def _scale_homography(sx: float, sy: float, off_x: float, off_y: float) -> np.ndarray:
    """Output pixel centre -> source pixel centre for an axis-aligned scale + offset."""
    # src = (out - off + 0.5) / s - 0.5
    return np.array(
        [
            [1.0 / sx, 0.0, (0.5 - off_x) / sx - 0.5],
            [0.0, 1.0 / sy, (0.5 - off_y) / sy - 0.5],
            [0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    )


@functools.lru_cache(maxsize=1024)
def plan_frame(spec: PreprocessSpec, src_w: int, src_h: int) -> Plan:
    """Geometry for feeding a whole frame of src_w x src_h pixels to the model.

    Cached: a camera's frames all share one plan, so the per-frame (and per cross-camera batch) cost
    is a lookup. The cached matrix is read-only."""
    plan = _plan_frame(spec, src_w, src_h)
    plan.h_out_to_src.flags.writeable = False
    return plan


def _plan_frame(spec: PreprocessSpec, src_w: int, src_h: int) -> Plan:
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"empty image {src_w}x{src_h}")
    if spec.resize == "stretch":
        out_w, out_h = spec.size
        return Plan(out_w, out_h, (0, 0, out_w, out_h), _scale_homography(out_w / src_w, out_h / src_h, 0, 0))
    if spec.resize == "letterbox":
        out_w, out_h = spec.size
        s = min(out_w / src_w, out_h / src_h)
        cw, ch = max(1, round(src_w * s)), max(1, round(src_h * s))
        ox, oy = ((out_w - cw) // 2, (out_h - ch) // 2) if spec.pad_align == "center" else (0, 0)
        return Plan(out_w, out_h, (ox, oy, cw, ch), _scale_homography(cw / src_w, ch / src_h, ox, oy))
    if spec.resize == "limit_side":
        out_w, out_h = limit_side_size(spec, src_w, src_h)
        return Plan(out_w, out_h, (0, 0, out_w, out_h), _scale_homography(out_w / src_w, out_h / src_h, 0, 0))
    if spec.resize == "fixed_height":
        # A single image: same as a batch of one crop covering the frame.
        quad = np.array([[0, 0], [src_w, 0], [src_w, src_h], [0, src_h]], dtype=np.float32)
        return plan_crops(spec, [quad])[0]
    raise ValueError(f"unknown resize mode {spec.resize!r}")


def limit_side_size(spec: PreprocessSpec, src_w: int, src_h: int) -> tuple[int, int]:
    """PP-OCR detector sizing (rapidocr DetPreProcess): scale by the limit, round to `multiple`."""
    if spec.limit_type == "min":
        ratio = spec.limit_side / min(src_w, src_h) if min(src_w, src_h) < spec.limit_side else 1.0
    else:
        ratio = spec.limit_side / max(src_w, src_h) if max(src_w, src_h) > spec.limit_side else 1.0
    m = spec.multiple
    out_w = max(m, int(round(int(src_w * ratio) / m) * m))
    out_h = max(m, int(round(int(src_h * ratio) / m) * m))
    return out_w, out_h


def crop_size(quad: np.ndarray) -> tuple[float, float]:
    """Natural (width, height) of a quadrilateral crop: its longest opposite edges."""
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    w = max(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[2] - q[3]))
    h = max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2]))
    return max(float(w), 1.0), max(float(h), 1.0)


def upright_quad(quad: np.ndarray, rotate_tall: bool = True, flip: bool = False) -> np.ndarray:
    """Reorder corners so the crop reads left-to-right.

    A crop at least 1.5x taller than wide is turned 90 degrees counter-clockwise (as PP-OCR does);
    `flip` turns it 180 degrees (the orientation classifier said it is upside down).
    """
    q = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    if rotate_tall:
        w, h = crop_size(q)
        if h / w >= 1.5:
            q = q[[1, 2, 3, 0]]
    if flip:
        q = q[[2, 3, 0, 1]]
    return q


def _quad_homography(dst_rect: tuple[float, float, float, float], quad: np.ndarray) -> np.ndarray:
    """Homography from output pixel centres inside dst_rect (x, y, w, h) to the quad's corners."""
    x, y, w, h = dst_rect
    # Edges of the content rectangle map to the quad's corners; convert to centre convention.
    dst = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64) - 0.5
    src = np.asarray(quad, dtype=np.float64).reshape(4, 2) - 0.5
    return _get_perspective(dst, src)


def _get_perspective(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 H with dst ~ H @ src for 4 point pairs (same maths as cv2.getPerspectiveTransform)."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i in range(4):
        (x, y), (u, v) = src[i], dst[i]
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    try:
        sol = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.append(sol, 1.0).reshape(3, 3)


def plan_crops(spec: PreprocessSpec, quads: Sequence[np.ndarray]) -> list[Plan]:
    """Geometry for a batch of crops (4x2 corner arrays in source pixels), one common output size.

    fixed_height: height fixed, each crop keeps its aspect ratio, batch width from the widest crop
    (at least height * min_ratio, at most size[0]), content left-aligned, padded on the right.
    Other modes: each crop is treated like a frame of its natural size.
    """
    if not quads:
        return []
    if spec.resize != "fixed_height":
        plans = []
        for q in quads:
            w, h = crop_size(q)
            full = plan_frame(spec, max(1, round(w)), max(1, round(h)))
            # Compose: output -> natural crop rectangle -> quad in the source.
            rect_to_quad = _quad_homography((0, 0, max(1, round(w)), max(1, round(h))), q)
            plans.append(Plan(full.out_w, full.out_h, full.content, rect_to_quad @ full.h_out_to_src))
        return plans
    max_w, out_h = spec.size
    ratios = [crop_size(q)[0] / crop_size(q)[1] for q in quads]
    batch_w = int(out_h * max(spec.min_ratio, *ratios))
    if spec.width_multiple > 1:
        batch_w = -(-batch_w // spec.width_multiple) * spec.width_multiple
    batch_w = max(1, min(batch_w, max_w))
    plans = []
    for q, r in zip(quads, ratios, strict=True):
        cw = max(1, min(batch_w, math.ceil(out_h * r)))
        plans.append(Plan(batch_w, out_h, (0, 0, cw, out_h), _quad_homography((0, 0, cw, out_h), q)))
    return plans
