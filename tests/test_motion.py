"""Motion gating on the real gate video (edged make-sample --scene gate, a 30 s version at 5 fps):
the static scene is idle, every pass is caught from its first frames, masks silence the tree and the
clock, lighting changes cause no storm, the periodic runs happen, tracks are held while nothing moves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.config.loader import load_config
from edged.config.problems import ConfigError
from edged.demo.sample_gate import GateScene, make_gate_sample
from edged.demo.truth import read_video
from edged.pipeline.motion import (
    MotionGate,
    MotionResult,
    hold_outside,
    hold_tracks,
    merge_boxes,
    motion_region,
)
from edged.pipeline.tracker import IouTracker
from edged.types import Detection, Frame

SECONDS, FPS, GAPS = 40.0, 5.0, (6.0, 9.0)  # the short gate scene CI uses: 2 passes, 1 lighting change


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> tuple[GateScene, list[np.ndarray], dict[str, Any]]:
    path = tmp_path_factory.mktemp("gate") / "gate.mp4"
    make_gate_sample(path, seconds=SECONDS, fps=FPS, gap_s=GAPS)
    return (
        GateScene(SECONDS, FPS, gap_s=GAPS),
        read_video(path),
        json.loads(path.with_suffix(".json").read_text()),
    )


def run_gate(frames: list[np.ndarray], gate: MotionGate, tracking: bool = False) -> list[MotionResult]:
    return [gate.check(Frame("gate", i, img), tracking=tracking) for i, img in enumerate(frames)]


def masks_of(meta: dict[str, Any]) -> list[list[tuple[float, float]]]:
    return [[(float(x), float(y)) for x, y in poly] for poly in meta["masks"].values()]


def car_in_view(scene: GateScene, frame: int, min_px: int = 16) -> bool:
    """At least `min_px` columns of some car body are inside the frame."""
    for car in scene.cars:
        if car.first <= frame <= car.last:
            cx, _ = car.center(frame)
            if min(cx + car.width / 2, scene.width) - max(cx - car.width / 2, 0) >= min_px:
                return True
    return False


def quiet_frames(scene: GateScene, margin: int) -> list[int]:
    """Frames with no car within `margin` frames (so no ghost of one either)."""
    return [
        i for i in range(scene.frames) if not any(car_in_view(scene, j, 1) for j in range(i - margin, i + 1))
    ]


def test_gate_sample_is_a_mostly_empty_scene_with_truth(
    gate: tuple[GateScene, list[np.ndarray], dict[str, Any]],
) -> None:
    scene, frames, meta = gate
    assert len(frames) == scene.frames == 200 and frames[0].shape == (480, 640, 3)
    assert meta["scene"] == "gate" and len(meta["passes"]) == 2 and len(meta["lighting_changes"]) >= 1
    for p in meta["passes"]:  # the truth window is exactly the frames that show the plate
        assert [i for i, t in enumerate(meta["truth"]) if p["text"] in {x["text"] for x in t}] == list(
            range(p["first"], p["last"] + 1)
        )
    # The 10-minute default: plates in view under 10 % of the time, a car every minute or so.
    full = GateScene()
    visible = sum(1 for i in range(full.frames) if full.truth(i))
    assert full.frames == 3000 and 0.02 < visible / full.frames < 0.10 and len(full.cars) >= 6
    assert len({c.plate.text for c in full.cars}) == len(full.cars)


def test_make_sample_cli_writes_the_gate_scene(tmp_path: Path) -> None:
    out = tmp_path / "g.mp4"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "make-sample",
            "--scene",
            "gate",
            "--seconds",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert len(read_video(out)) == 20 and json.loads(out.with_suffix(".json").read_text())["scene"] == "gate"


def test_every_pass_is_detected_from_its_first_frames_and_the_empty_scene_is_idle(
    gate: tuple[GateScene, list[np.ndarray], dict[str, Any]],
) -> None:
    scene, frames, meta = gate
    results = run_gate(frames, MotionGate(masks=masks_of(meta), full_frame_every=0))
    for car in scene.cars:
        shown = [i for i in range(car.first, car.last + 1) if car_in_view(scene, i)]
        assert shown[0] <= car.plate.start and shown[-1] >= car.plate.end - 1
        moved = [i for i in shown if car.center(i) != car.center(i - 1)]
        missed = [i for i in moved if not results[i].run_detector]
        assert missed == [], f"{car.plate.text}: frames {missed} with the car moving in view were skipped"
        mid = moved[len(moved) // 4]
        x, _ = car.center(mid)
        boxes = results[mid].boxes
        assert boxes and any(b[0] <= x + car.width / 2 and x - car.width / 2 <= b[2] for b in boxes), (
            mid,
            boxes,
        )
        # Waiting at the barrier, the car is still: no motion after the frame it stopped on.
        waiting = range(car.plate.stop + 2, car.plate.go)
        assert len(waiting) >= 8 and [i for i in waiting if results[i].run_detector] == []
    quiet = quiet_frames(scene, margin=10)
    assert len(quiet) > 60
    assert [i for i in quiet if results[i].run_detector and i > 0] == []
    assert results[0].reason == "start" and results[0].run_detector


def test_masks_silence_the_tree_and_the_clock(
    gate: tuple[GateScene, list[np.ndarray], dict[str, Any]],
) -> None:
    scene, frames, meta = gate
    quiet = quiet_frames(scene, margin=10)
    unmasked = run_gate(frames, MotionGate(full_frame_every=0))
    masked = run_gate(frames, MotionGate(masks=masks_of(meta), full_frame_every=0))
    moving_unmasked = sum(unmasked[i].moving for i in quiet)
    assert moving_unmasked > 0.25 * len(quiet)  # the swaying tree is motion on a third of them
    assert sum(masked[i].moving for i in quiet) == 0
    tree = meta["masks"]["tree"]
    assert any(b[0] >= tree[0][0] - 40 and b[1] <= tree[2][1] for i in quiet for b in unmasked[i].boxes)


def test_a_lighting_change_does_not_start_a_storm(
    gate: tuple[GateScene, list[np.ndarray], dict[str, Any]],
) -> None:
    scene, frames, meta = gate
    results = run_gate(frames, MotionGate(masks=masks_of(meta), full_frame_every=0))
    for start in meta["lighting_changes"]:
        assert scene.gain(start + 5) / scene.gain(start - 1) < 0.8 or scene.gain(start - 1) < 0.8
        assert [r.reason for r in results[start - 2 : start + 15]] == ["idle"] * 17
    # Changes no brightness compensation explains: half the picture lit up costs one detector run
    # (it differs from the frame before), then the frames are idle again; a picture that changes
    # almost everywhere (here: inverted, like a camera switching to infrared) resets the background.
    base = frames[meta["lighting_changes"][0] - 10]
    half = base.copy()
    half[:, 320:] = np.clip(half[:, 320:].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    reasons = [r.reason for r in run_gate([base] * 5 + [half] * 10, MotionGate(masks=masks_of(meta)))]
    assert reasons == ["start"] + ["idle"] * 4 + ["motion"] + ["idle"] * 9
    reasons = [r.reason for r in run_gate([base] * 5 + [255 - base] * 10, MotionGate(masks=masks_of(meta)))]
    assert reasons == ["start"] + ["idle"] * 4 + ["lighting"] + ["idle"] * 9


def test_full_frame_and_redetect_runs_while_nothing_moves(
    gate: tuple[GateScene, list[np.ndarray], dict[str, Any]],
) -> None:
    _, frames, meta = gate
    still = [frames[3]] * 30
    periodic = run_gate(still, MotionGate(masks=masks_of(meta), full_frame_every=7, redetect_every=3))
    assert [i for i, r in enumerate(periodic) if r.run_detector] == [0, 7, 14, 21, 28]
    assert {r.reason for r in periodic[1:] if r.run_detector} == {"full_frame"}
    tracked = run_gate(
        still, MotionGate(masks=masks_of(meta), full_frame_every=7, redetect_every=3), tracking=True
    )
    assert [i for i, r in enumerate(tracked) if r.run_detector] == list(range(0, 30, 3))
    status = MotionGate().status()
    assert status["state"] == "off"


def test_held_tracks_survive_idle_frames_and_unseen_ones_still_end() -> None:
    tr = IouTracker(max_age=5)
    parked, gone = Detection("car", 0.9, (10, 10, 60, 40)), Detection("car", 0.9, (300, 10, 350, 40))
    tr.update([parked, gone], 0)
    tr.update([Detection("car", 0.9, (10, 10, 60, 40))], 1)  # `gone` left at frame 1
    for seq in range(2, 40):  # 38 idle frames: nothing moved
        hold_tracks(tr, seq)
    hold_tracks(tr, 20)  # a hold that arrives after later frames changes nothing
    again = Detection("car", 0.9, (11, 10, 61, 40))
    upd = tr.update([again], 40)
    assert again.attrs["track_id"] == parked.attrs["track_id"] and upd.new == []
    assert [t.id for t in upd.ended] == [gone.attrs["track_id"]]
    # Idle frames right after a detector run hold what that run saw (tracker.seq follows updates).
    hold_tracks(tr, 41)
    assert [t.last_seq for t in tr.tracks] == [41] and tr.seq == 41


def test_tracks_outside_a_region_are_held_and_inside_ones_age() -> None:
    tr = IouTracker(max_age=3)
    parked, passing = Detection("car", 0.9, (10, 10, 60, 40)), Detection("car", 0.9, (300, 200, 360, 240))
    tr.update([parked, passing], 0)
    region = (250, 150, 640, 480)  # motion around the passing car; the parked one lies outside
    for seq in range(1, 10):
        hold_outside(tr, region, seq)
        upd = tr.update([], seq)
        if seq == 3:  # the passing car's track was looked at and not found: it ends after max_age
            assert [t.id for t in upd.ended] == [passing.attrs["track_id"]]
    assert [t.id for t in tr.tracks] == [parked.attrs["track_id"]] and tr.tracks[0].last_seq == 9


def test_motion_region_grows_the_boxes_keeps_a_minimum_and_stays_in_the_frame() -> None:
    assert motion_region([(300, 200, 340, 220)], 640, 480, 0.5, 0.25) == (240, 150, 400, 270)
    assert motion_region([(100, 100, 200, 150), (400, 300, 420, 320)], 640, 480, 0.0, 0.1) == (
        100,
        100,
        420,
        320,
    )
    # Grown past the border: shifted back inside, never larger than the frame.
    assert motion_region([(0, 0, 200, 100)], 640, 480, 0.5, 0.25) == (0, 0, 400, 300)
    assert motion_region([(0, 0, 600, 400)], 640, 480, 1.0, 0.25) == (0, 0, 640, 480)


def test_region_mode_marks_motion_runs_only(
    gate: tuple[GateScene, list[np.ndarray], dict[str, Any]],
) -> None:
    _, frames, meta = gate
    results = run_gate(frames, MotionGate(masks=masks_of(meta), full_frame_every=20, region=True))
    assert results[0].reason == "start" and results[0].region is None
    assert {r.reason for r in results if r.region is not None} == {"motion"}
    assert all(r.region is None for r in results if r.reason != "motion")
    motion = [r for r in results if r.reason == "motion"]
    assert motion and all(r.region is not None for r in motion)
    for r in motion:
        assert r.region is not None
        x1, y1, x2, y2 = r.region
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 and x2 - x1 >= 160 and y2 - y1 >= 120
        for b in r.boxes:  # every motion box lies inside its region
            assert x1 <= b[0] and y1 <= b[1] and b[2] <= x2 and b[3] <= y2
    assert any(r.reason == "full_frame" for r in results)
    # Regions are mostly much smaller than the frame (what saves the detector's work).
    areas = sorted((r.region[2] - r.region[0]) * (r.region[3] - r.region[1]) for r in motion if r.region)
    assert areas[len(areas) // 2] < 0.6 * 640 * 480, areas


def test_merge_boxes_unions_overlaps() -> None:
    assert merge_boxes([(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 40, 40)]) == [
        (0, 0, 20, 20),
        (30, 30, 40, 40),
    ]


def test_motion_config_defaults_off_and_bad_masks_are_located(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("cameras:\n  gate:\n    source: file://x.mp4\n")
    assert load_config(ok, check_files=False).cameras["gate"].motion.enabled is False
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "cameras:\n  gate:\n    source: file://x.mp4\n    motion:\n      enabled: true\n"
        "      masks: [[[0, 0], [10, 0]]]\n      threshold: 0\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(bad, check_files=False)
    text = str(e.value)
    assert "bad.yaml:6:7: cameras.gate.motion.masks: mask 0 has 2 points" in text and "at least 3" in text, (
        text
    )
    assert "bad.yaml:7:18: cameras.gate.motion.threshold" in text, text
