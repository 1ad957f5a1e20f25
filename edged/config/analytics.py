"""Configuration of a camera's scene analytics (issue 25): lines (tripwires), zones, ground calibration.

Coordinates are frame pixels, read off the camera's snapshot (/snapshot/<camera>.jpg): x to the right,
y down. Each model checks what it can alone (a line needs a length and a direction that crosses it, a
zone a real polygon, a calibration four points that invert); `frame_problems` and `horizon_problems`
check the points against a frame size and the calibration (edged.config.analytics_check runs them with
the rest of the config at load time; the camera's analytics run the frame check again at its first
frame). docs/analytics.md explains every setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edged.config.base import NAME_RE, EdgedModel

Point = tuple[float, float]
Anchor = Literal["bottom_center", "center", "top_center", "left_center", "right_center"]
Direction = Literal["right", "left", "down", "up"]
# Screen direction of travel -> unit vector in image coordinates (y grows downwards).
DIRECTIONS: dict[str, Point] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "down": (0.0, 1.0),
    "up": (0.0, -1.0),
}
# A line whose chord is closer than this to parallel with `in_direction` (sine of the angle) is ambiguous.
MIN_CROSSING_SINE = 0.26  # 15 degrees


def _cross(ax: float, ay: float, bx: float, by: float) -> float:
    return ax * by - ay * bx


def _segments_cross(p: Point, q: Point, r: Point, s: Point) -> bool:
    """Whether segments pq and rs properly cross (touching ends do not count)."""
    d1 = _cross(q[0] - p[0], q[1] - p[1], r[0] - p[0], r[1] - p[1])
    d2 = _cross(q[0] - p[0], q[1] - p[1], s[0] - p[0], s[1] - p[1])
    d3 = _cross(s[0] - r[0], s[1] - r[1], p[0] - r[0], p[1] - r[1])
    d4 = _cross(s[0] - r[0], s[1] - r[1], q[0] - r[0], q[1] - r[1])
    return d1 * d2 < 0 and d3 * d4 < 0


def polygon_area(points: Sequence[Point]) -> float:
    """Signed area (shoelace); positive when the points run clockwise on screen (y down)."""
    return 0.5 * sum(
        _cross(points[i][0], points[i][1], points[(i + 1) % len(points)][0], points[(i + 1) % len(points)][1])
        for i in range(len(points))
    )


def self_crossing(points: Sequence[Point]) -> tuple[int, int] | None:
    """The first two edges (by their first point) of a closed polygon that cross, else None."""
    n = len(points)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if _segments_cross(points[i], points[(i + 1) % n], points[j], points[(j + 1) % n]):
                return i, j
    return None


def _collinear(points: Sequence[Point], what: str) -> None:
    for i in range(4):
        a, b, c = (points[(i + k) % 4] for k in range(3))
        spread = max(math.dist(a, b), math.dist(b, c), math.dist(a, c), 1e-9)
        if abs(_cross(b[0] - a[0], b[1] - a[1], c[0] - a[0], c[1] - a[1])) / spread < 1e-3 * spread:
            idx = sorted((i + k) % 4 for k in range(3))
            raise ValueError(
                f"{what} points {idx[0]}, {idx[1]} and {idx[2]} lie on one line: a calibration needs four "
                "points with no three in a line (e.g. the corners of a rectangle on the ground)"
            )


class LineConfig(EdgedModel):
    """A tripwire: a segment or polyline; a track's anchor point crossing it counts in or out."""

    points: list[Point] = Field(
        ...,
        min_length=2,
        description="Polyline [[x, y], ...] in frame pixels (two points: a segment). Crossings count where a track's anchor passes between two points.",
    )
    in_direction: Direction = Field(
        ...,
        description="Which way across the line counts as `in`, as seen on the snapshot: right, left, down or up (the other way is `out`).",
    )
    classes: list[str] | None = Field(
        None, description="Only tracks with these labels count; unset: every label."
    )
    anchor: Anchor = Field(
        "bottom_center",
        description="The point of a box that must cross: bottom_center (where a vehicle or person touches the ground), center, top_center, left_center, right_center.",
    )
    min_age: int = Field(
        3,
        ge=1,
        le=1000,
        description="Frames a track must have been detected in before its crossing counts (a flicker does not count; a crossing made younger counts once the track is this old, unless it went back).",
    )
    margin: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Pixels the anchor must be beyond the line to count as on a side (jitter on the line is not a crossing).",
    )

    @field_validator("points")
    @classmethod
    def _length(cls, v: list[Point]) -> list[Point]:
        for i in range(len(v) - 1):
            if math.dist(v[i], v[i + 1]) < 1.0:
                raise ValueError(
                    f"points {i} and {i + 1} are the same: every segment of a line needs a length"
                )
        return v

    @model_validator(mode="after")
    def _crossable(self) -> LineConfig:
        (x0, y0), (x1, y1) = self.points[0], self.points[-1]
        chord = math.hypot(x1 - x0, y1 - y0)
        if chord < 1.0:
            raise ValueError("the line ends where it starts: a closed shape is a zone, not a line")
        dx, dy = DIRECTIONS[self.in_direction]
        if abs(_cross(x1 - x0, y1 - y0, dx, dy)) / chord < MIN_CROSSING_SINE:
            across = "up or down" if self.in_direction in ("left", "right") else "left or right"
            raise ValueError(
                f"the line runs almost {self.in_direction}-wards itself, so moving {self.in_direction} "
                f"hardly crosses it: set in_direction to {across}"
            )
        return self


