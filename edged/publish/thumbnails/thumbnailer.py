"""Event thumbnails: the best crop of each event's object (of each track, with `events: tracks`) as a JPEG.

What runs where:
- On the camera's pipeline thread (the sink), per frame, only cheap work: `attach()` names the file in
  the event and queues a copy of the crop of the frame's largest detection (a few KB); in tracks mode
  `observe()` keeps each track's best crop so far, computing the sharpness of a crop only when its box
  grew by 10 % or every EVAL_EVERY frames, and copying it only when it wins.
- On one shared worker thread (`edged-thumbs`): scaling, JPEG encoding, the disk write
  (ThumbnailStore: size cap, oldest deleted first) and the optional MQTT publish.
- The queue is bounded (`thumbnails.queue`); when it is full the thumbnail is dropped and counted
  (edged_thumbnails_dropped_total{reason="queue_full"}) and the event simply names no file, so a slow
  disk never slows a camera.

"Best", for a track, is the largest and sharpest of its crops: box area times the variance of the
Laplacian (a standard focus measure), so a blurred or small view of a plate loses to a sharp, close one.
For a frame's event it is the crop of the frame's largest detection (area times score): the objects of
one frame are different objects, and the event's own frame is the only view of them it has.
The file name is the event id (a track's id for track events: `<device>:<camera>:<run>:t<track>`) plus
`.jpg`; the health server serves it at /events/<name>.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from edged.config.schema import ThumbnailsConfig
from edged.publish.thumbnails.store import ThumbnailStore
from edged.types import Frame, FrameResult, host_fmt

log = logging.getLogger(__name__)

PublishFn = Callable[[str, bytes], bool]
MARGIN = 0.08  # of the box's longer side, so a plate's edge characters are not cut
EVAL_EVERY = 5  # frames between sharpness checks of a track whose box did not grow (per-frame cost)
MAX_TRACKS = 1024  # per-track best crops kept; beyond, the oldest go (tracks of a restarted camera)
DROP_REASONS = ("queue_full", "no_host_image", "error")


@dataclass
class _Job:
    name: str
    camera: str
    fmt: str
    crop: np.ndarray  # a copy, a few KB (a queued whole frame would pin megabytes)
    label: str


@dataclass
class _Best:
    quality: float
    area: float
    crop: np.ndarray
    fmt: str
    label: str
    checked_seq: int = -1  # frame of the last comparison with this track's best
    written: bool = False  # the current crop is on disk (or queued)


def host_image(frame: Frame) -> np.ndarray | None:
    """The frame as a host array; device frames are downloaded if they can be (as the snapshot does)."""
    if isinstance(frame.image, np.ndarray):
        return frame.image
    get = getattr(frame.image, "get", None)
    return np.asarray(get()) if callable(get) else None


def crop_box(box: tuple[float, float, float, float], w: int, h: int) -> tuple[int, int, int, int]:
    """`box` (x1, y1, x2, y2; for a rotated text box, its bounding box) plus a margin, clipped to a
    w x h image, in whole pixels. Plain arithmetic: this runs per detection per frame."""
    x1, y1, x2, y2 = box
    pad = MARGIN * max(x2 - x1, y2 - y1)
    xa, ya = max(0, int(x1 - pad)), max(0, int(y1 - pad))
    xb, yb = min(w, math.ceil(x2 + pad)), min(h, math.ceil(y2 + pad))
    return xa, ya, xb, yb


def crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The region of `box` plus a margin (`crop_box`), clipped to the image: a view, no copy."""
    xa, ya, xb, yb = crop_box(box, image.shape[1], image.shape[0])
    return image[ya:yb, xa:xb]


