"""The latest frame of a camera with its detections drawn, as JPEG (for /snapshot and the status page)."""

from __future__ import annotations

import numpy as np

from edged.types import Detection, Frame, FrameResult


def render_snapshot(frame: Frame, result: FrameResult | None, quality: int = 80) -> bytes | None:
    import cv2

    image = frame.image
    if not isinstance(image, np.ndarray):
        get = getattr(image, "get", None)
        if not callable(get):
            return None  # device frame without a download path
        image = np.asarray(get())
    canvas = image.copy() if frame.fmt == "bgr8" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if result is not None and result.frame is frame:
        for d in result.detections:
            _draw(canvas, d)
    ok, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpg.tobytes() if ok else None


def _draw(canvas: np.ndarray, d: Detection) -> None:
    import cv2

    pts = d.quad().astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], True, (0, 255, 0), 2)
    texts = [k.label for kids in d.children.values() for k in kids if k.label]
    caption = " ".join(texts) or f"{d.label} {d.score:.2f}"
    x, y = int(d.box[0]), max(12, int(d.box[1]) - 4)
    cv2.putText(canvas, caption, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
