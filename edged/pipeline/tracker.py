"""A light multi-object tracker per camera: IoU association, ByteTrack-style two passes, no extra model.

Detections of a frame are matched to live tracks of the same label by IoU (greedy, best pairs first):
confident detections first, then the low-score ones (ByteTrack's trick to keep a track through a
frame where its object scores low). Unmatched confident detections start tracks; tracks unseen for
`max_age` frames end. Each matched detection gets `attrs["track_id"]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edged.types import Detection


@dataclass
class Track:
    id: int
    label: str
    last: Detection
    first_seq: int
    last_seq: int
    hits: int = 1
    # Per secondary stage: (results, box area and frame seq when they were computed), for run-once logic.
    cache: dict[str, tuple[list[Detection], float, int]] = field(default_factory=dict)


@dataclass
class TrackUpdate:
    new: list[Track]
    updated: list[Track]
    ended: list[Track]


def iou_matrix(a: Sequence[Detection], b: Sequence[Detection]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ba = np.asarray([d.box for d in a], dtype=np.float64)
    bb = np.asarray([d.box for d in b], dtype=np.float64)
    x1 = np.maximum(ba[:, None, 0], bb[None, :, 0])
    y1 = np.maximum(ba[:, None, 1], bb[None, :, 1])
    x2 = np.minimum(ba[:, None, 2], bb[None, :, 2])
    y2 = np.minimum(ba[:, None, 3], bb[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (ba[:, 2] - ba[:, 0]) * (ba[:, 3] - ba[:, 1])
    area_b = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class IouTracker:
    def __init__(self, iou_thresh: float = 0.3, max_age: int = 15, high_score: float = 0.5):
        self.iou_thresh = iou_thresh
        self.max_age = max_age
        self.high_score = high_score
        self.tracks: list[Track] = []
        self._next_id = 1
        self.seq = -1  # the latest frame the tracks are up to date with (an update or a hold)

    def update(self, detections: Sequence[Detection], seq: int) -> TrackUpdate:
        unmatched_tracks = list(self.tracks)
        updated: list[Track] = []
        high = [d for d in detections if d.score >= self.high_score]
        low = [d for d in detections if d.score < self.high_score]
        leftover_high: list[Detection] = []
        for group, keep in ((high, leftover_high), (low, None)):
            matched = self._associate(unmatched_tracks, group, seq)
            for track, _det in matched:
                unmatched_tracks.remove(track)
                updated.append(track)
            matched_dets = {id(d) for _, d in matched}
            if keep is not None:
                keep.extend(d for d in group if id(d) not in matched_dets)
        new = []
        for det in leftover_high:
            track = Track(self._next_id, det.label, det, seq, seq)
            self._next_id += 1
            det.attrs["track_id"] = track.id
            new.append(track)
        ended = [t for t in unmatched_tracks if seq - t.last_seq >= self.max_age]
        self.tracks = [t for t in self.tracks if t not in ended] + new
        self.seq = max(self.seq, seq)
        return TrackUpdate(new, updated, ended)

    def _associate(
        self, tracks: list[Track], dets: list[Detection], seq: int
    ) -> list[tuple[Track, Detection]]:
        if not tracks or not dets:
            return []
        iou = iou_matrix([t.last for t in tracks], dets)
        same_label = np.array([[t.label == d.label for d in dets] for t in tracks])
        iou = np.where(same_label, iou, 0.0)
        pairs = []
        while True:
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[i, j] < self.iou_thresh:
                break
            track, det = tracks[int(i)], dets[int(j)]
            track.last, track.last_seq, track.hits = det, seq, track.hits + 1
            det.attrs["track_id"] = track.id
            pairs.append((track, det))
            iou[i, :] = 0
            iou[:, j] = 0
        return pairs

    def track_of(self, det: Detection) -> Track | None:
        tid = det.attrs.get("track_id")
        return next((t for t in self.tracks if t.id == tid), None) if tid is not None else None