class FrameCrops:
    """Regions of one frame as host arrays: from a host frame (views), from a frame born on the GPU
    (each region converted and downloaded alone: edged.gpu.frames), else from the frame downloaded once;
    None when the frame cannot reach the host (a jetson-utils cudaImage)."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self._host: np.ndarray | None = frame.image if isinstance(frame.image, np.ndarray) else None
        region = getattr(frame.image, "region", None)
        self._region = region if self._host is None and callable(region) else None
        self._tried = self._host is not None or self._region is not None

    def __call__(self, box: tuple[float, float, float, float]) -> np.ndarray | None:
        """The region of `box` plus a margin (`crop_box`)."""
        if self._region is not None:
            xa, ya, xb, yb = crop_box(box, self.frame.width, self.frame.height)
            return np.asarray(self._region((float(xa), float(ya), float(xb), float(yb))))
        if not self._tried:
            self._host, self._tried = host_image(self.frame), True
        return None if self._host is None else crop(self._host, box)


def sharpness(region: np.ndarray) -> float:
    """Variance of the Laplacian of the crop's green channel (a stand-in for grey), sampled down to about
    128 px: numpy on a few thousand pixels, because this runs per frame per track on the camera's thread
    and OpenCV's threaded calls cost hundreds of microseconds there on a busy 2-core board."""
    if region.size == 0:
        return 0.0
    step = max(1, max(region.shape[:2]) // 128)
    g = (region[::step, ::step, 1] if region.ndim == 3 else region[::step, ::step]).astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def quality(region: np.ndarray) -> float:
    return float(region.shape[0] * region.shape[1]) * (1.0 + sharpness(region))


def topic_label(label: str) -> str:
    """A label as one MQTT topic level: no wildcards or separators (OCR text can contain anything)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", label)[:64] or "object"


class ThumbnailMetrics:
    def __init__(self, registry: CollectorRegistry, cameras: list[str]) -> None:
        self.written = Counter(
            "edged_thumbnails_written_total",
            "Thumbnails encoded and written to disk",
            ["camera"],
            registry=registry,
        )
        self.dropped = Counter(
            "edged_thumbnails_dropped_total",
            "Thumbnails not made (reason: queue_full, no_host_image, error)",
            ["reason"],
            registry=registry,
        )
        self.deleted = Counter(
            "edged_thumbnails_deleted_total",
            "Thumbnail files deleted by the disk cap (oldest first)",
            registry=registry,
        )
        self.published = Counter(
            "edged_thumbnails_published_total",
            "Thumbnails published over MQTT",
            ["camera"],
            registry=registry,
        )
        self.bytes = Gauge("edged_thumbnails_bytes", "Bytes of thumbnails on disk", registry=registry)
        # Every label set exists from the start, so increase() sees the first one.
        for cam in cameras:
            self.written.labels(cam)
            self.published.labels(cam)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)


class Thumbnailer:
    """Best crops -> JPEG files (and optionally MQTT); see the module docstring for the threading."""

    def __init__(
        self,
        cfg: ThumbnailsConfig,
        directory: Path,
        registry: CollectorRegistry,
        *,
        cameras: list[str],
        prefix: str = "",
        publish: PublishFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.prefix = prefix.rstrip("/")
        self.publish = publish if cfg.publish else None
        self.metrics = ThumbnailMetrics(registry, cameras)
        self.store = ThumbnailStore(directory, cfg.max_bytes, on_delete=self.metrics.deleted.inc)
        self.metrics.bytes.set_function(lambda: self.store.total_bytes)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=cfg.queue)
        self._tracks: OrderedDict[tuple[str, int], _Best] = OrderedDict()
        self._lock = threading.Lock()  # _tracks: several cameras' pipeline threads
        self._thread = threading.Thread(target=self._run, name="edged-thumbs", daemon=True)
        self._error_logged: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Encode what is queued (events naming those files are already out), then end the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("thumbnails: the encoder did not drain its queue within %.0f s", timeout_s)
            return
        self._thread.join(timeout_s)

    def get(self, name: str) -> bytes | None:
        """The JPEG called `name` (HTTP threads); None for unknown or invalid names."""
        return self.store.get(name)

    # --- pipeline thread: frames mode -----------------------------------------------------------

    def attach(self, event: dict[str, Any], result: FrameResult) -> None:
        """Queue the best crop of this frame's detections and name its file in the event."""
        if not result.detections:
            return
        name = f"{event['id']}.jpg"
        # The frame's most prominent object (largest box, weighted by score): different objects of one
        # frame are not compared by sharpness, and one copied crop is all the queue holds.
        det = max(result.detections, key=lambda d: max(d.width, 0.0) * max(d.height, 0.0) * d.score)
        region = FrameCrops(result.frame)(det.box)
        if region is None:
            self.metrics.dropped.labels("no_host_image").inc()
            return
        if region.size and self._offer(
            _Job(name, result.frame.camera, result.frame.fmt, region.copy(), det.label)
        ):
            event["thumbnail"] = name

    # --- pipeline thread: tracks mode -----------------------------------------------------------

    def observe(self, result: FrameResult) -> None:
        """Keep each track's best crop so far (call for every frame, before its track events)."""
        if result.tracks is None:
            return
        frame = result.frame
        crops = FrameCrops(frame)
        # The frame's own detections carry their track id; Track objects may already hold a later frame's
        # detection when the chain is pipelined, so they are not used here.
        for det in result.detections:
            track_id = det.attrs.get("track_id")
            if track_id is None:
                continue
            key = (frame.camera, int(track_id))
            with self._lock:
                best = self._tracks.get(key)
            area = max(det.width, 0.0) * max(det.height, 0.0)
            if best is not None and (
                area < 0.5 * best.area  # far smaller than the best: cannot win
                or (area < 1.1 * best.area and frame.seq - best.checked_seq < EVAL_EVERY)
            ):
                continue  # the sharpness computation is the per-frame cost: only for a clear chance
            region = crops(det.box)
            if region is None:
                self.metrics.dropped.labels("no_host_image").inc()
                return
            q = quality(region)
            if best is not None and q <= best.quality:
                best.checked_seq = frame.seq
            else:
                with self._lock:
                    self._tracks[key] = _Best(q, area, region.copy(), frame.fmt, det.label, frame.seq)
                    self._tracks.move_to_end(key)
                    while len(self._tracks) > MAX_TRACKS:
                        self._tracks.popitem(last=False)

    def attach_track(self, event: dict[str, Any]) -> None:
        """Name the track's thumbnail in a track event; (re)write the file when the best crop improved."""
        key = (str(event["camera"]), int(event["track_id"]))
        with self._lock:
            best = self._tracks.pop(key, None) if event.get("type") == "end" else self._tracks.get(key)
        if best is None:
            return
        # The track's id is its events' id up to the track number: <device>:<camera>:<run>:t<id>.
        name = str(event["id"]).rsplit(":", 2)[0] + ".jpg"
        if not best.written:
            best.written = self._offer(_Job(name, key[0], best.fmt, best.crop, best.label))
        if best.written or name in self.store:
            event["thumbnail"] = name

    # --- worker thread --------------------------------------------------------------------------

    def _offer(self, job: _Job) -> bool:
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            self.metrics.dropped.labels("queue_full").inc()
            return False

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._process(job)
            except Exception as e:  # one bad crop must not end the encoder
                self.metrics.dropped.labels("error").inc()
                msg = f"{type(e).__name__}: {e}"
                if msg != self._error_logged:
                    log.warning("thumbnails: %s failed: %s", job.name, msg, exc_info=True)
                    self._error_logged = msg

    def _process(self, job: _Job) -> None:
        import cv2

        region, label = job.crop, job.label
        if host_fmt(job.fmt) == "rgb8":
            region = cv2.cvtColor(region, cv2.COLOR_RGB2BGR)
        scale = self.cfg.max_side / max(region.shape[:2])
        if scale < 1:
            size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        data = buf.tobytes()
        self.store.put(job.name, data)
        self.metrics.written.labels(job.camera).inc()
        if self.publish is not None and len(data) <= self.cfg.publish_max_bytes:
            topic = f"{self.prefix}/{job.camera}/{topic_label(label)}/thumbnail"
            if self.publish(topic, data):
                self.metrics.published.labels(job.camera).inc()
