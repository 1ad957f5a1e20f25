"""Greedy non-maximum suppression in numpy (class-aware by default), shared by yolo and ssd.

Pure numpy so it runs wherever the decoders run (no OpenCV build differences); each greedy step is
vectorised over the remaining boxes, which is fast for the few hundred candidates left after the
confidence threshold.
"""

from __future__ import annotations

import numpy as np


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1,y1,x2,y2 box against Kx4 boxes."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
    area_b = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area_a + area_b - inter
    out: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_thresh: float,
    class_ids: np.ndarray | None = None,
    max_det: int = 300,
) -> np.ndarray:
    """Indices of kept boxes, highest score first.

    With `class_ids`, boxes of different classes never suppress each other: each class is shifted
    to its own region of the plane (the usual offset trick), so one pass handles all classes.
    """
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    b = boxes.astype(np.float64)
    if class_ids is not None:
        span = float(np.max(b[:, 2:]) - min(float(np.min(b[:, :2])), 0.0)) + 1.0
        b = b + (class_ids.astype(np.float64) * 2.0 * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0 and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(b[i], b[rest]) <= iou_thresh]
    return np.asarray(keep, dtype=np.int64)
