"""DB (Differentiable Binarization) text-detector post-processing, as rapidocr 3.10.0 does it.

Two steps so a GPU pre-filter can replace the first:
  db_bitmap   probability map -> binary map (threshold, optional 2x2 dilation)
  db_boxes    contours of the binary map -> scored, unclipped rotated rectangles in map coordinates
plus order/sort helpers that work in source coordinates. Pure numpy + OpenCV; no pyclipper/shapely:
the unclip of a rectangle has a closed form (see `unclip_rect`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _cv2() -> Any:
    import cv2  # deferred: OpenCV is an optional dependency (JetPack ships its own)

    return cv2


def db_bitmap(prob: np.ndarray, thresh: float, use_dilation: bool) -> np.ndarray:
    """HxW probability map (float, or bytes with `thresh` scaled to match) -> HxW uint8 {0, 1} mask."""
    if prob.dtype == np.uint8:
        # OpenCV compares bytes with floor(thresh), the same as `prob > thresh` for integers, ~20x faster
        # than numpy's compare + cast on a 1080p map (the GPU path's byte maps, one per camera frame).
        cv2 = _cv2()
        mask = cv2.threshold(np.ascontiguousarray(prob), thresh, 1, cv2.THRESH_BINARY)[1]
    else:
        mask = (prob > thresh).astype(np.uint8)
    if use_dilation:
        mask = _cv2().dilate(mask, np.ones((2, 2), dtype=np.uint8))
    return mask


def mini_box(rect: tuple[Any, ...]) -> np.ndarray:
    """Corners of a cv2 rotated rect in rapidocr's get_mini_boxes order (4x2 float32)."""
    pts = sorted(_cv2().boxPoints(rect).tolist(), key=lambda p: p[0])  # stable, like argsort "stable"
    i1, i4 = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    i2, i3 = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    return np.array([pts[i1], pts[i2], pts[i3], pts[i4]], dtype=np.float32)


def _clamp(v: float, hi: int) -> int:
    return min(max(int(v), 0), hi)


def box_score_fast(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the quadrilateral (rapidocr `box_score_fast`)."""
    cv2 = _cv2()
    h, w = prob.shape[:2]
    # Plain floats: on 4 points, numpy's per-call overhead is most of the cost.
    xs, ys = box[:, 0].tolist(), box[:, 1].tolist()
    xmin, xmax = _clamp(math.floor(min(xs)), w - 1), _clamp(math.ceil(max(xs)), w - 1)
    ymin, ymax = _clamp(math.floor(min(ys)), h - 1), _clamp(math.ceil(max(ys)), h - 1)
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = box - np.array([xmin, ymin], dtype=np.float32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def box_score_slow(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the contour itself (rapidocr `box_score_slow`)."""
    cv2 = _cv2()
    h, w = prob.shape[:2]
    c = contour.reshape(-1, 2).astype(np.int32)
    xmin, xmax = int(np.clip(c[:, 0].min(), 0, w - 1)), int(np.clip(c[:, 0].max(), 0, w - 1))
    ymin, ymax = int(np.clip(c[:, 1].min(), 0, h - 1)), int(np.clip(c[:, 1].max(), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    cv2.fillPoly(mask, (c - np.array([xmin, ymin], dtype=np.int32)).reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def unclip_rect(box: np.ndarray, unclip_ratio: float) -> tuple[Any, ...]:
    """Grow a rectangle (4x2 corners) by distance = area * ratio / perimeter on every side.

    rapidocr offsets the polygon with pyclipper (round joins) and takes its minAreaRect: for a
    rectangle that is the same rectangle with each side pushed out by the distance. pyclipper works on
    integer coordinates and truncates its input, so the rectangle is taken from the truncated corners
    to land where the reference lands (mean difference under half a map pixel instead of ~1).
    """
    cv2 = _cv2()
    pts = box.astype(np.float64).tolist()
    nxt = pts[1:] + pts[:1]
    area = 0.5 * abs(sum(x0 * y1 - y0 * x1 for (x0, y0), (x1, y1) in zip(pts, nxt, strict=True)))
    perimeter = sum(math.hypot(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in zip(pts, nxt, strict=True))
    distance = area * unclip_ratio / perimeter if perimeter > 0 else 0.0
    (cx, cy), (w, h), angle = cv2.minAreaRect(np.trunc(box.astype(np.float64)).astype(np.float32))
    return (cx, cy), (w + 2 * distance, h + 2 * distance), angle


def db_boxes(
    prob: np.ndarray,
    bitmap: np.ndarray,
    *,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int,
    min_size: float,
    score_mode: str,
    unit: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate text regions -> (Kx4x2 float32 quads in map coordinates, K scores).

    Follows rapidocr's boxes_from_bitmap: contours (first `max_candidates`), min-area rectangle,
    drop if its short side < min_size or its score < box_thresh, unclip, drop if the grown short
    side < min_size + 2. `unit`: what probability 1 is in `prob` (255 for a byte map).
    """
    cv2 = _cv2()
    # Any non-zero pixel is foreground to findContours (rapidocr's `bitmap * 255` changes nothing).
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[-2:]
    quads: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[:max_candidates]:
        if len(contour) < 3 and min_size > 0:
            continue  # a point or a line: its rectangle's short side is 0 (most contours of a noisy map)
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < min_size:
            continue
        points = mini_box(rect)
        score = box_score_fast(prob, points) if score_mode == "fast" else box_score_slow(prob, contour)
        score /= unit
        if score < box_thresh:
            continue
        grown = unclip_rect(points, unclip_ratio)
        if min(grown[1]) < min_size + 2:
            continue
        quads.append(mini_box(grown))
        scores.append(score)
    if not quads:
        return np.zeros((0, 4, 2), dtype=np.float32), np.zeros((0,), dtype=np.float32)
    return np.stack(quads).astype(np.float32), np.asarray(scores, dtype=np.float32)


def order_clockwise(quads: np.ndarray) -> np.ndarray:
    """Kx4x2 -> corners ordered tl, tr, br, bl (rapidocr `order_points_clockwise`)."""
    out = np.empty_like(quads)
    for i, pts in enumerate(quads.tolist()):
        xs = sorted(pts, key=lambda p: p[0])  # Python's sort is stable, as argsort(kind="stable")
        left = sorted(xs[:2], key=lambda p: p[1])
        right = sorted(xs[2:], key=lambda p: p[1])
        out[i] = [left[0], right[0], right[1], left[1]]
    return out


def reading_order(quads: np.ndarray, line_gap: float = 10.0) -> np.ndarray:
    """Indices sorting quads top-to-bottom, then left-to-right within a line (rapidocr `sorted_boxes`).

    Boxes whose top-left y differs from the previous (y-sorted) box by less than `line_gap` source
    pixels are on the same line.
    """
    if len(quads) == 0:
        return np.zeros((0,), dtype=np.int64)
    y_order = np.argsort(quads[:, 0, 1], kind="stable")
    ys = quads[y_order, 0, 1]
    line_ids = np.concatenate([[0], np.cumsum(np.diff(ys) >= line_gap)])
    within = np.lexsort((quads[y_order, 0, 0], line_ids))
    out: np.ndarray = y_order[within]
    return out
