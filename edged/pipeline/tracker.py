"""A light multi-object tracker per camera: a motion model, IoU association, ByteTrack-style two passes.

Each track's box is followed by a constant-velocity Kalman filter (edged.pipeline.kalman); detections of
a frame are matched to live tracks of the same label by the IoU between the detection and the box the
track's filter predicts for that frame (greedy, best pairs first): confident detections first, then the
low-score ones (ByteTrack's trick to keep a track through a frame where its object scores low). So a
track unseen for a few frames (hidden behind another object, missed by the detector) is looked for
where it has moved to, not where it was last seen; tracks seen on the latest frame choose before the ones
coasting on their prediction (DeepSORT's matching cascade), so the visible one of two overlapping objects
keeps its identity, and coasting tracks match by a buffered IoU (C-BIoU's), which finds a hidden object
again although its last box, cut short by what passed in front, had the wrong size. Unmatched confident detections start tracks; tracks
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


@dataclass(eq=False)  # tracks are compared by identity (list.remove, `in`), not field by field
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


# Coasting tracks are matched with boxes widened by this share of their width and height on every side
# (the buffered IoU of C-BIoU, Yang et al. 2023): a prediction after frames unseen is less sure of the
# box's size and place, e.g. when the last box was cut short by something passing in front.
COAST_BUFFER = 0.3


def _grow(boxes: np.ndarray, buffer: float) -> np.ndarray:
    if not buffer:
        return boxes
    dw = (boxes[:, 2] - boxes[:, 0]) * buffer
    dh = (boxes[:, 3] - boxes[:, 1]) * buffer
    return boxes + np.stack([-dw, -dh, dw, dh], axis=1)


def iou_matrix(
    a: Sequence[Detection | tuple[float, float, float, float]], b: Sequence[Detection], buffer: float = 0.0
) -> np.ndarray:
    """IoU of every box of `a` (detections or x1, y1, x2, y2 boxes) with every detection of `b`, each
    box first widened by `buffer` of its size on every side (0: the plain IoU)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ba = _grow(np.asarray([d.box if isinstance(d, Detection) else d for d in a], dtype=np.float64), buffer)
    bb = _grow(np.asarray([d.box for d in b], dtype=np.float64), buffer)
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
        tracks, dets = self.tracks, list(detections)
        free_tracks = [True] * len(tracks)
        free_dets = [True] * len(dets)
        updated: list[Track] = []
        if tracks and dets:
            expected = [t.expected(seq) for t in tracks]  # each track's box where it should be now
            same_label = np.array([t.label for t in tracks])[:, None] == np.array([d.label for d in dets])
            iou = np.where(same_label, iou_matrix(expected, dets), 0.0)
            high = np.array([d.score >= self.high_score for d in dets])
            # With the motion model, tracks seen on the latest frame choose first, then the ones
            # coasting on their prediction (DeepSORT's matching cascade, in two steps), by buffered IoU:
            # where a hidden object's predicted box lies on top of the visible one, the visible one
            # keeps its detection, and the hidden one is found again where it reappears.
            seen = np.array([t.last_seq >= self.seq for t in tracks])
            levels: tuple[tuple[np.ndarray, np.ndarray], ...]
            if self.motion:
                buffered = np.where(same_label, iou_matrix(expected, dets, COAST_BUFFER), 0.0)
                levels = ((seen, iou), (~seen, buffered))
            else:
                levels = ((np.ones(len(tracks), dtype=bool), iou),)
            scores = [m for _, m in levels]
            for cols in (high, ~high):  # confident detections first, then the low-score ones
                for rows, matrix in levels:
                    for i, j in self._greedy(matrix, rows, cols, scores):
                        track, det = tracks[i], dets[j]
                        track.last, track.last_seq, track.hits = det, seq, track.hits + 1
                        if track.kf is not None:
                            track.kf.update(det.box, seq)
                        det.attrs["track_id"] = track.id
                        updated.append(track)
                        free_tracks[i] = free_dets[j] = False
        new = []
        for det, free in zip(dets, free_dets, strict=True):
            if not free or det.score < self.high_score:
                continue  # only confident detections start tracks
            kf = BoxKalman(det.box, seq) if self.motion else None
            track = Track(self._next_id, det.label, det, seq, seq, kf=kf)
            self._next_id += 1
            det.attrs["track_id"] = track.id
            new.append(track)
        ended = [
            t
            for t, free in zip(tracks, free_tracks, strict=True)
            if free and seq - t.last_seq >= self.max_age
        ]
        gone = set(map(id, ended))
        self.tracks = [t for t in tracks if id(t) not in gone] + new
        self.seq = max(self.seq, seq)
        return TrackUpdate(new, updated, ended)

    def _greedy(
        self, iou: np.ndarray, rows: np.ndarray, cols: np.ndarray, scores: list[np.ndarray]
    ) -> list[tuple[int, int]]:
        """Pairs (track, detection) among `rows` x `cols` of `iou`, best first, each at least iou_thresh;
        matched rows and columns are zeroed in every matrix of `scores` for the passes after this one."""
        sub = iou * rows[:, None] * cols[None, :]
        pairs: list[tuple[int, int]] = []
        width = sub.shape[1]
        while True:
            i, j = divmod(int(np.argmax(sub)), width)
            if sub[i, j] < self.iou_thresh:
                return pairs
            pairs.append((i, j))
            sub[i, :] = sub[:, j] = 0.0
            for m in scores:
                m[i, :] = m[:, j] = 0.0

    def hold(self, track: Track, seq: int) -> None:
        """The track's object was not looked at on frame `seq` because nothing moved there (motion
        gating): it counts as seen standing where it was (it does not age, its motion model stops)."""
        track.last_seq = seq
        if track.kf is not None:
            track.kf.hold(seq)

    def track_of(self, det: Detection) -> Track | None:
        tid = det.attrs.get("track_id")
        return next((t for t in self.tracks if t.id == tid), None) if tid is not None else None
