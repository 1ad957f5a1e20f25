"""Capture through NVIDIA's hardware video decoder (NVDEC), with NVIDIA's PyNvVideoCodec: H.264, H.265,
AV1, VP9 (whatever the GPU's NVDEC takes) from files and RTSP, frames left in GPU memory as NV12.

The calls, as PyNvVideoCodec 2.2 defines them (checked on the lent H100/H200, docs/gpu.md):
- `CreateDemuxer(filename=...)`: FFmpeg inside the wheel (files, rtsp://); iterating it yields packets;
  `GetNvCodecId()`, `Width()`, `Height()`, `FrameRate()`, `ColorSpace()`, `ColorRange()` describe
  the stream;
- `CreateDecoder(gpuid, codec, cudacontext, cudastream, usedevicememory=True, latency=...)`: NVDEC on
  our (primary) context and stream; `Decode(packet)` returns 0..n frames (the decoder's reorder delay)
  in the decoder's own surfaces, which later calls reuse. Live sources use the low-latency mode (each
  packet marked end-of-picture: a frame out per packet, display order).

Only the frames the camera takes (`grab` decodes every packet, `retrieve` keeps the newest) are copied
out, at once, into memory the frame owns (`edged.gpu.frames.Nv12Frame`, pooled) on this source's
stream, which is synchronised before the frame is published: the chain reads it in place.

NOT RUN IN CI: PyNvVideoCodec needs an NVIDIA driver with NVDEC (libnvcuvid). `available()` and the
choice of this source (edged.capture.decode) are tested everywhere; the decoding itself on the GPU
machine (tests/gpu/test_decode_gpu.py).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from edged.capture.base import SourceEnded, SourceError, redact
from edged.gpu.context import _driver, gpu_available, gpu_thread
from edged.gpu.frames import FrameMemory, Nv12Frame
from edged.types import PixelFormat

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "rtp", "http", "https")
_import_lock = threading.Lock()
_nvc: dict[str, Any] = {}


def pynvvideocodec() -> Any:
    """PyNvVideoCodec, imported once (it logs at INFO and probes the driver on import); None when it
    cannot be imported (`import_error` says why)."""
    with _import_lock:
        if "m" not in _nvc:
            try:
                import PyNvVideoCodec as nvc

                logging.getLogger("PyNvVideoCodec").setLevel(logging.WARNING)
                _nvc["m"], _nvc["error"] = nvc, None
            except Exception as exc:  # ImportError, or RuntimeError/OSError: no driver, no libnvcuvid
                _nvc["m"], _nvc["error"] = (
                    None,
                    f"PyNvVideoCodec is not importable ({type(exc).__name__}: {exc})",
                )
        return _nvc["m"]


def import_error() -> str:
    pynvvideocodec()
    return str(_nvc["error"])


def available() -> str | None:
    """None when NVDEC decoding can run here, else why not (logs, /stats, `edged doctor`)."""
    reason = gpu_available()
    if reason is not None:
        return reason
    if pynvvideocodec() is None:
        return import_error() + "; pip install 'edged[gpu-decode]'"
    return None


class UseJpeg(SourceError):
    """The stream is Motion-JPEG: nvJPEG decodes it (edged.capture.nvjpeg), not NVDEC."""


def colour(demuxer: Any) -> tuple[str, bool]:
    """(matrix, full_range) the stream declares (BT.709 / BT.601; range JPEG = full). Unspecified (most
    cameras send no colour description) means BT.601 limited range, as FFmpeg's swscale (so OpenCV)
    converts it: a GPU-decoded frame is then the same picture as the CPU-decoded one (measured on an
    H100: 0.63 levels mean, the decoders' outputs being the same)."""
    space = str(call(demuxer, "ColorSpace", ""))
    rng = str(call(demuxer, "ColorRange", ""))
    matrix = "bt709" if "709" in space else "bt2020" if "2020" in space else "bt601"
    return matrix, "JPEG" in rng.upper()


def call(obj: Any, name: str, default: Any) -> Any:
    """obj.name(), or `default` when the wheel lacks the method or it fails."""
    try:
        return getattr(obj, name)()
    except Exception:
        return default


def frame_planes(frame: Any, width: int, height: int) -> tuple[int, int, int, int]:
    """(luma ptr, luma pitch, chroma ptr, chroma pitch) of a decoded NV12 frame: from its per-plane CUDA
    array views when it has them (`cuda()`), else its plane pointers with packed rows."""
    try:
        views = frame.cuda()
        if len(views) >= 2:
            y, uv = views[0].__cuda_array_interface__, views[1].__cuda_array_interface__
            return (int(y["data"][0]), _pitch(y, width), int(uv["data"][0]), _pitch(uv, width))
    except Exception as exc:  # older wheels: no per-plane views
        log.debug("NV12 plane views unavailable (%s); using plane pointers", exc)
    return int(frame.GetPtrToPlane(0)), width, int(frame.GetPtrToPlane(1)), width


def _pitch(cai: dict[str, Any], width: int) -> int:
    strides = cai.get("strides")
    return int(strides[0]) if strides else width


def picture_size(frame: Any, default: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a decoded NV12 frame: its buffer is (height * 3/2, width)."""
    try:
        shape = tuple(int(d) for d in frame.shape)
        if len(shape) >= 2 and shape[0] > 0 and shape[1] > 0:
            return shape[1], shape[0] * 2 // 3
    except Exception:
        pass
    return default


class NvdecSource:
    """A file or stream decoded by NVDEC; frames are `Nv12Frame`s in device memory (fmt "nv12")."""

    fmt: PixelFormat = "nv12"
    decoder = "nvdec"

    def __init__(self, uri: str, *, target: str, live: bool, gpu: int = 0) -> None:
        self.uri = uri
        self.target = target
        self.live = live
        self.gpu = gpu
        self.nominal_fps: float | None = None
        self.codec = "?"
        self._dmx: Any = None
        self._dec: Any = None
        self._packets: Any = None
        self._pending: collections.deque[Any] = collections.deque()
        self._grabbed: Any = None
        self._size = (0, 0)
        self._colour = ("bt709", False)
        self._stream: Any = None
        self._memory: FrameMemory | None = None
        self._flushed = False

    def open(self) -> None:
        nvc = pynvvideocodec()
        name = redact(self.uri)
        if nvc is None:
            raise SourceError(f"{name}: {import_error()}")
        try:
            with gpu_thread() as ctx:
                self._stream = _driver().Stream()
                self._memory = FrameMemory()
                self._dmx = nvc.CreateDemuxer(filename=self.target)
                codec = self._dmx.GetNvCodecId()
                self.codec = str(codec).rsplit(".", 1)[-1].lower()
                if "jpeg" in self.codec:
                    raise UseJpeg(f"{name}: Motion-JPEG")
                latency = (
                    nvc.DisplayDecodeLatencyType.LOW if self.live else nvc.DisplayDecodeLatencyType.NATIVE
                )
                self._dec = nvc.CreateDecoder(
                    gpuid=self.gpu,
                    codec=codec,
                    cudacontext=int(ctx.handle),
                    cudastream=int(self._stream.handle),
                    usedevicememory=True,
                    latency=latency,
                )
                self._size = (int(call(self._dmx, "Width", 0)), int(call(self._dmx, "Height", 0)))
                self._colour = colour(self._dmx)
                rate = float(call(self._dmx, "FrameRate", 0.0) or 0.0)
                self.nominal_fps = rate if 0.0 < rate <= 1000.0 else None
                self._packets = iter(self._dmx)
        except SourceError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SourceError(f"{name}: NVDEC cannot decode it ({type(exc).__name__}: {exc})") from exc

    def grab(self, timeout_s: float) -> bool:
        """Decode packets until a frame is out; False never (a file ends, a stream fails or blocks)."""
        if self._dec is None:
            raise SourceError(f"{redact(self.uri)}: read before open")
        try:
            with gpu_thread():
                while not self._pending:
                    self._decode_next()
        except (SourceEnded, SourceError):
            raise
        except Exception as exc:
            raise SourceError(
                f"{redact(self.uri)}: NVDEC decode failed ({type(exc).__name__}: {exc})"
            ) from exc
        self._grabbed = self._pending.popleft()
        return True

    def _decode_next(self) -> None:
        nvc = _nvc["m"]
        try:
            packet = next(self._packets)
        except StopIteration:
            if self._flushed:
                self._end()
            self._flushed = True
            self._pending.extend(self._flush())
            if not self._pending:
                self._end()
            return
        if self.live:
            packet.decode_flag = nvc.VideoPacketFlag.ENDOFPICTURE
        self._pending.extend(self._dec.Decode(packet))

    def _flush(self) -> list[Any]:
        """The frames NVDEC still holds at the end of the stream (an empty packet drains it)."""
        try:
            return list(self._dec.Decode(_nvc["m"].PacketData()))
        except Exception as exc:  # the demuxer's own last (empty) packet may have drained it already
            log.debug("%s: NVDEC flush: %s", redact(self.uri), exc)
            return []

    def _end(self) -> None:
        if self.live:
            raise SourceError(f"{redact(self.uri)}: stream ended")
        raise SourceEnded(f"{redact(self.uri)}: end of file")

    def retrieve(self) -> Nv12Frame:
        """The frame `grab` took, copied out of the decoder's surface into memory of its own."""
        frame, self._grabbed = self._grabbed, None
        if frame is None or self._memory is None:
            raise SourceError(f"{redact(self.uri)}: retrieve without a grabbed frame")
        width, height = picture_size(frame, self._size)
        y, y_pitch, uv, uv_pitch = frame_planes(frame, width, height)
        with gpu_thread():
            out = Nv12Frame.copy_of(
                self._memory, y, uv, y_pitch, uv_pitch, width, height, self._stream, *self._colour
            )
            self._stream.synchronize()  # complete before it enters the chain (other streams read it)
        return out

    def read(self, timeout_s: float) -> Nv12Frame | None:
        self.grab(timeout_s)
        return self.retrieve()

    def close(self) -> None:
        self._pending.clear()
        self._grabbed = self._dec = self._dmx = self._packets = None
        if self._stream is not None:
            try:
                with gpu_thread():
                    self._stream.synchronize()
                    if self._memory is not None:
                        self._memory.close()
            except Exception as exc:
                log.debug("%s: NVDEC close: %s", redact(self.uri), exc)
        self._stream = self._memory = None
