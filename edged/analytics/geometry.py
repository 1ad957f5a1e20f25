"""Plane geometry of the analytics in frame pixels: a box's anchor point, crossings of a polyline, points
in a polygon. Plain floats: a frame holds a few dozen tracks, and a numpy call per point costs more
than the arithmetic it does."""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]
BoxT = tuple[float, float, float, float]


def anchor_point(box: BoxT, anchor: str) -> Point:
    """The point of a box (x1, y1, x2, y2) named by `anchor` (edged.config.analytics.Anchor)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if anchor == "bottom_center":
        return cx, y2
    if anchor == "top_center":
        return cx, y1
    if anchor == "left_center":
        return x1, cy
    if anchor == "right_center":
        return x2, cy
    return cx, cy


def _cross(ax: float, ay: float, bx: float, by: float) -> float:
    return ax * by - ay * bx


def segment_distance(p: Point, a: Point, b: Point) -> float:
    """Distance from point p to segment ab."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2))
    ex, ey = a[0] + t * dx - p[0], a[1] + t * dy - p[1]
    return float((ex * ex + ey * ey) ** 0.5)


def polyline_distance(p: Point, points: Sequence[Point]) -> float:
    return min(segment_distance(p, points[i], points[i + 1]) for i in range(len(points) - 1))


def crossing_sign(p: Point, q: Point, points: Sequence[Point]) -> int:
    """How the move p -> q crosses the polyline `points`: the sum over its segments of +1 for each one
    crossed from its right to its left side (on screen, facing along the polyline), -1 the other way.
    0: not crossed, or crossed and crossed back (a zig-zag)."""
    net = 0
    mx, my = q[0] - p[0], q[1] - p[1]
    for i in range(len(points) - 1):
        a, b = points[i], points[i + 1]
        sx, sy = b[0] - a[0], b[1] - a[1]
        d1 = _cross(sx, sy, p[0] - a[0], p[1] - a[1])  # which side of the segment p is on
        d2 = _cross(sx, sy, q[0] - a[0], q[1] - a[1])
        if d1 * d2 >= 0:
            continue
        d3 = _cross(mx, my, a[0] - p[0], a[1] - p[1])  # the segment's ends on either side of the move
        d4 = _cross(mx, my, b[0] - p[0], b[1] - p[1])
        if d3 * d4 > 0:
            continue
        net += 1 if d2 < 0 else -1
    return net


def in_sign(points: Sequence[Point], direction: Point) -> int:
    """The `crossing_sign` of a move in screen `direction` across the polyline (its chord decides)."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    # A move crossing from the segment's right (d1 > 0 on screen with y down) to its left gives +1;
    # moving along `direction` ends on the side where cross(chord, direction) points.
    return 1 if _cross(x1 - x0, y1 - y0, direction[0], direction[1]) < 0 else -1


def bounds(points: Sequence[Point], grow: float = 0.0) -> BoxT:
    """The axis box around `points`, grown by `grow` on every side."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs) - grow, min(ys) - grow, max(xs) + grow, max(ys) + grow


def in_box(p: Point, box: BoxT) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


def inside(p: Point, polygon: Sequence[Point]) -> bool:
    """Whether p lies inside the polygon (even-odd rule; a point on an edge may go either way)."""
    x, y = p
    hit = False
    n = len(polygon)
    for i in range(n):
        ax, ay = polygon[i]
        bx, by = polygon[(i + 1) % n]
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            hit = not hit
    return hit
