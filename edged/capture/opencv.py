"""OpenCV sources: video files, RTSP/HTTP streams, V4L2 cameras and folders of images.

`cv2.VideoCapture.read` blocks and has no per-call timeout; RTSP gets FFmpeg's open/read timeouts
where the build supports them, and everything else relies on the worker's stall detection.
Relative file paths are resolved by the caller (`make_source` uses the config file's folder).

Per-camera FFmpeg options (RTSP transport, latency). OpenCV takes FFmpeg options only from the
process-wide OPENCV_FFMPEG_CAPTURE_OPTIONS variable, which it reads when a capture opens. A camera with
options of its own sets that variable around its open, under `_FFMPEG_ENV_LOCK`, merged over whatever the
operator set globally, and restores it after; so such opens run one at a time (each is bounded by the
open timeout). Captures without options of their own never take the lock.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edged.capture.base import SourceEnded, SourceError, redact
from edged.types import PixelFormat

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtp", "http", "https")
FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_FFMPEG_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def ffmpeg_env(options: dict[str, str] | None) -> Iterator[None]:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS with `options` merged in, for the duration of one open."""
    if not options:
        yield
        return
    with _FFMPEG_ENV_LOCK:
        before = os.environ.get(FFMPEG_ENV)
        merged = dict(item.split(";", 1) for item in (before or "").split("|") if ";" in item)
        merged.update(options)
        os.environ[FFMPEG_ENV] = "|".join(f"{k};{v}" for k, v in merged.items())
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(FFMPEG_ENV, None)
            else:
                os.environ[FFMPEG_ENV] = before


def _cv2() -> Any:
    # Imported lazily: OpenCV is an optional dependency (JetPack ships its own), and importing it
    # costs ~100 ms that the jetson backend never needs.
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SourceError(f"OpenCV is not installed ({exc}); install edged[cv] or JetPack's OpenCV") from exc
    return cv2


def split_uri(uri: str) -> tuple[str, str]:
    """(scheme, rest); a bare /dev/videoN counts as v4l2."""
    if uri.startswith("/dev/video"):
        return "v4l2", uri
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "", uri
    return scheme.lower(), rest


