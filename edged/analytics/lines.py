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

from edged.analytics.geometry import Point, crossing_sign, in_sign, polyline_distance
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
        out: list[Crossing] = []
        if polyline_distance(anchor, self.points) >= self.cfg.margin:
            if st.settled is not None:
                net = crossing_sign(st.settled, anchor, self.points)
                if net:
                    if hits >= self.cfg.min_age:
                        out.append(self._crossing(track_id, net, seq, t, anchor))
                    else:
                        st.pending += net
                        st.pending_at = (seq, t, anchor)
            st.settled = anchor
        if st.pending and hits >= self.cfg.min_age:
            assert st.pending_at is not None
            at_seq, at_t, point = st.pending_at
            out.append(self._crossing(track_id, st.pending, at_seq, at_t, point))
            st.pending, st.pending_at = 0, None
        elif not st.pending:
            st.pending_at = None
        return out

    def _crossing(self, track_id: int, net: int, seq: int, t: float, point: Point) -> Crossing:
        direction = "in" if (net > 0) == (self.sign_in > 0) else "out"
        return Crossing(track_id, direction, seq, t, point)

    def forget(self, track_id: int) -> None:
        """The track ended: a crossing still pending (never old enough) is dropped with it."""
        self._tracks.pop(track_id, None)
