"""Helpers for tests of edged and of code built on it: a synthetic Source and test videos.

`SyntheticSource` is a real Source (it goes through the same worker, pacing and reconnect paths as a
camera): deterministic frames whose index is drawn as a row of black/white blocks that survive lossy
video codecs (`frame_index` reads it back), and switches to make it fail or stall on demand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edged.capture.base import SourceEnded, SourceError
from edged.types import PixelFormat

INDEX_BITS = 16
INDEX_STRIP_H = 16  # the index strip is this many rows at the top of the image


def draw_index(image: np.ndarray, index: int) -> None:
    """Write `index` (mod 2**16) into the top strip as blocks: white = 1, black = 0, LSB first.

    Needs an image at least 16 pixels wide (64 or more survives video compression).
    """
    w = image.shape[1]
    bw = w // INDEX_BITS
    for bit in range(INDEX_BITS):
        image[:INDEX_STRIP_H, bit * bw : (bit + 1) * bw] = 255 if (index >> bit) & 1 else 0


def frame_index(image: np.ndarray) -> int:
    """The index `draw_index` wrote (reads block centres, so mild compression does not matter)."""
    w = image.shape[1]
    bw = w // INDEX_BITS
    m = bw // 4  # stay off block edges, where codecs smear black into white
    value = 0
    for bit in range(INDEX_BITS):
        block = image[2 : INDEX_STRIP_H - 2, bit * bw + m : (bit + 1) * bw - m]
        if float(block.mean()) > 127.0:
            value |= 1 << bit
    return value


def synthetic_frame(index: int, width: int = 320, height: int = 240, text: bool = True) -> np.ndarray:
    """A deterministic BGR test image for `index`: gradient, a moving square, the index strip and text."""
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = ((x + index * 3) % 256).astype(np.uint8)
    img[..., 1] = ((y * 2 + index) % 256).astype(np.uint8)
    img[..., 2] = ((x + y + index * 5) % 256).astype(np.uint8)
    side = max(8, min(width, height) // 6)
    span = max(1, width - side)
    left = (index * 7) % span
    top = height // 2
    img[top : top + side, left : left + side] = (0, 0, 255)
    draw_index(img, index)
    if text:
        try:
            import cv2
        except ImportError:  # text is decoration; the index strip carries the information
            pass
        else:
            org = (8, INDEX_STRIP_H + 32)
            cv2.putText(img, f"#{index}", org, cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return img


class SyntheticSource:
    """A Source of generated frames (`synthetic_frame`), for tests and demos without a camera.

    File-like by default: `count` frames, then SourceEnded, and every open starts again at index 0.
    With `live=True` it behaves like a camera: indexes continue across reopens, and with `paced=True`
    reads wait for the next frame time at `fps`. Fault switches (from any thread):
    `fail_open(reason)`, `fail_reads(reason)`, `stall()` / `resume()`; pass None to clear a failure.
    A stall with `block=True` makes `read` ignore its timeout and block like `cv2.VideoCapture.read`;
    with `block=False` it returns None after the timeout like jetson-utils.
    """

    def __init__(
        self,
        uri: str = "synthetic://test",
        *,
        width: int = 320,
        height: int = 240,
        fps: float | None = 30.0,
        count: int | None = None,
        live: bool = False,
        paced: bool = False,
        text: bool = True,
        fmt: PixelFormat = "bgr8",
    ) -> None:
        self.uri = uri
        self.fmt = fmt
        self.nominal_fps = fps
        self.live = live
        self.width, self.height = width, height
        self.count = count
        self.paced = paced
        self.text = text
        self.opens = 0
        self.closes = 0
        self.reads = 0
        self.is_open = False
        self._pos = 0
        self._index = 0
        self._next_t: float | None = None
        self._open_error: str | None = None
        self._read_error: str | None = None
        self._running = threading.Event()
        self._running.set()
        self._stall_blocks = True

    # fault switches
    def fail_open(self, reason: str | None = "synthetic open failure") -> None:
        self._open_error = reason

    def fail_reads(self, reason: str | None = "synthetic read failure") -> None:
        self._read_error = reason

    def stall(self, block: bool = True) -> None:
        self._stall_blocks = block
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    # Source protocol
    def open(self) -> None:
        if self._open_error is not None:
            raise SourceError(f"{self.uri}: {self._open_error}")
        self.opens += 1
        self.is_open = True
        self._pos = 0
        self._next_t = None
        if not self.live:
            self._index = 0

    def read(self, timeout_s: float) -> np.ndarray | None:
        if not self._running.is_set():
            if self._stall_blocks:
                self._running.wait()
            elif not self._running.wait(timeout_s):
                return None
        if not self.is_open:
            raise SourceError(f"{self.uri}: read on a closed source")
        if self._read_error is not None:
            raise SourceError(f"{self.uri}: {self._read_error}")
        if self.count is not None and self._pos >= self.count:
            if self.live:
                raise SourceError(f"{self.uri}: stream ended after {self.count} frames")
            raise SourceEnded(f"{self.uri}: end after {self.count} frames")
        if self.paced and self.nominal_fps:
            now = time.monotonic()
            step = 1.0 / self.nominal_fps
            self._next_t = now if self._next_t is None else max(self._next_t + step, now - 1.0)
            if self._next_t > now:
                time.sleep(self._next_t - now)
        image = synthetic_frame(self._index, self.width, self.height, self.text)
        self._pos += 1
        self._index += 1
        self.reads += 1
        return image

    def close(self) -> None:
        self.closes += 1
        self.is_open = False


class LiveSources:
    """A camera's source factory for reconnect tests: every open makes a new small live, paced
    SyntheticSource and keeps it in `made`, so a test can stall the first and watch the reopen."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.made: list[SyntheticSource] = []

    def __call__(self) -> SyntheticSource:
        self.made.append(
            SyntheticSource(live=True, fps=self.fps, paced=True, width=64, height=48, text=False)
        )
        return self.made[-1]


def write_test_video(
    path: str | Path,
    frames: int | Iterable[np.ndarray],
    fps: float = 30.0,
    *,
    size: tuple[int, int] = (320, 240),
) -> Path:
    """Write a real video file: `frames` images, or that many `synthetic_frame`s of `size` (w, h).

    .avi files use MJPEG, everything else mp4v. Raises RuntimeError when OpenCV cannot write it.
    """
    import cv2

    path = Path(path)
    images: Iterable[np.ndarray] = (
        (synthetic_frame(i, size[0], size[1]) for i in range(frames)) if isinstance(frames, int) else frames
    )
    codec = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    fourcc = cv2.VideoWriter.fourcc(*codec)
    writer: cv2.VideoWriter | None = None
    written = 0
    try:
        for img in images:
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, fourcc, float(fps), (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {path} (codec {codec})")
            writer.write(img)
            written += 1
    finally:
        if writer is not None:
            writer.release()
    if written == 0:
        raise RuntimeError(f"no frames given for {path}")
    return path