class ZoneConfig(EdgedModel):
    """A polygon: enter/exit events, dwell time, loitering, occupancy."""

    points: list[Point] = Field(
        ..., min_length=3, description="Polygon [[x, y], ...] in frame pixels (closed by itself)."
    )
    classes: list[str] | None = Field(
        None, description="Only tracks with these labels count; unset: every label."
    )
    anchor: Anchor = Field(
        "bottom_center", description="The point of a box that must be inside (as for lines)."
    )
    inertia: int = Field(
        3,
        ge=1,
        le=1000,
        description="Consecutive frames a track's anchor must be inside (outside) before it enters (leaves), as Frigate's zones do; the event's time is the first of them.",
    )
    loiter_s: float | None = Field(
        None,
        gt=0,
        description="Dwell time in seconds after which a `loiter` event is raised while the object is still inside; unset: none.",
    )

    @field_validator("points")
    @classmethod
    def _polygon(cls, v: list[Point]) -> list[Point]:
        crossing = self_crossing(v)
        if crossing is not None:
            i, j = crossing
            raise ValueError(
                f"edges {i}-{(i + 1) % len(v)} and {j}-{(j + 1) % len(v)} cross: list the points in order around the zone"
            )
        if abs(polygon_area(v)) < 1.0:
            raise ValueError("the points enclose no area (they lie on one line): a zone needs a polygon")
        return v


class CalibrationConfig(EdgedModel):
    """Four points on the ground, in the image and in metres: the homography that turns track motion
    into speed."""

    image: list[Point] = Field(
        ...,
        min_length=4,
        max_length=4,
        description="Four points on the ground plane in frame pixels, e.g. the corners of a parking bay or lane marks (they may lie outside the frame).",
    )
    ground: list[Point] = Field(
        ...,
        min_length=4,
        max_length=4,
        description="The same four points in metres on the ground ([x, y] in any flat, right-angled frame: measured on site or from a map), in the same order.",
    )

    @model_validator(mode="after")
    def _inverts(self) -> CalibrationConfig:
        _collinear(self.image, "image")
        _collinear(self.ground, "ground")
        for name, pts in (("image", self.image), ("ground", self.ground)):
            if self_crossing(pts) is not None:
                raise ValueError(f"the {name} points cross over: list them in order around the area")
        h = image_to_ground(self.image, self.ground)
        w = [h[2][0] * x + h[2][1] * y + h[2][2] for x, y in self.image]
        if not all(math.isfinite(v) for row in h for v in row) or min(w) * max(w) <= 0:
            raise ValueError(
                "no perspective maps these image points onto these ground points (one of the shapes is "
                "dented, or they are listed in another order around the area): the calibration does not invert"
            )
        return self


def image_to_ground(image: Sequence[Point], ground: Sequence[Point]) -> list[list[float]]:
    """The 3x3 homography from frame pixels to ground metres (OpenCV's getPerspectiveTransform)."""
    import cv2
    import numpy as np

    h = cv2.getPerspectiveTransform(np.asarray(image, np.float32), np.asarray(ground, np.float32))
    return [[float(v) for v in row] for row in h]


class AnalyticsConfig(EdgedModel):
    lines: dict[str, LineConfig] = Field(
        default_factory=dict, description="Tripwires by name: crossings counted per direction."
    )
    zones: dict[str, ZoneConfig] = Field(
        default_factory=dict, description="Zones by name: enter/exit, dwell, loitering, occupancy."
    )
    calibration: CalibrationConfig | None = Field(
        None,
        description="Ground calibration for speeds (km/h in crossing and zone events); unset: no speeds.",
    )
    speed_window_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Speed is the slope of a track's ground position over this many seconds (a least-squares fit: smooth, and exact for steady motion).",
    )

    @field_validator("lines", "zones")
    @classmethod
    def _names(cls, v: dict[str, object]) -> dict[str, object]:
        import re

        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(f"name {name!r} may only use letters, digits, '_' and '-'")
        return v

    @property
    def active(self) -> bool:
        return bool(self.lines or self.zones)


def frame_problems(
    analytics: AnalyticsConfig, width: int, height: int
) -> list[tuple[tuple[str | int, ...], str]]:
    """Points of lines and zones outside a `width` x `height` frame: (key path below `analytics`, reason)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for kind, items in (("lines", analytics.lines), ("zones", analytics.zones)):
        for name, item in items.items():
            for i, (x, y) in enumerate(item.points):
                if not (0 <= x <= width and 0 <= y <= height):
                    out.append(
                        (
                            (kind, name, "points", i),
                            f"point [{x:g}, {y:g}] is outside the {width}x{height} frame",
                        )
                    )
    return out


def horizon_problems(analytics: AnalyticsConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Points of lines and zones that the calibration maps beyond its horizon (to no ground point, so a
    speed there means nothing): (key path below `analytics`, reason)."""
    cal = analytics.calibration
    if cal is None:
        return []
    h = image_to_ground(cal.image, cal.ground)

    def w(x: float, y: float) -> float:
        return h[2][0] * x + h[2][1] * y + h[2][2]

    sign = 1.0 if w(*cal.image[0]) > 0 else -1.0
    out: list[tuple[tuple[str | int, ...], str]] = []
    for kind, items in (("lines", analytics.lines), ("zones", analytics.zones)):
        for name, item in items.items():
            for i, (x, y) in enumerate(item.points):
                if sign * w(x, y) <= 0:
                    out.append(
                        (
                            (kind, name, "points", i),
                            f"point [{x:g}, {y:g}] lies beyond the calibration's horizon (it maps to no ground point): move it, or check calibration.image",
                        )
                    )
    return out
