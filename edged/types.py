"""Data that flows between stages: frames in, detections out.

Kept dependency-free (numpy only) so every layer can import it without pulling in a backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

# The channel order of a frame's pixels; "nv12": a hardware decoder's YUV 4:2:0 picture in device memory
# (edged.gpu.frames.Nv12Frame), which everything that needs host pixels receives as RGB (`host_fmt`).
PixelFormat = Literal["bgr8", "rgb8", "nv12"]


def host_fmt(fmt: str) -> Literal["bgr8", "rgb8"]:
    """The channel order of a frame's pixels once on the host (an NV12 frame downloads as RGB)."""
    return "bgr8" if fmt == "bgr8" else "rgb8"


@runtime_checkable
class DeviceArray(Protocol):
    """Anything in GPU memory that exposes the CUDA array interface (cudaImage, CuPy, pycuda, torch)."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...


@dataclass
class Frame:
    """One captured image and where/when it came from.

    `image` is host memory (numpy HWC uint8) or device memory (any object with
    `__cuda_array_interface__`, e.g. a jetson-utils cudaImage, or a frame born on the GPU with a
    `frame_shape`, e.g. an NV12 picture from NVDEC); `fmt` says the channel order.
    """

    camera: str
    seq: int
    image: Any
    fmt: PixelFormat = "bgr8"
    t_mono_ns: int = field(default_factory=time.monotonic_ns)
    t_wall: float = field(default_factory=time.time)
    # Which of its camera's frame buffers (device copy, page-locked staging) this frame may use: given by
    # the camera's chain (edged.pipeline.chain), which knows when the frame that used it before has left.
    # None: a frame used outside a flow (tests, benchmarks); the preprocessor then uses `seq % 2`.
    slot: int | None = None

    @property
    def on_device(self) -> bool:
        return not isinstance(self.image, np.ndarray) and (
            hasattr(self.image, "__cuda_array_interface__") or hasattr(self.image, "frame_shape")
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, channels), whichever memory the image lives in."""
        if isinstance(self.image, np.ndarray):
            h, w = self.image.shape[:2]
            c = 1 if self.image.ndim == 2 else int(self.image.shape[2])
            return int(h), int(w), c
        own = getattr(self.image, "frame_shape", None)  # planar device frames (NV12) say their picture's
        if own is not None:
            return int(own[0]), int(own[1]), int(own[2])
        shp = tuple(self.image.__cuda_array_interface__["shape"])
        return int(shp[0]), int(shp[1]), int(shp[2]) if len(shp) > 2 else 1

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]


@dataclass
class Detection:
    """A result of one stage.

    Detectors fill `box` (x1, y1, x2, y2 in frame pixels) and, for rotated text, `polygon` (4 corner
    points, clockwise from top-left). Classifiers and recognizers produce a Detection that repeats
    the parent's geometry and sets `label` (class name or read text). `children` maps a secondary
    stage's name to the results it produced on this detection's crop.
    """

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int = -1
    polygon: list[tuple[float, float]] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    children: dict[str, list[Detection]] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def quad(self) -> np.ndarray:
        """4x2 float32 corners (polygon if rotated, else the axis box), clockwise from top-left."""
        if self.polygon is not None:
            return np.asarray(self.polygon, dtype=np.float32).reshape(4, 2)
        x1, y1, x2, y2 = self.box
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float32)

    def to_dict(self, parent: Detection | None = None) -> dict[str, Any]:
        """JSON-ready dict. A child that only labels its parent's region (classifier, recognizer)
        omits the geometry it shares with the parent."""
        out: dict[str, Any] = {"label": self.label, "score": round(float(self.score), 4)}
        same_region = parent is not None and self.box == parent.box and self.polygon == parent.polygon
        if not same_region:
            out["box"] = [round(float(v), 1) for v in self.box]
            if self.polygon is not None:
                out["polygon"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.polygon]
        if self.class_id >= 0:
            out["class_id"] = self.class_id
        if self.attrs:
            out["attrs"] = self.attrs
        if self.children:
            out["children"] = {k: [d.to_dict(self) for d in v] for k, v in self.children.items()}
        return out


@dataclass
class FrameResult:
    """What the chain made of one frame: top-level detections (with nested children) and timings."""

    frame: Frame
    detections: list[Detection]
    latency_ms: dict[str, float] = field(default_factory=dict)
    # The tracker's new/updated/ended tracks for this frame (edged.pipeline.tracker.TrackUpdate), if tracking.
    tracks: Any = None
    # The frame's scene analytics events (edged.analytics.SceneEvent: line crossings, zone changes).
    analytics: list[Any] = field(default_factory=list)
