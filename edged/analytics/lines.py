"""A line (tripwire) over a camera's tracks: which way each track's anchor crossed it, counted per direction.

Each track keeps its last *settled* anchor: the last one at least `margin` pixels from the line (jitter
on the line moves nothing). When a new settled anchor lies across the line from it (the move between
them passes between two of the line's points), that is a crossing, `in` when it goes the configured
`in_direction`. A track detected fewer than `min_age` times keeps its crossings pending (a detector
flicker counts nothing); they count once it is old enough, unless it went back across meanwhile.
Owned by one camera's analytics (its delivery thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edged.analytics.geometry import Point, bounds, crossing_sign, in_box, in_sign, polyline_distance
from edged.config.analytics import DIRECTIONS, LineConfig


@dataclass
class _TrackState:
    settled: Point | None = None
    pending: int = 0  # net crossings (+1 in, -1 out) made before the track was min_age old
    pending_at: tuple[int, float, Point] | None = None  # (seq, t, anchor) of the latest pending crossing


@dataclass(frozen=True)
class Crossing:
    track_id: int
    direction: str  # in | out
    at_seq: int
    at_t: float
    point: Point  # the first anchor past the line


@dataclass
class Line:
    name: str
    cfg: LineConfig
    points: list[Point] = field(init=False)
    sign_in: int = field(init=False)
    _tracks: dict[int, _TrackState] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.points = [(float(x), float(y)) for x, y in self.cfg.points]
        self._box = bounds(self.points)
        self._near = bounds(self.points, self.cfg.margin)  # outside it, a point is `margin` away
        self.sign_in = in_sign(self.points, DIRECTIONS[self.cfg.in_direction])
        self.classes = frozenset(self.cfg.classes) if self.cfg.classes else None

    def wants(self, label: str) -> bool:
        return self.classes is None or label in self.classes

    def observe(self, track_id: int, hits: int, anchor: Point, seq: int, t: float) -> list[Crossing]:
        """A detected position of a track; the crossings it completes (at most one, or the net of a
        young track's pending ones)."""
        st = self._tracks.get(track_id)
        if st is None:
            st = self._tracks[track_id] = _TrackState()
        net = 0
        if not in_box(anchor, self._near) or polyline_distance(anchor, self.points) >= self.cfg.margin:
            if st.settled is not None and self._may_cross(st.settled, anchor):
                net = crossing_sign(st.settled, anchor, self.points)
            st.settled = anchor
        if hits < self.cfg.min_age:  # too young to count: keep the net crossing for later
            if net:
                st.pending += net
                st.pending_at = (seq, t, anchor)
            return []
        total = st.pending + net
        at = (seq, t, anchor) if net or st.pending_at is None else st.pending_at
        st.pending, st.pending_at = 0, None
        return [self._crossing(track_id, total, *at)] if total else []

    def _may_cross(self, p: Point, q: Point) -> bool:
        """False when the move p -> q stays on one side of the line's axis box (no test needed)."""
        x1, y1, x2, y2 = self._box
        return not (
            (p[0] < x1 and q[0] < x1)
            or (p[0] > x2 and q[0] > x2)
            or (p[1] < y1 and q[1] < y1)
            or (p[1] > y2 and q[1] > y2)
        )

    def _crossing(self, track_id: int, net: int, seq: int, t: float, point: Point) -> Crossing:
        direction = "in" if (net > 0) == (self.sign_in > 0) else "out"
        return Crossing(track_id, direction, seq, t, point)

    def forget(self, track_id: int) -> None:
        """The track ended: a crossing still pending (never old enough) is dropped with it."""
        self._tracks.pop(track_id, None)
