"""Speed from a ground calibration: frame pixels -> metres on the ground -> km/h, smoothed over the track.

`GroundMap` is the homography from four image points and their ground positions (OpenCV's
getPerspectiveTransform; edged.config.analytics checks that it inverts); `to_ground` maps every
anchor of a frame with one cv2.perspectiveTransform call. `SpeedTrack` keeps a track's recent ground
positions with their times; its speed is the slope of a least-squares line through the positions of the
last `window_s` seconds (x and y separately), which averages out the detector's box jitter and is exact
for steady motion. Owned by one camera's analytics (its delivery thread).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from edged.analytics.geometry import Point
from edged.config.analytics import CalibrationConfig, image_to_ground

MIN_SAMPLES = 3  # positions needed for a speed
MIN_SPAN = 0.5  # ... and the part of the window they must cover


class GroundMap:
    def __init__(self, cal: CalibrationConfig) -> None:
        self.h = np.asarray(image_to_ground(cal.image, cal.ground), dtype=np.float64)

    def to_ground(self, points: Sequence[Point]) -> list[Point]:
        """Ground metres of image points (one OpenCV call for all of them)."""
        import cv2

        if not points:
            return []
        out = cv2.perspectiveTransform(np.asarray(points, dtype=np.float64).reshape(-1, 1, 2), self.h)
        return [(float(x), float(y)) for x, y in out.reshape(-1, 2)]


class SpeedTrack:
    """One track's ground positions of the last `window_s` seconds (and a little more)."""

    __slots__ = ("samples", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float, float]] = deque()  # (t, x, y)

    def add(self, t: float, ground: Point) -> None:
        self.samples.append((t, ground[0], ground[1]))
        # Keep two windows: a speed may be asked for a moment up to one window back (a zone's entry).
        while self.samples and self.samples[0][0] < t - 2 * self.window_s - 1e-9:
            self.samples.popleft()

    def kmh(self, at: float | None = None) -> float | None:
        """Speed over the window ending at time `at` (default: the latest position), km/h; None when the
        positions in it are too few or cover too little of it."""
        if not self.samples:
            return None
        end = self.samples[-1][0] if at is None else at
        pts = [s for s in self.samples if end - self.window_s - 1e-9 <= s[0] <= end + 1e-9]
        if len(pts) < MIN_SAMPLES or pts[-1][0] - pts[0][0] < MIN_SPAN * self.window_s:
            return None
        n = len(pts)
        mt = sum(p[0] for p in pts) / n
        mx = sum(p[1] for p in pts) / n
        my = sum(p[2] for p in pts) / n
        var = sum((p[0] - mt) ** 2 for p in pts)
        if var <= 0:
            return None
        vx = sum((p[0] - mt) * (p[1] - mx) for p in pts) / var
        vy = sum((p[0] - mt) * (p[2] - my) for p in pts) / var
        return math.hypot(vx, vy) * 3.6
