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
