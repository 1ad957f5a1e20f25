"""A zone over a camera's tracks: entries and exits with inertia, dwell time, loitering, occupancy.

A track's anchor must be inside (outside) on `inertia` consecutive frames it is detected on before it
enters (leaves), as in Frigate; the entry's (exit's) time is the first of those frames, so the dwell
time (first frame inside to first frame outside again) is not shifted by the inertia. While inside, a
track that has stayed `loiter_s` seconds raises one `loiter` event. A track that ends while inside
(it left the view, or the tracker lost it) leaves at the first frame it was no longer detected on.
Owned by one camera's analytics (its delivery thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edged.analytics.geometry import Point, bounds, in_box, inside
from edged.config.analytics import ZoneConfig


@dataclass
class _TrackState:
    label: str
    inside: bool = False  # confirmed inside
    streak: int = 0  # consecutive detected frames on the other side than `inside`
    streak_at: tuple[int, float] = (0, 0.0)  # (seq, t) of the first frame of the streak
    entered: tuple[int, float] = (0, 0.0)  # (seq, t) of the first frame inside
    loitered: bool = False


@dataclass(frozen=True)
class ZoneChange:
    track_id: int
    kind: Literal["enter", "exit", "loiter"]
    at_seq: int
    at_t: float
    since_t: float  # first frame inside
    dwell_s: float
    reason: Literal["left", "lost"] | None = None


@dataclass
class Zone:
    name: str
    cfg: ZoneConfig
    polygon: list[Point] = field(init=False)
    _tracks: dict[int, _TrackState] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.polygon = [(float(x), float(y)) for x, y in self.cfg.points]
        self._box = bounds(self.polygon)  # a point outside it is outside the polygon: no edge test
        self.classes = frozenset(self.cfg.classes) if self.cfg.classes else None
        self._seen_labels: set[str] = set(self.cfg.classes or ())

    def wants(self, label: str) -> bool:
        return self.classes is None or label in self.classes

    def observe(self, track_id: int, label: str, anchor: Point, seq: int, t: float) -> ZoneChange | None:
        """A detected position of a track: its entry or exit, if this frame completes one."""
        st = self._tracks.get(track_id)
        if st is None:
            st = self._tracks[track_id] = _TrackState(label)
        now_inside = in_box(anchor, self._box) and inside(anchor, self.polygon)
        if now_inside == st.inside:
            st.streak = 0
            return None
        st.streak += 1
        if st.streak == 1:
            st.streak_at = (seq, t)
        if st.streak < self.cfg.inertia:
            return None
        st.streak = 0
        at_seq, at_t = st.streak_at
        if now_inside:
            st.inside, st.entered, st.loitered = True, (at_seq, at_t), False
            self._seen_labels.add(label)
            return ZoneChange(track_id, "enter", at_seq, at_t, at_t, 0.0)
        st.inside = False
        return ZoneChange(track_id, "exit", at_seq, at_t, st.entered[1], at_t - st.entered[1], "left")

    def loiterers(self, seq: int, t: float) -> list[ZoneChange]:
        """Tracks inside for `loiter_s` or longer on frame `seq` (time `t`) that have not raised their
        loiter event yet."""
        limit = self.cfg.loiter_s
        if limit is None:
            return []
        out = []
        for tid, st in self._tracks.items():
            if st.inside and not st.loitered and t - st.entered[1] >= limit - 1e-9:
                st.loitered = True
                out.append(ZoneChange(tid, "loiter", seq, t, st.entered[1], t - st.entered[1]))
        return out

    def end(self, track_id: int, gone_at: tuple[int, float]) -> ZoneChange | None:
        """The track ended; if it was inside, it left at `gone_at` (the first frame it was not detected)."""
        st = self._tracks.pop(track_id, None)
        if st is None or not st.inside:
            return None
        dwell = gone_at[1] - st.entered[1]
        return ZoneChange(track_id, "exit", gone_at[0], gone_at[1], st.entered[1], dwell, "lost")

    def occupancy(self) -> dict[str, int]:
        """Objects inside per label (every label seen inside or configured, zeros included)."""
        out = dict.fromkeys(sorted(self._seen_labels), 0)
        for st in self._tracks.values():
            if st.inside:
                out[st.label] = out.get(st.label, 0) + 1
        return out
