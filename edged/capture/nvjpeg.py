"""Capture of JPEG pictures decoded on the GPU (nvJPEG, and the hardware JPEG engines of A100/H100 and
Jetson Orin) with NVIDIA's nvImageCodec: folders of JPEG images and Motion-JPEG video files, frames left
in GPU memory as RGB.

The calls, as nvImageCodec 0.9 defines them: `Decoder()`, `decode(data: bytes, cuda_stream=...)` returns
an `Image` in device memory (uint8 HWC RGB, `__cuda_array_interface__`) that owns its buffer, or None
when the data is not a picture it can decode. A Motion-JPEG file's frames come out of PyNvVideoCodec's
demuxer as packets (each one JPEG). The decode runs on this source's stream, which is synchronised
before the frame is published; the Image becomes the frame (`edged.gpu.frames.DeviceRgb`: read in
place by the chain).

NOT RUN IN CI: nvImageCodec needs the CUDA runtime and nvJPEG. The selection (edged.capture.decode) is
tested everywhere; the decoding on the GPU machine (tests/gpu/test_decode_gpu.py).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any

from edged.capture import nvdec
from edged.capture.base import SourceEnded, SourceError, redact
from edged.capture.opencv import ImageFolderSource
from edged.gpu.context import _driver, gpu_available, gpu_thread
from edged.gpu.frames import DeviceRgb
from edged.types import PixelFormat

log = logging.getLogger(__name__)

JPEG_SUFFIXES = (".jpg", ".jpeg")
_lock = threading.Lock()
_state: dict[str, Any] = {}


def _codec() -> Any:
    """nvImageCodec, imported once."""
    with _lock:
        if "m" not in _state:
            try:
                from nvidia import nvimgcodec

                _state["m"], _state["error"] = nvimgcodec, None
            except Exception as exc:
                _state["m"] = None
                _state["error"] = f"nvImageCodec is not importable ({type(exc).__name__}: {exc})"
        return _state["m"]


def available() -> str | None:
    """None when nvJPEG decoding can run here, else why not."""
    reason = gpu_available()
    if reason is not None:
        return reason
    if _codec() is None:
        return str(_state["error"]) + "; pip install 'edged[gpu-decode]'"
    return None


class _JpegDecoder:
    """One nvImageCodec decoder and the stream it decodes on (per source: a source is one thread's)."""

    def __init__(self) -> None:
        codec = _codec()
        if codec is None:
            raise SourceError(str(_state["error"]))
        with gpu_thread():
            self.stream = _driver().Stream()
            self._dec = codec.Decoder()

    def decode(self, data: bytes, where: str) -> DeviceRgb | None:
        with gpu_thread():
            image = self._dec.decode(data, cuda_stream=int(self.stream.handle))
            self.stream.synchronize()
        if image is None:
            log.warning("%s: nvJPEG could not decode it; skipped", where)
            return None
        return DeviceRgb.wrap(image)

    def close(self) -> None:
        with gpu_thread():
            self.stream.synchronize()


class JpegFolderSource:
    """A folder (or glob) of JPEG images, in name order, decoded on the GPU; the listing is the OpenCV
    folder source's (`ImageFolderSource`), so both read the same files in the same order."""

    fmt: PixelFormat = "rgb8"
    live = False
    decoder = "nvjpeg"
    codec = "jpeg"

    def __init__(self, uri: str, *, path: str | None = None) -> None:
        self.uri = uri
        self._listing = ImageFolderSource(uri, path=path)
        self.nominal_fps: float | None = None
        self._dec: _JpegDecoder | None = None
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        self._listing.open()
        files = self._listing.files
        other = [p.name for p in files if p.suffix.lower() not in JPEG_SUFFIXES]
        if other:
            raise SourceError(f"{self.uri}: not only JPEG images ({other[0]}, ...): nvJPEG decodes JPEG only")
        self._files, self._next = files, 0
        self._dec = _JpegDecoder()

    def read(self, timeout_s: float) -> DeviceRgb | None:
        assert self._dec is not None
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.warning("%s: skipping %s (%s)", self.uri, path.name, exc)
                continue
            image = self._dec.decode(data, f"{self.uri}: {path.name}")
            if image is not None:
                return image
        raise SourceEnded(f"{self.uri}: end of image sequence ({len(self._files)} images)")

    def close(self) -> None:
        if self._dec is not None:
            self._dec.close()
        self._dec, self._files = None, []


class MjpegSource:
    """A Motion-JPEG file or stream: PyNvVideoCodec's demuxer hands over each frame's JPEG, nvJPEG
    decodes it."""

    fmt: PixelFormat = "rgb8"
    decoder = "nvjpeg"
    codec = "mjpeg"

    def __init__(self, uri: str, *, target: str, live: bool = False) -> None:
        self.uri = uri
        self.target = target
        self.live = live
        self.nominal_fps: float | None = None
        self._dec: _JpegDecoder | None = None
        self._packets: Any = None
        self._grabbed: bytes | None = None

    def open(self) -> None:
        nvc = nvdec.pynvvideocodec()
        if nvc is None:
            raise SourceError(f"{redact(self.uri)}: {nvdec.import_error()}")
        try:
            dmx = nvc.CreateDemuxer(filename=self.target)
        except Exception as exc:
            raise SourceError(f"{redact(self.uri)}: cannot demux it ({type(exc).__name__}: {exc})") from exc
        if "JPEG" not in str(dmx.GetNvCodecId()).upper():
            raise SourceError(f"{redact(self.uri)}: not Motion-JPEG ({dmx.GetNvCodecId()})")
        rate = float(nvdec.call(dmx, "FrameRate", 0.0) or 0.0)
        self.nominal_fps = rate if 0.0 < rate <= 1000.0 else None
        self._packets = iter(dmx)
        self._dmx = dmx
        self._dec = _JpegDecoder()

    def grab(self, timeout_s: float) -> bool:
        """Take the next frame's JPEG off the file (not decoded: only taken frames are)."""
        for packet in self._packets:
            size = int(packet.bsl)
            if size > 0:
                self._grabbed = ctypes.string_at(int(packet.bsl_data), size)
                return True
        if self.live:
            raise SourceError(f"{redact(self.uri)}: stream ended")
        raise SourceEnded(f"{redact(self.uri)}: end of file")

    def retrieve(self) -> DeviceRgb:
        data, self._grabbed = self._grabbed, None
        if data is None or self._dec is None:
            raise SourceError(f"{redact(self.uri)}: retrieve without a grabbed frame")
        image = self._dec.decode(data, redact(self.uri))
        if image is None:
            raise SourceError(f"{redact(self.uri)}: a frame nvJPEG cannot decode")
        return image

    def read(self, timeout_s: float) -> DeviceRgb | None:
        self.grab(timeout_s)
        return self.retrieve()

    def close(self) -> None:
        if self._dec is not None:
            self._dec.close()
        self._dec = self._packets = self._grabbed = None
        self._dmx = None
