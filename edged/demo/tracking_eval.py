"""How well tracks keep identities, against a sample's ground truth: ID switches and fragmentation.

The CLEAR-MOT way (Bernardin & Stiefelhagen 2008, as py-motmetrics counts it): on each frame every true
object is matched to at most one tracked detection whose box overlaps it by IoU >= `iou` (an object
keeps last frame's track if that track still overlaps it; the rest are paired greedily, best IoU
first). Then, per true object:
- an **ID switch** is a frame where it is matched to another track than the one it was last matched to;
- a **fragmentation** is a frame where it is matched again after one or more frames unmatched while in
  view (its track was interrupted);
- `tracks` is how many distinct track ids it was given (1 is perfect);
- `merges` counts track ids given to more than one object (a track that took over another object:
  not an ID switch to CLEAR-MOT, but an identity error all the same).

Truth comes from a sample's sidecar (`truth[frame]` entries with `object` and the `plate` polygon, as
edged.demo.sample_traffic writes them); tracked boxes are (track id, box) per frame. Pure functions:
the benchmarks (scripts/bench_tracking.py) and the tests call them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BoxT = tuple[float, float, float, float]


@dataclass
class IdentityScore:
    objects: int = 0
    matches: int = 0  # (object, frame) pairs matched to a track
    misses: int = 0  # (object, frame) pairs in view but not matched
    id_switches: int = 0
    fragmentations: int = 0
    tracks: dict[int, list[int]] = field(default_factory=dict)  # object -> the track ids it was given

    @property
    def merges(self) -> int:
        owners: dict[int, set[int]] = {}
        for obj, tids in self.tracks.items():
            for tid in tids:
                owners.setdefault(tid, set()).add(obj)
        return sum(1 for objs in owners.values() if len(objs) > 1)

    def line(self) -> str:
        per = ", ".join(f"{k}: {len(v)}" for k, v in sorted(self.tracks.items()))
        return (
            f"{self.objects} objects, {self.matches} matched / {self.misses} missed object-frames, "
            f"{self.id_switches} ID switches, {self.fragmentations} fragmentations, {self.merges} merges; "
            f"track ids per object {{{per}}}"
        )


def iou(a: BoxT, b: BoxT) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def truth_box(entry: Mapping[str, Any]) -> BoxT:
    """The axis box around a true object: its plate (what a text detector's expanded box covers)."""
    quad = entry.get("plate") or entry["polygon"]
    xs = [p[0] for p in quad]
    ys = [p[1] for p in quad]
    return min(xs), min(ys), max(xs), max(ys)


def score_identities(
    truth: Sequence[Sequence[Mapping[str, Any]]],
    tracked: Sequence[Sequence[tuple[int, BoxT]]],
    *,
    objects: Iterable[int] | None = None,
    iou_min: float = 0.5,
) -> IdentityScore:
    """Score `tracked[frame]` = [(track id, box), ...] against `truth[frame]`, for the true objects in
    `objects` (default: all)."""
    wanted = set(objects) if objects is not None else None
    score = IdentityScore()
    last_track: dict[int, int] = {}  # object -> track it was last matched to
    matched_prev: dict[int, bool] = {}  # object -> matched on the previous frame it was in view
    seen: set[int] = set()
    for frame, entries in enumerate(truth):
        here = {int(e["object"]): truth_box(e) for e in entries if wanted is None or e["object"] in wanted}
        boxes = dict(tracked[frame]) if frame < len(tracked) else {}
        pairs: dict[int, int] = {}
        # Keep last frame's correspondences that still hold (CLEAR-MOT), then pair the rest greedily.
        for obj, box in here.items():
            tid = last_track.get(obj)
            if matched_prev.get(obj) and tid in boxes and iou(box, boxes[tid]) >= iou_min:
                pairs[obj] = tid
        free = [
            (iou(box, tbox), obj, tid)
            for obj, box in here.items()
            if obj not in pairs
            for tid, tbox in boxes.items()
            if tid not in pairs.values()
        ]
        for overlap, obj, tid in sorted(free, reverse=True):
            if overlap < iou_min or obj in pairs or tid in pairs.values():
                continue
            pairs[obj] = tid
        for obj in here:
            seen.add(obj)
            tid = pairs.get(obj)
            if tid is None:
                score.misses += 1
                if obj in matched_prev:
                    matched_prev[obj] = False
                continue
            score.matches += 1
            if obj in last_track and last_track[obj] != tid:
                score.id_switches += 1
            if matched_prev.get(obj) is False:
                score.fragmentations += 1
            ids = score.tracks.setdefault(obj, [])
            if tid not in ids:
                ids.append(tid)
            last_track[obj] = tid
            matched_prev[obj] = True
    score.objects = len(seen)
    return score
