"""Motion gating: decide per frame whether a camera's first stage (the detector) has to run at all.

Frigate's idea: most frames of a fixed camera show a still scene, and a cheap look at a small grey
copy of the frame says so. `MotionGate.check(frame)` keeps a running-average background of the frame
(downscaled to `height` rows, grey, blurred), compares the new frame with it after compensating a
global brightness change (lighting drift, auto exposure), thresholds the difference, keeps the pixels
that also differ from the previous frame (a stopped car is still, not moving), ignores masked areas
(clocks, trees), and turns what is left into motion boxes (contours merged, at least `min_area` frame
pixels). A change over more than `lighting_ratio` of the frame at once is taken as a lighting
change: the background is reset and nothing counts as moving, so a cloud does not start a storm of
detector runs. While nothing moves the detector still runs every `full_frame_every` frames (things
that arrived unseen are found) and, when tracks are live, every `redetect_every` frames (a parked car
keeps its track, see `hold_tracks`).

Runs with OpenCV on the CPU. For a frame in GPU memory the small grey frame is made on the device
(edged.gpu.motion: one kernel, only the small frame is downloaded) and the rest runs here on it; with
no usable GPU the frame is downloaded and shrunk here. With `region` on, a motion run also gets one
region (the grown union of the motion boxes, `motion_region`) that the first stage runs on instead of
the whole frame. One gate per camera, called from that camera's loop thread only; `status()` may be
read from any thread (it copies plain numbers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edged.gpu.motion import small_size
from edged.pipeline.tracker import IouTracker
from edged.types import Frame, host_fmt

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
REASONS = ("start", "motion", "redetect", "full_frame", "idle", "lighting")


@dataclass(frozen=True)
class MotionResult:
    """The gate's answer for one frame. `reason` says why the detector runs or not (one of REASONS)."""

    moving: bool
    boxes: list[Box]
    run_detector: bool
    reason: str
    changed: float  # share of the (unmasked) small frame that differs from the background
    # Region mode, motion runs only: where the first stage runs (frame pixels); None = the whole frame.
    region: Box | None = None


