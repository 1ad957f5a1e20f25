"""The tracker's motion model: the constant-velocity Kalman filter, tracks through misses and crossing
paths, the matching cascade, motion gating's holds; and the identity scoring the benchmarks use."""

from __future__ import annotations

import pytest

from edged.demo.tracking_eval import score_identities
from edged.pipeline.kalman import BoxKalman
from edged.pipeline.motion import hold_tracks
from edged.pipeline.tracker import IouTracker
from edged.types import Detection


def box(x: float, y: float, w: float = 60, h: float = 30, score: float = 0.9) -> Detection:
    return Detection("car", score, (x, y, x + w, y + h))


def test_the_filter_learns_a_steady_velocity_and_predicts_across_a_gap() -> None:
    kf = BoxKalman((0, 0, 60, 30), 0)
    assert kf.predicted(5) == (0, 0, 60, 30)  # no velocity yet
    for seq in range(1, 30):
        kf.update((12.0 * seq, 3.0 * seq, 12.0 * seq + 60, 3.0 * seq + 30), seq)
    vx, vy = kf.velocity
    assert vx == pytest.approx(12.0, rel=0.01) and vy == pytest.approx(3.0, rel=0.01)
    x1, y1, x2, y2 = kf.predicted(35)  # six frames unseen
    assert (x1, y1) == (pytest.approx(12.0 * 35, abs=0.5), pytest.approx(3.0 * 35, abs=0.5))
    assert (x2 - x1, y2 - y1) == (pytest.approx(60, abs=0.1), pytest.approx(30, abs=0.1))
    kf.hold(40)  # seen standing still (motion gating): where it was, no longer moving
    assert kf.velocity == (0.0, 0.0) and kf.predicted(50) == kf.predicted(40)


def crossing(tracker: IouTracker, hidden: range) -> list[list[tuple[int, tuple[float, float, float, float]]]]:
    """Two cars drive towards each other on one row; where they meet, A is hidden behind B."""
    out = []
    for seq in range(30):
        a, b = box(20 + 15 * seq, 100), box(620 - 15 * seq, 100)
        dets = [b] if seq in hidden else [a, b]
        tracker.update(dets, seq)
        out.append([(d.attrs["track_id"], d.box) for d in dets])
    return out


def truth_of_crossing() -> list[list[dict[str, object]]]:
    """Both cars in every frame (A also while it is hidden: it is there, just not seen)."""
    frames = []
    for seq in range(30):
        entries = []
        for obj, x in ((0, 20 + 15 * seq), (1, 620 - 15 * seq)):
            b = box(x, 100).box
            entries.append({"object": obj, "plate": [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]})
        frames.append(entries)
    return frames


def test_identities_survive_crossing_paths_with_the_motion_model_only() -> None:
    hidden = range(18, 23)  # A behind B for five frames around where they meet (seq 20)
    truth = truth_of_crossing()
    with_motion = score_identities(truth, crossing(IouTracker(motion=True), hidden))
    assert (with_motion.id_switches, with_motion.merges) == (0, 0)
    assert with_motion.tracks == {0: [1], 1: [2]}
    assert with_motion.fragmentations == 1  # A is interrupted while hidden, and comes back as itself
    # Without it A's track waits where A was last seen: A comes back as a new track (or as B's).
    without = score_identities(truth, crossing(IouTracker(motion=False), hidden))
    assert without.id_switches + without.merges >= 1


def test_a_visible_track_keeps_its_detection_over_a_hidden_one_predicted_on_top() -> None:
    tr = IouTracker(motion=True)
    for seq in range(10):  # A moves right, B stands still; A then vanishes right on top of B
        dets = [box(100 + 10 * seq, 50), box(200, 50)] if seq < 8 else [box(200, 50)]
        tr.update(dets, seq)
    a_id, b_id = 1, 2
    still = box(200, 50)
    tr.update([still], 10)  # A's prediction (coasting) lies on B: B, seen last frame, chooses first
    assert still.attrs["track_id"] == b_id
    assert [t.id for t in tr.tracks] == [a_id, b_id]


def test_a_held_track_does_not_drift_when_the_chain_skips_frames() -> None:
    tr = IouTracker(motion=True, max_age=5)
    for seq in range(5):  # a car drives in and parks
        tr.update([box(10 * min(seq, 3), 0)], seq)
    for seq in range(5, 40):  # nothing moves: motion gating skips the detector, holding the track
        hold_tracks(tr, seq)
    parked = box(30, 0)
    tr.update([parked], 40)
    assert parked.attrs["track_id"] == 1 and len(tr.tracks) == 1


def test_low_scores_continue_tracks_but_never_start_them() -> None:
    tr = IouTracker(motion=True, high_score=0.5)
    tr.update([box(0, 0)], 0)
    weak = box(5, 0, score=0.2)
    stray = box(400, 400, score=0.2)
    upd = tr.update([weak, stray], 1)
    assert weak.attrs["track_id"] == 1 and "track_id" not in stray.attrs and upd.new == []
