"""Small helpers shared by the decoders: picking outputs, shape errors, softmax, geometry mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edged.preprocess.spec import Plan


def shape_error(kind: str, what: str, shape: Sequence[int], expected: str) -> ValueError:
    """A uniform message, so a misconfigured `kind` is recognisable from the log line alone."""
    return ValueError(f"{kind} decoder: {what} has shape {tuple(int(s) for s in shape)}, expected {expected}")


def pick_output(outputs: Mapping[str, np.ndarray], kind: str, name: str = "") -> np.ndarray:
    """The named output (exact, or with a ':0' suffix as tf2onnx exports it), else the only/first one."""
    if not outputs:
        raise ValueError(f"{kind} decoder: the engine returned no outputs")
    if name:
        for candidate in (name, f"{name}:0"):
            if candidate in outputs:
                return np.asarray(outputs[candidate])
        raise ValueError(f"{kind} decoder: no output named {name!r} (outputs: {', '.join(outputs)})")
    return np.asarray(next(iter(outputs.values())))


def check_batch(kind: str, what: str, arr: np.ndarray, plans: Sequence[Plan]) -> None:
    if arr.shape[0] != len(plans):
        raise ValueError(
            f"{kind} decoder: {what} has batch size {arr.shape[0]} (shape {tuple(arr.shape)}) "
            f"but {len(plans)} plans were given"
        )


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / np.sum(e, axis=axis, keepdims=True)
    return out


def clip_boxes(boxes: np.ndarray, plan: Plan) -> np.ndarray:
    """Clip Kx4 x1,y1,x2,y2 boxes in model-input coordinates to the plan's content (not the padding)."""
    x, y, w, h = plan.content
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], x, x + w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], y, y + h)
    return out


def boxes_to_source(boxes: np.ndarray, plan: Plan) -> np.ndarray:
    """Kx4 axis boxes in model-input coordinates -> Kx4 source boxes (bounds of the mapped corners).

    For letterbox/stretch plans the map is a pure scale so the bounds are exact; for crop plans (a
    homography into the frame) a box becomes a quadrilateral and we keep its bounding box.
    """
    if len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    corners = np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1).reshape(-1, 2)
    src = plan.to_source(corners).reshape(-1, 4, 2)
    return np.concatenate([src.min(axis=1), src.max(axis=1)], axis=1).astype(np.float32)


def as_box(b: np.ndarray) -> tuple[float, float, float, float]:
    return float(b[0]), float(b[1]), float(b[2]), float(b[3])