class MotionGate:
    def __init__(
        self,
        *,
        height: int = 120,
        threshold: int = 25,
        min_area: float = 400.0,
        background_alpha: float = 0.05,
        lighting_ratio: float = 0.5,
        masks: Sequence[Sequence[tuple[float, float]]] = (),
        full_frame_every: int = 100,
        redetect_every: int = 10,
        region: bool = False,
        region_margin: float = 0.25,
        region_min: float = 0.25,
    ) -> None:
        self.height = height
        self.threshold = float(threshold)
        self.min_area = min_area
        self.alpha = background_alpha
        self.lighting_ratio = lighting_ratio
        self.masks = [np.asarray(m, dtype=np.float32) for m in masks]
        self.full_frame_every = full_frame_every
        self.redetect_every = redetect_every
        self.region, self.region_margin, self.region_min = region, region_margin, region_min
        self._frame_size = (0, 0)
        self._background: np.ndarray | None = None
        self._prev = np.zeros((0, 0), np.float32)  # the previous small frame
        self._valid: np.ndarray | None = None  # uint8 255 where motion counts (outside every mask)
        self._scale = 1.0  # small pixels per frame pixel
        self._since_run = 0
        self._device: Any = None  # edged.gpu.motion.DeviceGrey once a device frame came and a GPU works
        self._device_off = ""  # why device frames are downloaded instead (logged once)
        self.counts = dict.fromkeys(REASONS, 0)
        self.last: MotionResult | None = None

    def check(self, frame: Frame, tracking: bool = False) -> MotionResult:
        """Motion in `frame` and whether the detector should run on it (`tracking`: live tracks exist)."""
        small = self._small_grey(frame)
        self._frame_size = (frame.width, frame.height)
        bg = self._background
        if bg is None or bg.shape != small.shape:
            self._reset(small, frame.width)
            return self._decide(False, [], 0.0, "start", tracking)
        assert self._valid is not None
        valid = self._valid > 0
        # Lighting drift and auto exposure scale the whole scene: compare against the background
        # brought to the new brightness, and let the background take it over at once.
        gain = float(np.median(small[valid] / np.maximum(bg[valid], 1.0))) if valid.any() else 1.0
        if abs(gain - 1.0) > 0.01:
            bg *= gain
        over_bg = (cv2.absdiff(small, bg) > self.threshold) & valid
        changed = float(np.count_nonzero(over_bg)) / max(1, int(np.count_nonzero(valid)))
        prev, self._prev = self._prev, small
        if changed > self.lighting_ratio:
            # Too much at once to be an object: a light switched, a cloud, the camera moved.
            self._background = small.copy()
            return self._decide(False, [], changed, "lighting", tracking)
        # Moving means different from the background *and* from the previous frame: a car that
        # stopped (still unlike the background) is not motion, nor is the ghost it leaves behind.
        over = np.where(over_bg & (cv2.absdiff(small, prev) > self.threshold), 255, 0).astype(np.uint8)
        moving_px: np.ndarray = cv2.dilate(over, np.ones((3, 3), np.uint8), iterations=2)
        boxes = self._boxes(moving_px)
        still = np.where(moving_px > 0, 0, 255).astype(np.uint8)
        # Moving areas blend in slowly (a passing car leaves little ghost behind); still ones, a
        # parked car included, follow the scene at `alpha`.
        cv2.accumulateWeighted(small, bg, self.alpha, mask=still)
        cv2.accumulateWeighted(small, bg, self.alpha * 0.2, mask=255 - still)
        return self._decide(bool(boxes), boxes, changed, "motion", tracking)

    def status(self) -> dict[str, object]:
        """For /stats: the gate's state ("idle" while the detector is skipped) and decision counts."""
        last = self.last
        return {
            "state": "off" if last is None else ("idle" if not last.run_detector else last.reason),
            "boxes": [list(b) for b in last.boxes] if last is not None else [],
            "frames": dict(self.counts),
        }

    def _decide(
        self, moving: bool, boxes: list[Box], changed: float, reason: str, tracking: bool
    ) -> MotionResult:
        self._since_run += 1
        if reason == "start" or moving:
            run = True
        elif tracking and self.redetect_every and self._since_run >= self.redetect_every:
            run, reason = True, "redetect"
        elif self.full_frame_every and self._since_run >= self.full_frame_every:
            run, reason = True, "full_frame"
        else:
            run = False
            reason = "lighting" if reason == "lighting" else "idle"
        region = None
        if run:
            self._since_run = 0
            if reason == "motion" and self.region:
                region = motion_region(boxes, *self._frame_size, self.region_margin, self.region_min)
        result = MotionResult(moving, boxes, run, reason, changed, region)
        self.counts[reason] += 1
        self.last = result
        return result

    def _small_grey(self, frame: Frame) -> np.ndarray:
        small = self._on_device(frame) if frame.on_device else None
        if small is None:
            image = frame.image
            if frame.on_device:
                from edged.serving.outputs import to_host

                image = to_host(image)
            small = small_grey(image, frame.fmt, self.height)
        return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)  # type: ignore[no-any-return]

    def _on_device(self, frame: Frame) -> np.ndarray | None:
        """The small grey frame made on the GPU (None: download the frame and use the CPU path)."""
        if self._device is None and not self._device_off:
            from edged.gpu.motion import DeviceGrey, device_grey_unavailable

            reason = device_grey_unavailable()
            if reason is None:
                try:
                    self._device = DeviceGrey(frame.camera)
                except Exception as e:
                    reason = f"{type(e).__name__}: {e}"
            if reason is not None:
                self._device_off = reason
                log.info("camera %s: motion gating downloads device frames (%s)", frame.camera, reason)
        if self._device is None:
            return None
        try:
            small: np.ndarray | None = self._device(frame.image, frame.fmt, self.height)
        except Exception as e:  # a broken device path must not stop the camera: the CPU path works
            log.error(
                "camera %s: motion on the device failed, downloading frames instead: %s", frame.camera, e
            )
            self._device, self._device_off = None, str(e)
            return None
        return small

    def _reset(self, small: np.ndarray, frame_width: int) -> None:
        self._background, self._prev = small.copy(), small
        self._scale = small.shape[1] / frame_width
        valid = np.full(small.shape, 255, np.uint8)
        for poly in self.masks:
            cv2.fillPoly(valid, [np.round(poly * self._scale).astype(np.int32)], 0)
        self._valid = valid

    def _boxes(self, moving_px: np.ndarray) -> list[Box]:
        contours, _ = cv2.findContours(moving_px, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        inv = 1.0 / self._scale
        min_small = self.min_area * self._scale * self._scale
        boxes = []
        for c in contours:
            if cv2.contourArea(c) < min_small:
                continue
            x, y, w, h = cv2.boundingRect(c)
            boxes.append((int(x * inv), int(y * inv), int((x + w) * inv), int((y + h) * inv)))
        return merge_boxes(boxes)


def small_grey(image: np.ndarray, fmt: str, height: int) -> np.ndarray:
    """The gate's small frame on the CPU (the reference the device kernel matches): grey, then shrunk
    to `height` rows with INTER_AREA, uint8."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        rgb = host_fmt(fmt) == "rgb8"
        if image.shape[2] == 4:
            code = cv2.COLOR_RGBA2GRAY if rgb else cv2.COLOR_BGRA2GRAY
        else:
            code = cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    h, w = image.shape[:2]
    return cv2.resize(image, small_size(w, h, height), interpolation=cv2.INTER_AREA)  # type: ignore[no-any-return]


def merge_boxes(boxes: Iterable[Box]) -> list[Box]:
    """Union overlapping (or touching) boxes until none overlap: one box per moving thing."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(out)


def motion_region(boxes: Sequence[Box], frame_w: int, frame_h: int, margin: float, least: float) -> Box:
    """One region for the detector: the union of the motion boxes grown on every side by `margin` x its
    longer side (the plate on a moving car, the context a detector needs), at least `least` of the
    frame per side (grown about its centre), shifted and clipped into the frame."""
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    grow = margin * max(x2 - x1, y2 - y1)
    w = min(frame_w, max(x2 - x1 + 2 * grow, least * frame_w))
    h = min(frame_h, max(y2 - y1 + 2 * grow, least * frame_h))
    left = min(max(0.0, (x1 + x2 - w) / 2), frame_w - w)
    top = min(max(0.0, (y1 + y2 - h) / 2), frame_h - h)
    return int(left), int(top), min(frame_w, int(np.ceil(left + w))), min(frame_h, int(np.ceil(top + h)))


def hold_tracks(tracker: IouTracker, seq: int) -> None:
    """Frame `seq` was skipped because nothing moved: the tracks seen on the latest frame the tracker
    is up to date with (`tracker.seq`, a detector run or an earlier hold) are still where they were, so
    they do not age over it. Tracks already unseen then keep ageing and end as usual."""
    if seq <= tracker.seq:  # a later frame's detections are already in: nothing to carry over
        return
    for t in tracker.tracks:
        if t.last_seq == tracker.seq:
            tracker.hold(t, seq)
    tracker.seq = seq


def hold_outside(tracker: IouTracker, region: Box, seq: int) -> None:
    """Frame `seq` runs the detector on `region` only (before its tracker update): tracks up to date
    whose box lies mostly outside it were not looked at, so they are held like on an idle frame (a car
    parked beside the one driving past keeps its track) instead of ageing towards their end."""
    if seq <= tracker.seq:
        return
    for t in tracker.tracks:
        if t.last_seq == tracker.seq and _inside_share(t.last.box, region) < 0.5:
            tracker.hold(t, seq)


def _inside_share(box: tuple[float, float, float, float], region: Box) -> float:
    w = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    h = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    area = max(1e-9, (box[2] - box[0]) * (box[3] - box[1]))
    return w * h / area
