"""Capture through jetson-utils `videoSource` (CSI, V4L2, RTSP and files, decoded by the Jetson's NVDEC).

NOT EXECUTED IN CI: jetson-utils exists only on a Jetson (built with jetson-inference, not on PyPI),
so only `available()` and the pure URI → argv mapping (`video_source_argv`) are tested here. The
calls follow the API read from jetson-utils sources (fae4b42; see the team notes "jetson-apis.md"):

- `videoSource(uri, argv=[...])`, flags `--input-width= --input-height= --input-rate= --input-loop=
  --num-buffers= --input-latency=` (RTSP jitter buffer, ms); URIs as the docs spell them: a bare path is
  `file://`, `file://dir/` and globs (`"frames/*.jpg"`) are image sequences;
- `Capture(format='rgb8', timeout=ms)` returns None on timeout and raises on EOS or error;
  `IsStreaming()` is False after EOS/close, which is how EOS and failure are told apart;
- RTSP sources never reconnect by themselves: the worker closes this source and makes a new one.

What the real library does beyond those notes (read in its sources and run on an x86 GPU machine with a
discrete GPU, docs/jetson.md):
- `import jetson_utils` is a Python package that needs termcolor, tabulate, docker and requests (and
  imports torch if present); its C extension `jetson_utils_python` has the same classes without them, so
  both are tried and both reasons reported;
- a file:// source plays in real time (the GStreamer pipeline is clock-synced and `Capture` returns the
  newest frame): it paces itself (`self_paced`), so the worker neither paces it again nor can it read a
  file faster (`realtime: false` is not honoured, said once);
- every capture timeout logs a warning on stdout: `--log-level=error` keeps that out of the journal;
- `Capture` returns with its colour conversion queued on CUDA's legacy default stream; edged's streams
  are created blocking (pycuda's default), so the copy out of the ring waits for it.

Frames are `cudaImage`s in device memory. They live in a ring of `numBuffers` buffers that the
decoder reuses: a frame is overwritten after about numBuffers further captures. The worker hands
over only the latest frame; the GPU preprocessor copies it on the device into the frame's own slot
when its first model takes it (edged.gpu.preprocess), so later stages crop that copy, not the ring.
"""

from __future__ import annotations

import logging
from typing import Any

from edged.capture.base import SourceEnded, SourceError, redact
from edged.types import PixelFormat

log = logging.getLogger(__name__)

JETSON_SCHEMES = ("csi", "v4l2", "rtsp", "rtp", "file")


def _import() -> tuple[Any, str | None]:
    """videoSource from `jetson_utils` (the Python package) or else its C extension `jetson_utils_python`."""
    errors = []
    for module in ("jetson_utils", "jetson_utils_python"):
        try:  # pragma: no cover - only where jetson-utils is built (a Jetson, or a GPU machine built by hand)
            return __import__(module, fromlist=["videoSource"]).videoSource, None
        except Exception as exc:  # ImportError, or an OSError from a missing CUDA/GStreamer library
            errors.append(f"{module}: {type(exc).__name__}: {exc}")
    return None, "jetson-utils is not importable (" + "; ".join(errors) + ")"


videoSource, _import_error = _import()


def available() -> str | None:
    """None when jetson-utils can be used, else why not (for logs and `edged doctor`)."""
    return _import_error if videoSource is None else None


def video_source_argv(
    uri: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    loop: bool = False,
    num_buffers: int | None = None,
    latency_ms: int | None = None,
) -> list[str]:
    """The argv videoSource parses for our options (argv[0] is a program name, as with sys.argv)."""
    argv = ["edged", "--log-level=error"]  # its capture timeouts would print a warning twice a second
    if width:
        argv.append(f"--input-width={int(width)}")
    if height:
        argv.append(f"--input-height={int(height)}")
    if fps:
        argv.append(f"--input-rate={float(fps):g}")
    if loop and uri.startswith("file://"):
        # -1 = loop forever inside GStreamer, cheaper than rebuilding the pipeline at each end.
        argv.append("--input-loop=-1")
    if num_buffers:
        argv.append(f"--num-buffers={int(num_buffers)}")
    if latency_ms is not None and uri.startswith("rtsp://"):
        argv.append(f"--input-latency={int(latency_ms)}")  # rtspsrc jitter buffer, ms
    return argv


class JetsonSource:
    """A jetson-utils videoSource behind the Source protocol; frames are cudaImage (rgb8)."""

    fmt: PixelFormat = "rgb8"
    decoder = "jetson-utils"
    # Files play in real time inside GStreamer (the worker must not pace them again; see the docstring).
    self_paced = True

    def __init__(
        self,
        uri: str,
        *,
        target: str | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = False,
        num_buffers: int | None = None,
        latency_ms: int | None = None,
    ) -> None:
        self.uri = uri
        # What videoSource opens: the URI with a relative file path made absolute by the caller.
        self.target = target or uri
        self.live = not uri.startswith("file://")
        self.nominal_fps: float | None = fps
        self._argv = video_source_argv(
            uri,
            width=width,
            height=height,
            fps=fps,
            loop=loop,
            num_buffers=num_buffers,
            latency_ms=latency_ms,
        )
        self._src: Any = None

    def open(self) -> None:  # pragma: no cover - needs a Jetson
        if videoSource is None:
            raise SourceError(f"{redact(self.uri)}: {_import_error}")
        try:
            self._src = videoSource(self.target, argv=self._argv)
        except Exception as exc:
            raise SourceError(f"{redact(self.uri)}: videoSource could not open it ({exc})") from exc
        try:
            rate = float(self._src.GetFrameRate())
            if rate > 0:
                self.nominal_fps = rate
        except Exception:  # GetFrameRate is missing in old builds: keep the requested rate
            pass

    def read(self, timeout_s: float) -> Any | None:  # pragma: no cover - needs a Jetson
        if self._src is None:
            raise SourceError(f"{redact(self.uri)}: read before open")
        try:
            return self._src.Capture(format=self.fmt, timeout=max(0, int(timeout_s * 1000)))
        except Exception as exc:
            if not self._src.IsStreaming():
                raise SourceEnded(f"{redact(self.uri)}: end of stream ({exc})") from exc
            raise SourceError(f"{redact(self.uri)}: capture failed ({exc})") from exc

    def close(self) -> None:  # pragma: no cover - needs a Jetson
        if self._src is not None:
            try:
                self._src.Close()
            except Exception as exc:
                log.debug("%s: Close failed: %s", redact(self.uri), exc)
            self._src = None
