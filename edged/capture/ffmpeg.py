"""FFmpeg sources through PyAV: video files and network streams, every frame at its real size.

Why not OpenCV here. OpenCV's FFmpeg backend (cap_ffmpeg_impl.hpp, `CvCapture_FFMPEG::retrieveFrame`)
sizes its BGR buffer and its swscale context by the stream's codec parameters read at open
(`video_st->codecpar->width/height`), and rebuilds them only when those change. FFmpeg never updates a
stream's codecpar when the decoder meets a new resolution mid-stream (a new H.264/HEVC SPS: a camera
reconfigured, files joined), so every later frame is scaled to the first size, aspect ratio and all,
and `CAP_PROP_FRAME_WIDTH/HEIGHT` keep the old size too (opencv/opencv#27116, open). PyAV hands out
FFmpeg's decoded frames as they are (`VideoFrame.width/height` per frame) and converts each at its
own size, so a 640x480 file that turns 1280x720 yields 1280x720 frames from that point on; the model
servers plan every frame by its own size (edged.serving.shapes), so nothing else has to know.

Per-camera FFmpeg options (RTSP transport, jitter buffer) go to `av.open(options=...)` for that
open only, merged over the operator's process-wide OPENCV_FFMPEG_CAPTURE_OPTIONS (`key;value|...`, the
variable OpenCV reads: one setting for both CPU paths), and `timeout_s` becomes FFmpeg's open and read timeouts (its interrupt callback) for
network streams, so a dead server ends `read` with an error instead of blocking.

Decoding: `grab` decodes the next frame and keeps it, `retrieve` converts it to BGR (the worker
converts only the frames it takes). A packet the decoder rejects is skipped (counted in `skipped`),
as players do, instead of ending the stream. One thread opens, reads and closes a source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edged.capture.base import SourceEnded, SourceError, redact
from edged.types import PixelFormat

log = logging.getLogger(__name__)


def available() -> str | None:
    """None when PyAV imports, else why not (make_source then falls back to OpenCV)."""
    try:
        import av  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        return f"PyAV is not installed ({exc})"
    return None


def operator_options() -> dict[str, str]:
    """FFmpeg options the operator set for every camera in OPENCV_FFMPEG_CAPTURE_OPTIONS."""
    raw = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    return dict(item.split(";", 1) for item in raw.split("|") if ";" in item)


class FFmpegSource:
    """A file or stream decoded by FFmpeg through PyAV, behind the Source protocol (BGR numpy frames)."""

    fmt: PixelFormat = "bgr8"
    decoder = "ffmpeg"  # what /stats decode.decoder says (edged.capture.decode)

    def __init__(
        self,
        uri: str,
        *,
        target: str,
        live: bool,
        timeout_s: float = 5.0,
        ffmpeg_options: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.target = target  # a filesystem path or the stream URL
        self.live = live
        self.timeout_s = timeout_s
        self.ffmpeg_options = dict(ffmpeg_options or {})
        self.nominal_fps: float | None = None
        self.skipped = 0  # packets the decoder rejected
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._grabbed: Any = None
        self._size: tuple[int, int] | None = None

    def open(self) -> None:
        import av

        name = redact(self.uri)
        if not self.live and not Path(self.target).is_file():
            raise SourceError(f"{name}: no such file ({self.target})")
        try:
            container = av.open(
                self.target,
                options={**operator_options(), **self.ffmpeg_options},
                timeout=(self.timeout_s, self.timeout_s) if self.live else None,
            )
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"{name}: FFmpeg could not open it: {e.strerror or e}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{name}: no video stream in it")
        stream = container.streams.video[0]
        # Frame and slice threads, as OpenCV's FFmpeg backend decodes (a few frames of decoder delay; a
        # camera's H.264 seldom has slices, so slice threads alone would decode on one core).
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if isinstance(rate, Fraction) and rate > 0 else 0.0
        self.nominal_fps = fps if 0.0 < fps <= 1000.0 else None
        self._container = container
        self._frames = self._decode(container, stream)
        self._size = None

    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        import av

        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                self.skipped += 1
                continue
            yield from frames

    def grab(self, timeout_s: float) -> bool:
        """Decode the next frame and keep it for `retrieve` (not converted yet)."""
        import av

        if self._frames is None:
            raise SourceError(f"{redact(self.uri)}: read before open")
        try:
            frame = next(self._frames)
        except StopIteration:
            if not self.live:
                raise SourceEnded(f"{redact(self.uri)}: end of file") from None
            raise SourceError(f"{redact(self.uri)}: the stream ended") from None
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"{redact(self.uri)}: read failed: {e.strerror or e}") from None
        size = (frame.width, frame.height)
        if self._size is not None and size != self._size:
            log.info(
                "%s: resolution changed from %dx%d to %dx%d",
                redact(self.uri),
                *self._size,
                *size,
            )
        self._size = size
        self._grabbed = frame
        return True

    def retrieve(self) -> np.ndarray:
        """The frame `grab` took, as a BGR array of its own size."""
        frame, self._grabbed = self._grabbed, None
        if frame is None:
            raise SourceError(f"{redact(self.uri)}: retrieve without a grabbed frame")
        image: np.ndarray = frame.to_ndarray(format="bgr24")
        return image

    def read(self, timeout_s: float) -> np.ndarray | None:
        self.grab(timeout_s)
        return self.retrieve()

    def close(self) -> None:
        self._frames = None
        self._grabbed = None
        if self._container is not None:
            self._container.close()
            self._container = None
