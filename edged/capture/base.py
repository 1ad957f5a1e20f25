"""The Source protocol every capture backend implements, and its two exceptions.

A source knows how to open a URI and hand back one image at a time; pacing, reconnects, stall
detection and the latest-frame handoff live in `edged.capture.worker`, so backends stay small.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from edged.types import PixelFormat


class SourceError(Exception):
    """Opening or reading a source failed; the message names the URI and what went wrong."""


class SourceEnded(Exception):
    """A finite source (file, image folder) has no more frames."""


@runtime_checkable
class Source(Protocol):
    """One camera, stream, file or image folder.

    `read` returns a numpy HWC uint8 image or a device object with `__cuda_array_interface__`,
    None when no frame came within `timeout_s`; it raises `SourceEnded` at the end of a file or
    folder and `SourceError` on failure. A source may also offer `grab(timeout_s) -> bool` (take the
    next frame without decoding it; False: none within the timeout) and `retrieve()` (decode the one
    grabbed): the worker then decodes only the frames it takes (see `Splittable`). A source is not thread-safe: one thread opens, reads and
    closes it (the capture watcher may abandon a thread stuck inside `read`, see worker.py).
    """

    uri: str
    fmt: PixelFormat
    nominal_fps: float | None
    # Cameras and streams are live; files and folders are not (the worker may pace or block them).
    live: bool

    def open(self) -> None: ...

    def read(self, timeout_s: float) -> Any | None: ...

    def close(self) -> None: ...


@runtime_checkable
class Splittable(Protocol):
    """A source that can take a frame off the wire and decode it later (OpenCV's grab/retrieve)."""

    def grab(self, timeout_s: float) -> bool: ...

    def retrieve(self) -> Any: ...


def redact(uri: str) -> str:
    """The URI with any password replaced, fit for log lines (rtsp://user:pass@host → rtsp://user:***@host)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri
    cred, _, host = rest.rpartition("@")
    if ":" in cred.split("/")[0]:
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri
