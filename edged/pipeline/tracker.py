"""A light multi-object tracker per camera: a motion model, IoU association, ByteTrack-style two passes.

Each track's box is followed by a constant-velocity Kalman filter (edged.pipeline.kalman); detections of
a frame are matched to live tracks of the same label by the IoU between the detection and the box the
track's filter predicts for that frame (greedy, best pairs first): confident detections first, then the
low-score ones (ByteTrack's trick to keep a track through a frame where its object scores low). So a
track unseen for a few frames (hidden behind another object, missed by the detector) is looked for
where it has moved to, not where it was last seen; tracks seen on the latest frame choose before the ones
coasting on their prediction (DeepSORT's matching cascade), so the visible one of two overlapping objects
keeps its identity. Unmatched confident detections start tracks; tracks
unseen for `max_age` frames end. Each matched detection gets `attrs["track_id"]`. `motion=False` matches
against the last seen box instead (the tracker before the motion model; kept for comparison).

Why not a library: docs/analytics.md ("The tracker") compares supervision's ByteTrack with this one on
footprint, speed and the sample's identity errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edged.pipeline.kalman import BoxKalman
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
    kf: BoxKalman | None = None  # the motion model (None: the tracker runs without one)

    def expected(self, seq: int) -> tuple[float, float, float, float]:
        """Where the track's box should be at frame `seq`: predicted by its motion model, else its last box."""
        return self.kf.predicted(seq) if self.kf is not None else self.last.box


@dataclass
class TrackUpdate:
    new: list[Track]
    updated: list[Track]
    ended: list[Track]


def iou_matrix(
    a: Sequence[Detection | tuple[float, float, float, float]], b: Sequence[Detection]
) -> np.ndarray:
    """IoU of every box of `a` (detections or x1, y1, x2, y2 boxes) with every detection of `b`."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ba = np.asarray([d.box if isinstance(d, Detection) else d for d in a], dtype=np.float64)
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
    def __init__(
        self, iou_thresh: float = 0.3, max_age: int = 15, high_score: float = 0.5, motion: bool = True
    ):
        self.iou_thresh = iou_thresh
        self.max_age = max_age
        self.high_score = high_score
        self.motion = motion
        self.tracks: list[Track] = []
        self._next_id = 1
        self.seq = -1  # the latest frame the tracks are up to date with (an update or a hold)

    def update(self, detections: Sequence[Detection], seq: int) -> TrackUpdate:
        unmatched_tracks = list(self.tracks)
        updated: list[Track] = []
        high = [d for d in detections if d.score >= self.high_score]
        low = [d for d in detections if d.score < self.high_score]
        leftover_high: list[Detection] = []
        # With the motion model, tracks seen on the latest frame choose first, then the ones coasting
        # on their prediction (DeepSORT's matching cascade, in two steps): where a hidden object's
        # predicted box lies on top of the visible one, the visible one keeps its detection.
        levels = (lambda t: t.last_seq >= self.seq, lambda t: t.last_seq < self.seq) if self.motion else (None,)
        for group, keep in ((high, leftover_high), (low, None)):
            matched_dets: set[int] = set()
            for level in levels:
                candidates = [t for t in unmatched_tracks if level is None or level(t)]
                rest = [d for d in group if id(d) not in matched_dets]
                matched = self._associate(candidates, rest, seq)
                for track, det in matched:
                    unmatched_tracks.remove(track)
                    updated.append(track)
                    matched_dets.add(id(det))
            if keep is not None:
                keep.extend(d for d in group if id(d) not in matched_dets)
        new = []
        for det in leftover_high:
            kf = BoxKalman(det.box, seq) if self.motion else None
            track = Track(self._next_id, det.label, det, seq, seq, kf=kf)
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
        iou = iou_matrix([t.expected(seq) for t in tracks], dets)
        same_label = np.array([[t.label == d.label for d in dets] for t in tracks])
        iou = np.where(same_label, iou, 0.0)
        pairs = []
        while True:
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[i, j] < self.iou_thresh:
                break
            track, det = tracks[int(i)], dets[int(j)]
            track.last, track.last_seq, track.hits = det, seq, track.hits + 1
            if track.kf is not None:
                track.kf.update(det.box, seq)
            det.attrs["track_id"] = track.id
            pairs.append((track, det))
            iou[i, :] = 0
            iou[:, j] = 0
        return pairs

    def hold(self, track: Track, seq: int) -> None:
        """The track's object was not looked at on frame `seq` because nothing moved there (motion
        gating): it counts as seen standing where it was (it does not age, its motion model stops)."""
        track.last_seq = seq
        if track.kf is not None:
            track.kf.hold(seq)

    def track_of(self, det: Detection) -> Track | None:
        tid = det.attrs.get("track_id")
        return next((t for t in self.tracks if t.id == tid), None) if tid is not None else None
