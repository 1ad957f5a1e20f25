"""The latest frame of a camera with its detections drawn, as JPEG (for /snapshot and the status page);
also the camera's lines and zones (`Shape`s from edged.analytics) with their counts and occupancy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edged.types import Detection, Frame, FrameResult


@dataclass(frozen=True)
class Shape:
    """A line (open) or zone (closed) in frame pixels with its caption; a line's `arrow` is the screen
    direction that counts as `in` (drawn from the line's middle)."""

    points: tuple[tuple[float, float], ...]
    closed: bool
    caption: str
    arrow: tuple[float, float] | None = None


def render_snapshot(
    frame: Frame, result: FrameResult | None, quality: int = 80, shapes: Sequence[Shape] = ()
) -> bytes | None:
    import cv2

    image = frame.image
    if not isinstance(image, np.ndarray):
        get = getattr(image, "get", None)
        if not callable(get):
            return None  # device frame without a download path
        image = np.asarray(get())
    canvas = image.copy() if frame.fmt == "bgr8" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for shape in shapes:
        _draw_shape(canvas, shape)
    if result is not None and result.frame is frame:
        for d in result.detections:
            _draw(canvas, d)
    ok, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpg.tobytes() if ok else None


def _draw_shape(canvas: np.ndarray, shape: Shape) -> None:
    import cv2

    scale = max(canvas.shape[0], canvas.shape[1]) / 1000
    thick = max(2, round(2 * scale))
    color = (0, 200, 255) if shape.closed else (255, 120, 0)  # zones amber, lines blue (BGR)
    pts = np.round(np.asarray(shape.points, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], shape.closed, color, thick, cv2.LINE_AA)
    (x0, y0), (x1, y1) = shape.points[0], shape.points[-1]
    if shape.arrow is not None:
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        length = 30 * max(1.0, scale)
        tip = (round(mx + shape.arrow[0] * length), round(my + shape.arrow[1] * length))
        cv2.arrowedLine(canvas, (round(mx), round(my)), tip, color, thick, cv2.LINE_AA, tipLength=0.35)
    _caption(
        canvas,
        shape.caption,
        int(min(p[0] for p in shape.points)),
        int(min(p[1] for p in shape.points)),
        color,
    )


def _caption(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    import cv2

    scale = max(canvas.shape[0], canvas.shape[1]) / 1000
    thick = max(1, round(1.5 * scale))
    font, size = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, 0.6 * scale)
    (tw, th), base = cv2.getTextSize(text, font, size, thick)
    x = min(max(0, x), max(0, canvas.shape[1] - tw - 8))
    y = max(th + base + 4, y)
    cv2.rectangle(canvas, (x, y - th - base - 2), (x + tw + 8, y + 2), (20, 20, 20), cv2.FILLED)
    cv2.putText(canvas, text, (x + 4, y - base), font, size, color, thick, cv2.LINE_AA)


def _draw(canvas: np.ndarray, d: Detection) -> None:
    import cv2

    # Line and text sizes follow the frame: 1-px text on a 1080p frame shrunk into a browser is unreadable.
    scale = max(canvas.shape[0], canvas.shape[1]) / 1000
    thick = max(2, round(2 * scale))
    pts = d.quad().astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], True, (0, 220, 0), thick)
    texts = [k.label for kids in d.children.values() for k in kids if k.label]
    caption = " ".join(texts) or f"{d.label} {d.score:.2f}"
    font, size = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, 0.8 * scale)
    (tw, th), base = cv2.getTextSize(caption, font, size, thick)
    x = min(max(0, int(d.box[0])), max(0, canvas.shape[1] - tw - 8))
    y = int(d.box[1]) - 6 if d.box[1] > th + base + 10 else int(d.box[3]) + th + base + 6
    # Dark box behind light text: readable on any background.
    cv2.rectangle(canvas, (x, y - th - base - 2), (x + tw + 8, y + 4), (20, 20, 20), cv2.FILLED)
    cv2.putText(canvas, caption, (x + 4, y - base + 2), font, size, (255, 255, 255), thick, cv2.LINE_AA)