class OpenCVSource:
    """A `cv2.VideoCapture` behind the Source protocol (files, streams, V4L2 cameras).

    Frames come out as BGR numpy arrays. `timeout_ms` becomes FFmpeg's open and read timeouts for
    network streams, so a dead RTSP server makes `read` fail instead of blocking forever.
    """

    fmt: PixelFormat = "bgr8"
    decoder = "opencv"

    def __init__(
        self,
        uri: str,
        *,
        path: str | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        timeout_ms: int = 5000,
        ffmpeg_options: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.ffmpeg_options = dict(ffmpeg_options or {})
        scheme, rest = split_uri(uri)
        self.scheme = scheme
        # What is handed to VideoCapture: a filesystem path, a device path or the stream URL itself.
        self.target = path if path is not None else (rest if scheme in ("file", "v4l2") else uri)
        self.live = scheme != "file"
        self.nominal_fps: float | None = None
        self._width = width
        self._height = height
        self._fps = fps
        self._timeout_ms = timeout_ms
        self._cap: Any = None

    def open(self) -> None:
        cv2 = _cv2()
        name = redact(self.uri)
        if self.scheme == "file":
            p = Path(self.target)
            if not p.is_file():
                raise SourceError(f"{name}: no such file ({p})")
            cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                # OpenCV builds without FFmpeg (JetPack's, custom CUDA builds) still read MJPEG .avi
                # and image sequences through their built-in backends.
                cap.release()
                cap = cv2.VideoCapture(str(p), cv2.CAP_ANY)
        elif self.scheme == "v4l2":
            if not Path(self.target).exists():
                raise SourceError(f"{name}: no such device {self.target}")
            params: list[int] = []
            if self._width:
                params += [cv2.CAP_PROP_FRAME_WIDTH, int(self._width)]
            if self._height:
                params += [cv2.CAP_PROP_FRAME_HEIGHT, int(self._height)]
            if self._fps:
                params += [cv2.CAP_PROP_FPS, round(self._fps)]
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2, params)
        elif self.scheme in STREAM_SCHEMES:
            params = []
            for prop in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):
                if hasattr(cv2, prop):
                    params += [getattr(cv2, prop), int(self._timeout_ms)]
            with ffmpeg_env(self.ffmpeg_options):
                cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        else:
            raise SourceError(f"{name}: the OpenCV backend cannot open {self.scheme or 'this'}:// sources")
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{name}: OpenCV could not open it (backend {self._backend_name()})")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # FFmpeg reports 0 or absurd rates (e.g. 90000) for some streams: treat those as unknown.
        self.nominal_fps = fps if 0.0 < fps <= 1000.0 else None
        self._cap = cap

    def _backend_name(self) -> str:
        return (
            "V4L2" if self.scheme == "v4l2" else ("FFmpeg, then any" if self.scheme == "file" else "FFmpeg")
        )

    def read(self, timeout_s: float) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{redact(self.uri)}: read before open")
        ok, image = self._cap.read()
        if ok and image is not None:
            return image  # type: ignore[no-any-return]
        if not self.live:
            raise SourceEnded(f"{redact(self.uri)}: end of file")
        raise SourceError(f"{redact(self.uri)}: read failed (stream lost or timed out)")

    def grab(self, timeout_s: float) -> bool:
        """Take the next frame off the source without converting it (OpenCV's built-in MJPEG and
        V4L2 backends do not even decode it; FFmpeg skips the colour conversion)."""
        if self._cap is None:
            raise SourceError(f"{redact(self.uri)}: read before open")
        if self._cap.grab():
            return True
        if not self.live:
            raise SourceEnded(f"{redact(self.uri)}: end of file")
        raise SourceError(f"{redact(self.uri)}: read failed (stream lost or timed out)")

    def retrieve(self) -> np.ndarray:
        """The image of the frame `grab` took."""
        ok, image = self._cap.retrieve()
        if ok and image is not None:
            return image  # type: ignore[no-any-return]
        raise SourceError(f"{redact(self.uri)}: could not decode the grabbed frame")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource:
    """An image sequence, one image per read as BGR arrays, in name order: `dir://folder`,
    `file://folder/` (the folder's jpg/png/bmp images) or a glob `file://frames/*.png` (every file it
    matches), as jetson-utils reads them.

    The listing is taken at open, so images added later show up on the next pass (loop) only.
    An image that cannot be decoded is skipped with a warning rather than stopping the sequence.
    """

    fmt: PixelFormat = "bgr8"
    live = False
    decoder = "opencv"

    def __init__(self, uri: str, *, path: str | None = None) -> None:
        self.uri = uri
        target = path if path is not None else split_uri(uri)[1]
        self.pattern = target if glob.has_magic(target) else None
        self.folder = Path(target)
        self.nominal_fps: float | None = None
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        if self.pattern is not None:
            files = sorted(p for p in map(Path, glob.glob(self.pattern)) if p.is_file())
            if not files:
                raise SourceError(f"{self.uri}: no file matches {self.pattern}")
        else:
            if not self.folder.is_dir():
                raise SourceError(f"{self.uri}: no such folder ({self.folder})")
            files = sorted(
                p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not files:
                kinds = "/".join(s[1:] for s in IMAGE_SUFFIXES)
                raise SourceError(f"{self.uri}: no {kinds} images in {self.folder}")
        self._files = files
        self._next = 0

    @property
    def files(self) -> list[Path]:
        """The images of the sequence, in reading order (listed at open)."""
        return list(self._files)

    def read(self, timeout_s: float) -> np.ndarray | None:
        cv2 = _cv2()
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image  # type: ignore[no-any-return]
            log.warning("%s: skipping %s (missing or not a readable image)", self.uri, path.name)
        raise SourceEnded(f"{self.uri}: end of image sequence ({len(self._files)} images)")

    def close(self) -> None:
        self._files = []
        self._next = 0
