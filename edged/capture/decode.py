"""Where a camera's frames are decoded: the camera's `decode: auto | cpu | gpu`.

- gpu: on the GPU, frames born in device memory. NVDEC (edged.capture.nvdec) for H.264, H.265, AV1, VP9
  files and streams (rtsp://, http://); nvJPEG (edged.capture.nvjpeg) for Motion-JPEG files and streams
  and folders of JPEG images. A camera whose GPU decoder cannot open its source fails that open with the
  reason (and retries with the usual backoff, one log line per attempt).
- cpu: FFmpeg on the CPU, as before (through PyAV, edged.capture.ffmpeg; OpenCV with backend: opencv).
- auto: the GPU decoder when it works for this source, else the CPU one, saying why once (log, `/stats`
  decode.note, `edged doctor`). The runner resolves auto to cpu when the camera's chain preprocesses
  on the CPU (a device frame would only be downloaded again).

`DecodeChoice` is the camera's Source: at every (re)open it tries the candidates in order and delegates
to the first that opens. `decoder` (nvdec, nvjpeg, ffmpeg, opencv), `codec` and `note` (why not the GPU) say
what it chose. V4L2 and CSI cameras, and jetson-utils sources (which decode on NVDEC themselves), are
not its business: `make_source` builds those as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from edged.capture import nvdec, nvjpeg
from edged.capture.base import Source, SourceError, Splittable, redact
from edged.types import PixelFormat

log = logging.getLogger(__name__)

Decode = Literal["auto", "cpu", "gpu"]
_said: set[tuple[str, str]] = set()  # (uri, note) already logged: reopens say it at debug only
_said_lock = threading.Lock()


def gpu_candidates(uri: str, target: str, *, folder: bool, live: bool) -> list[Callable[[], Source]]:
    """The GPU decoders that may take this source, in the order to try them."""
    if folder:
        return [lambda: nvjpeg.JpegFolderSource(uri, path=target)]
    return [
        lambda: nvdec.NvdecSource(uri, target=target, live=live),
        lambda: nvjpeg.MjpegSource(uri, target=target, live=live),
    ]


def unavailable(folder: bool) -> str | None:
    """Why no GPU decoder can run here at all (None: one may), without opening anything."""
    return nvjpeg.available() if folder else nvdec.available()


class DecodeChoice:
    """A source decoded on the GPU when it can be (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        mode: Decode,
        gpu: list[Callable[[], Source]],
        cpu: Callable[[], Source] | None,
        *,
        folder: bool = False,
        live: bool = False,
    ) -> None:
        if mode == "cpu" or (mode == "gpu" and not gpu) or (mode == "auto" and cpu is None and not gpu):
            raise ValueError(f"nothing to decode {uri} with in mode {mode}")
        self.uri = uri
        self.mode = mode
        self.live = live
        self._gpu = gpu
        self._cpu = cpu
        self._folder = folder
        self._src: Source | None = None
        self.decoder = "?"
        self.codec = "?"
        self.note: str | None = None
        self.nominal_fps: float | None = None
        self.fmt: PixelFormat = "bgr8"  # the opened decoder's (nv12, rgb8 or bgr8)
        self._grabbed: Any = None
        self._split = False

    def open(self) -> None:
        why = unavailable(self._folder)
        errors: list[str] = [why] if why else []
        if not why:
            for make in self._gpu:
                src = make()
                try:
                    src.open()
                except nvdec.UseJpeg:
                    continue  # Motion-JPEG: the next candidate (nvJPEG) takes it
                except SourceError as exc:
                    errors.append(str(exc))
                    continue
                self._use(src, None)
                return
        reason = "; ".join(errors) or "no GPU decoder takes this source"
        if self.mode == "gpu" or self._cpu is None:
            raise SourceError(f"{redact(self.uri)}: decode: gpu: {reason}")
        src = self._cpu()
        src.open()
        self._use(src, f"decoding on the CPU: {reason}")

    def _use(self, src: Source, note: str | None) -> None:
        self._src, self.note = src, note
        self._split = isinstance(src, Splittable)  # once per open, not per frame (a Protocol check)
        self.decoder = str(getattr(src, "decoder", "opencv"))
        self.codec = str(getattr(src, "codec", "?"))
        self.nominal_fps = src.nominal_fps
        self.live = bool(src.live)
        self.fmt = src.fmt
        if note is None:
            log.debug("%s: decoding on the GPU (%s, %s)", redact(self.uri), self.decoder, self.codec)
            return
        with _said_lock:
            first = (self.uri, note) not in _said
            _said.add((self.uri, note))
        (log.info if first else log.debug)("%s: %s", redact(self.uri), note)

    def _source(self) -> Source:
        if self._src is None:
            raise SourceError(f"{redact(self.uri)}: read before open")
        return self._src

    def read(self, timeout_s: float) -> Any | None:
        return self._source().read(timeout_s)

    def grab(self, timeout_s: float) -> bool:
        src = self._source()
        if self._split:
            return src.grab(timeout_s)  # type: ignore[attr-defined]
        self._grabbed = src.read(timeout_s)
        return self._grabbed is not None

    def retrieve(self) -> Any:
        src = self._source()
        if self._split:
            return src.retrieve()  # type: ignore[attr-defined]
        image, self._grabbed = self._grabbed, None
        return image

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None
