"""Tracker ids, run-once-per-track secondary stages (real models), per-track events."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edged.pipeline.chain import RunPolicy
from edged.pipeline.tracker import IouTracker
from edged.publish.tracks import TrackEventBuilder
from edged.serving.server import ModelServer
from edged.types import Detection, Frame, FrameResult
from tests.support.chain import Camera, make_stage


def box(
    x: float, y: float, w: float = 60, h: float = 30, label: str = "car", score: float = 0.9
) -> Detection:
    return Detection(label, score, (x, y, x + w, y + h))


def test_ids_stable_for_moving_objects_and_tracks_end_after_max_age() -> None:
    tr = IouTracker(iou_thresh=0.3, max_age=3)
    ids_a, ids_b = [], []
    for seq in range(10):
        a, b = box(10 + 8 * seq, 20), box(300 - 8 * seq, 200)
        upd = tr.update([a, b], seq)
        ids_a.append(a.attrs["track_id"])
        ids_b.append(b.attrs["track_id"])
        assert len(upd.new) == (2 if seq == 0 else 0)
    assert len(set(ids_a)) == 1 and len(set(ids_b)) == 1 and ids_a[0] != ids_b[0]
    # The object vanishes for 2 frames (< max_age) and comes back: same id.
    tr.update([box(300 - 8 * 10, 200)], 10)
    tr.update([box(300 - 8 * 11, 200)], 11)
    back = box(10 + 8 * 12, 20)
    tr.update([back, box(300 - 8 * 12, 200)], 12)
    assert back.attrs["track_id"] == ids_a[0]
    # Gone for max_age frames: the track ends; a reappearance far away is a new track.
    ended = []
    for seq in range(13, 17):
        ended += tr.update([], seq).ended
    assert {t.id for t in ended} == {ids_a[0], ids_b[0]}
    late = box(10, 20)
    assert tr.update([late], 17).new[0].id == late.attrs["track_id"] not in (ids_a[0], ids_b[0])


def test_labels_do_not_mix_and_low_scores_only_continue_tracks() -> None:
    tr = IouTracker(high_score=0.5)
    car, person = box(0, 0, label="car"), box(2, 0, label="person")
    tr.update([car, person], 0)
    assert car.attrs["track_id"] != person.attrs["track_id"]
    weak = box(4, 0, score=0.2)
    tr.update([weak], 1)
    assert weak.attrs["track_id"] == car.attrs["track_id"]  # a low score keeps the car's track alive
    stray = box(500, 500, score=0.2)
    assert tr.update([stray], 2).new == [] and "track_id" not in stray.attrs


def moving_text(seq: int) -> np.ndarray:
    img = np.full((240, 400, 3), 255, np.uint8)
    cv2.putText(img, "KX 4471", (20 + 6 * seq, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3, cv2.LINE_AA)
    return img


@pytest.mark.parametrize(
    ("policy", "expected_runs"),
    [(RunPolicy("new_track"), 1), (RunPolicy("every_k", every_k=3), 3), (RunPolicy("always"), 7)],
)
def test_secondary_stage_runs_per_policy(
    servers: dict[str, ModelServer], policy: RunPolicy, expected_runs: int
) -> None:
    rec = make_stage("rec", servers["rec"], on="det", policy=policy)
    # depth 1: a frame's recognition is done before the next frame is tracked (the policy sees it)
    cam = Camera("cam", [make_stage("det", servers["det"], tracker=IouTracker()), rec], depth=1)
    rows_before = servers["rec"].rows
    results = cam.run([moving_text(seq) for seq in range(7)])
    texts = [[k.label for d in r.detections for k in d.children.get("rec", [])] for r in results]
    assert texts == [["KX 4471"]] * 7  # reused results still reach every frame's event
    assert servers["rec"].rows - rows_before == expected_runs
    assert (rec.crops_run, rec.crops_reused) == (expected_runs, 7 - expected_runs)


def test_track_events_new_update_end() -> None:
    tr = IouTracker(max_age=2)
    events = TrackEventBuilder("dev", run_id="r1")
    out = []
    labels = ["AB1", "AB1", "AB7", "AB7"]
    for seq, text in enumerate(labels):
        d = box(10 + 5 * seq, 10)
        upd = tr.update([d], seq)
        d.children["rec"] = [Detection(text, 0.9, d.box)]
        out += events.build(FrameResult(Frame("cam", seq, np.zeros((4, 4, 3), np.uint8)), [d], {}, upd))
    for seq in (4, 5):
        out += events.build(
            FrameResult(Frame("cam", seq, np.zeros((4, 4, 3), np.uint8)), [], {}, tr.update([], seq))
        )
    assert [(e["type"], e["seq"]) for e in out] == [("new", 0), ("update", 2), ("end", 5)]
    assert out[0]["detection"]["children"]["rec"][0]["label"] == "AB1"
    assert out[-1]["detection"]["children"]["rec"][0]["label"] == "AB7"
    assert len({e["id"] for e in out}) == 3 and all(e["track_id"] == out[0]["track_id"] for e in out)


def test_track_events_match_their_json_schema() -> None:
    import jsonschema

    from edged.publish.event import event_schema

    tr = IouTracker(max_age=1)
    events = TrackEventBuilder("dev")
    d = box(10, 10)
    upd = tr.update([d], 0)
    d.children["rec"] = [Detection("AB1", 0.9, d.box)]
    out = events.build(FrameResult(Frame("cam", 0, np.zeros((4, 4, 3), np.uint8)), [d], {}, upd))
    out += events.build(FrameResult(Frame("cam", 1, np.zeros((4, 4, 3), np.uint8)), [], {}, tr.update([], 1)))
    assert [e["type"] for e in out] == ["new", "end"]
    for e in out:
        jsonschema.validate(e, event_schema("track"))
