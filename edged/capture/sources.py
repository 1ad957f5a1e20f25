"""Turning a camera's URI into a `Source`: which reader (FFmpeg, OpenCV, jetson-utils, NVDEC, nvJPEG) and
its options."""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from edged.capture import ffmpeg, jetson
from edged.capture.base import Source, SourceEnded, SourceError, redact
from edged.capture.decode import Decode, DecodeChoice, gpu_candidates
from edged.capture.ffmpeg import FFmpegSource
from edged.capture.opencv import STREAM_SCHEMES, ImageFolderSource, OpenCVSource, split_uri
from edged.capture.worker import CameraCapture

__all__ = [
    "CameraCapture",
    "DecodeChoice",
    "FFmpegSource",
    "ImageFolderSource",
    "OpenCVSource",
    "Source",
    "SourceEnded",
    "SourceError",
    "make_source",
    "redact",
    "resolve_path",
]

Backend = Literal["auto", "opencv", "jetson"]
Transport = Literal["auto", "tcp", "udp"]

log = logging.getLogger(__name__)
_warned_transport: set[str] = set()


def is_image_sequence(path: str) -> bool:
    """A file:// path that names a folder (`dir/`) or a glob (`frames/*.jpg`), as jetson-utils reads them.
    An existing file whose name merely contains glob characters (`cam[1].mp4`) is that file."""
    p = Path(path)
    return path.endswith("/") or p.is_dir() or (glob.has_magic(path) and not p.is_file())


def ffmpeg_options(transport: Transport, latency_ms: int | None) -> dict[str, str]:
    """FFmpeg RTSP demuxer options for one camera (see FFmpegSource, OpenCVSource)."""
    opts: dict[str, str] = {}
    if transport != "auto":
        opts["rtsp_transport"] = transport
    if latency_ms is not None:
        opts["max_delay"] = str(latency_ms * 1000)  # microseconds: the reorder/jitter buffer
    return opts


def resolve_path(uri: str, base_dir: Path | None) -> str | None:
    """The filesystem path of a file:// or dir:// URI (or a bare path), relative paths taken from base_dir;
    else None. A trailing "/" is kept (jetson-utils reads `file://dir/` as an image sequence)."""
    scheme, rest = split_uri(uri)
    if scheme == "" and rest:
        scheme = "file"
    if scheme not in ("file", "dir"):
        return None
    p = Path(rest).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p) + ("/" if rest.endswith("/") and str(p) != "/" else "")


def make_source(
    uri: str,
    *,
    backend: Backend = "auto",
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    loop: bool = False,
    timeout_s: float = 5.0,
    base_dir: Path | None = None,
    rtsp_transport: Transport = "auto",
    rtsp_latency_ms: int | None = None,
    decode: Decode = "cpu",
) -> Source:
    """Build (not open) the Source for a URI.

    auto picks jetson-utils when it is importable and the scheme is csi/v4l2/rtsp/file; else the CPU
    decodes video files and network streams with FFmpeg through PyAV (every frame at its real size, also
    when the resolution changes: edged.capture.ffmpeg says why not OpenCV) and reads V4L2 cameras and
    image folders with OpenCV; `opencv` takes OpenCV for everything (also where PyAV is missing). With
    decode: auto or gpu, files, streams and JPEG folders go to the GPU's decoders
    (edged.capture.decode), the CPU source being the fallback.
    `fps`, `width`, `height` are requests to cameras that accept them; `loop` lets the jetson backend
    loop files itself (the worker loops other sources by reopening them). `timeout_s` bounds FFmpeg's
    open and read of network streams; `rtsp_transport` and `rtsp_latency_ms` apply to rtsp:// only.
    A bare path is a file:// one. Raises SourceError for a URI no backend can take.
    """
    scheme, _ = split_uri(uri)
    path = resolve_path(uri, base_dir)
    if scheme == "" and path is not None:
        scheme, uri = "file", f"file://{path}"
    jetson_missing = jetson.available()
    if scheme == "csi" and (backend == "opencv" or jetson_missing):
        why = f"; {jetson_missing}" if jetson_missing else ""
        raise SourceError(f"{uri}: csi:// needs jetson-utils (JetPack){why}")
    if backend == "jetson" and jetson_missing:
        raise SourceError(f"{redact(uri)}: backend jetson requested but {jetson_missing}")
    use_jetson = backend == "jetson" or (
        backend == "auto" and jetson_missing is None and scheme in jetson.JETSON_SCHEMES
    )
    if use_jetson:
        if scheme not in jetson.JETSON_SCHEMES:
            raise SourceError(f"{redact(uri)}: the jetson backend takes csi://, v4l2://, rtsp://, file://")
        # jetson-utils resolves file:// itself, so hand it the absolute path.
        jetson_uri = f"file://{path}" if scheme == "file" and path else uri
        if scheme == "rtsp" and rtsp_transport != "auto" and uri not in _warned_transport:
            _warned_transport.add(uri)
            log.warning(
                "%s: rtsp.transport %s is not applied: jetson-utils has no transport option (backend: opencv has)",
                redact(uri),
                rtsp_transport,
            )
        return jetson.JetsonSource(
            uri,
            target=jetson_uri,
            width=width,
            height=height,
            fps=fps,
            loop=loop,
            latency_ms=rtsp_latency_ms if scheme == "rtsp" else None,
        )
    folder = scheme == "dir" or (scheme == "file" and path is not None and is_image_sequence(path))
    options = ffmpeg_options(rtsp_transport, rtsp_latency_ms) if scheme in ("rtsp", "rtsps") else None
    if folder:
        cpu: Callable[[], Source] = lambda: ImageFolderSource(uri, path=path)  # noqa: E731
    elif (scheme == "file" or scheme in STREAM_SCHEMES) and backend == "auto" and ffmpeg.available() is None:
        cpu = lambda: FFmpegSource(  # noqa: E731
            uri,
            target=path if scheme == "file" and path is not None else uri,
            live=scheme != "file",
            timeout_s=timeout_s,
            ffmpeg_options=options,
        )
    elif scheme in ("file", "v4l2") or scheme in STREAM_SCHEMES:
        cpu = lambda: OpenCVSource(  # noqa: E731
            uri,
            path=path,
            width=width,
            height=height,
            fps=fps,
            timeout_ms=int(timeout_s * 1000),
            ffmpeg_options=options,
        )
    else:
        raise SourceError(
            f"{redact(uri)}: unsupported source (use a path, file://, dir://, rtsp://, v4l2:///dev/videoN, /dev/videoN or csi://N)"
        )
    if decode == "cpu":
        return cpu()
    if scheme == "v4l2":
        if decode == "gpu":
            raise SourceError(
                f"{redact(uri)}: decode: gpu takes files, streams and JPEG folders; V4L2 cameras decode on the CPU"
            )
        return cpu()
    live = scheme in STREAM_SCHEMES
    if live and (rtsp_transport != "auto" or rtsp_latency_ms is not None) and uri not in _warned_transport:
        _warned_transport.add(uri)
        log.warning(
            "%s: rtsp.transport and rtsp.latency_ms apply only when OpenCV decodes it (decode: cpu), not NVDEC",
            redact(uri),
        )
    target = path if path is not None else uri
    return DecodeChoice(
        uri,
        decode,
        gpu_candidates(uri, target, folder=folder, live=live),
        cpu if decode == "auto" else None,
        folder=folder,
        live=live,
    )
