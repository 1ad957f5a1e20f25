"""Tracker benchmark: identities kept on the traffic sample, and host CPU per frame, side by side in one run.

Runs on the recorded PP-OCR detections of every frame of `edged make-sample --scene traffic`
(tests/data/traffic_detections.json, written by scripts/record_traffic.py), against the sample's truth
(edged.demo.tracking_eval: CLEAR-MOT ID switches, fragmentations, track ids per object):

- edged's tracker without its motion model (`tracking.motion_model: none`, the tracker before issue 25),
- edged's tracker with it (constant-velocity Kalman + the two-step matching cascade; the default),
- Roboflow's ByteTrack (`trackers.ByteTrackTracker`, the tracker supervision points to) when the
  `trackers` package is importable. It is not a dependency of edged: install it into a separate
  virtualenv (`python -m venv /tmp/bt && /tmp/bt/bin/pip install trackers`) and run this script with
  that interpreter and PYTHONPATH=. to include it.

Then the cost of one `update()` with 20 live tracks (synthetic boxes on a grid, moving), per tracker,
in microseconds per frame (host CPU time of this process, best of 5 runs, one thread), and edged's scene analytics on the same
frames (2 lines, 2 zones, a calibration: the issue's goal is < 0.5 ms per camera per frame).

Usage: python scripts/bench_tracking.py [--frames 2000] [--recorded tests/data/traffic_detections.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record_traffic import check_recording  # noqa: E402

from edged.demo.sample_traffic import TrafficScene, scene_extra  # noqa: E402
from edged.demo.tracking_eval import BoxT, score_identities  # noqa: E402
from edged.demo.truth import detection_from_dict  # noqa: E402
from edged.pipeline.tracker import IouTracker  # noqa: E402
from edged.types import Detection  # noqa: E402

Tracked = list[tuple[int, BoxT]]


def edged_tracker(motion: bool) -> Callable[[list[Detection], int], Tracked]:
    tr = IouTracker(0.3, 15, 0.5, motion=motion)

    def step(dets: list[Detection], seq: int) -> Tracked:
        tr.update(dets, seq)
        return [(d.attrs["track_id"], d.box) for d in dets if "track_id" in d.attrs]

    return step


def bytetrack(fps: float) -> Callable[[list[Detection], int], Tracked] | None:
    try:
        import supervision as sv
        from trackers import ByteTrackTracker
    except ImportError:
        return None
    # The same knobs as edged's: 15 frames unseen before a track ends, 0.5 splits high and low scores,
    # IoU 0.3 to continue a track, tracks start on the first frame.
    tr = ByteTrackTracker(
        lost_track_buffer=round(15 * 30 / fps),
        frame_rate=fps,
        track_activation_threshold=0.5,
        minimum_consecutive_frames=1,
        minimum_iou_threshold=0.3,
        high_conf_det_threshold=0.5,
    )

    def step(dets: list[Detection], seq: int) -> Tracked:
        if dets:
            xyxy = np.asarray([d.box for d in dets], dtype=np.float32)
            conf = np.asarray([d.score for d in dets], dtype=np.float32)
            found = sv.Detections(xyxy=xyxy, confidence=conf, class_id=np.zeros(len(dets), dtype=int))
        else:
            found = sv.Detections.empty()
        out = tr.update(found)
        ids = out.tracker_id if out.tracker_id is not None else []
        return [(int(t), tuple(float(v) for v in b)) for t, b in zip(ids, out.xyxy, strict=True) if t >= 0]  # type: ignore[misc]

    return step


def synthetic(frames: int, tracks: int = 20) -> list[list[Detection]]:
    """`tracks` boxes on a grid in a 1920x1080 frame, each moving at its own steady speed."""
    rng = np.random.default_rng(5)
    start = [(100 + 340 * (i % 5), 100 + 220 * (i // 5)) for i in range(tracks)]
    vel = rng.uniform(-3, 3, size=(tracks, 2))
    out = []
    for f in range(frames):
        dets = []
        for (x, y), (vx, vy) in zip(start, vel, strict=True):
            cx, cy = x + vx * (f % 200), y + vy * (f % 200)
            dets.append(Detection("car", 0.9, (cx, cy, cx + 120, cy + 80)))
        out.append(dets)
    return out


REPEATS = 5  # each cost is the best of this many runs (process CPU time: other processes' load stays out)


def per_frame_us(
    make: Callable[[], Callable[[list[Detection], int], Any]], frames: list[list[Detection]]
) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        step = make()
        copies = [[Detection(d.label, d.score, d.box) for d in fr] for fr in frames]
        t0 = time.process_time()
        for seq, dets in enumerate(copies):
            step(dets, seq)
        best = min(best, time.process_time() - t0)
    return best / len(frames) * 1e6


def analytics_us(frames: list[list[Detection]]) -> tuple[float, float, int]:
    """(tracker + analytics, analytics alone) microseconds per frame on the synthetic 20-track frames,
    and how many events the analytics raised in one run."""
    from edged.analytics.counts import LineCounts
    from edged.analytics.scene import SceneAnalytics
    from edged.config.analytics import AnalyticsConfig

    cfg = AnalyticsConfig.model_validate(
        {
            "lines": {
                "a": {"points": [[960, 0], [960, 1080]], "in_direction": "right"},
                "b": {"points": [[0, 540], [700, 560], [1920, 540]], "in_direction": "down"},
            },
            "zones": {
                "z1": {"points": [[100, 100], [900, 100], [900, 500], [100, 500]], "loiter_s": 5},
                "z2": {"points": [[1000, 500], [1800, 520], [1700, 1000], [1100, 980]]},
            },
            "calibration": {
                "image": [[200, 1000], [1700, 1000], [1300, 300], [600, 300]],
                "ground": [[0, 0], [20, 0], [20, 30], [0, 30]],
            },
        }
    )
    best_total = best_spent = float("inf")
    for _ in range(REPEATS):
        tracker = IouTracker(0.3, 15, 0.5)
        scene = SceneAnalytics("bench", cfg, LineCounts())
        copies = [[Detection(d.label, d.score, d.box) for d in fr] for fr in frames]
        spent = 0.0
        events = 0
        t0 = time.process_time()
        for seq, dets in enumerate(copies):
            upd = tracker.update(dets, seq)
            t1 = time.process_time()
            events += len(scene.update(dets, seq, seq / 10.0, [t.id for t in upd.ended], (1920, 1080)))
            spent += time.process_time() - t1
        best_total, best_spent = min(best_total, time.process_time() - t0), min(best_spent, spent)
    return best_total / len(frames) * 1e6, best_spent / len(frames) * 1e6, events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recorded", default=str(ROOT / "tests/data/traffic_detections.json"))
    ap.add_argument("--frames", type=int, default=2000, help="synthetic frames for the cost runs")
    args = ap.parse_args()
    rec = json.loads(Path(args.recorded).read_text())
    check_recording(rec)  # the truth below must be the scene the detections were recorded from
    s = rec["sample"]
    scene = TrafficScene(s["frames"], s["fps"], s["seed"])
    truth = [scene.truth(i) for i in range(scene.frames)]
    pair = scene_extra(scene)["crossing_paths"][0]["objects"]
    recorded = [[detection_from_dict(d) for d in fr] for fr in rec["frames"]]
    bt = bytetrack(s["fps"])
    trackers: dict[str, Callable[[], Callable[[list[Detection], int], Tracked] | None]] = {
        "edged, no motion model (before)": lambda: edged_tracker(False),
        "edged, Kalman + cascade (after)": lambda: edged_tracker(True),
    }
    if bt is not None:
        trackers["trackers.ByteTrackTracker"] = lambda: bytetrack(s["fps"])
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"traffic sample: {len(recorded)} frames at {s['fps']:g} fps, recorded PP-OCR detections; crossing pair = objects {pair}"
    )
    for name, make in trackers.items():
        step = make()
        assert step is not None
        tracked = [
            step([Detection(d.label, d.score, d.box) for d in dets], seq) for seq, dets in enumerate(recorded)
        ]
        every = score_identities(truth, tracked)
        crossing = score_identities(truth, tracked, objects=pair)
        print(f"  {name}:")
        print(f"    all objects:    {every.line()}")
        print(f"    crossing pair:  {crossing.line()}")
    frames = synthetic(args.frames)
    print(f"cost with 20 live tracks ({args.frames} synthetic frames), host CPU per frame:")
    base = None
    for name, make in trackers.items():
        us = per_frame_us(make, frames)  # type: ignore[arg-type]
        base = base or us
        print(f"  {name}: {us:8.1f} us  ({us / base:.2f}x the first)")
    total, analytics, events = analytics_us(frames)
    print(
        f"  edged tracker + scene analytics (2 lines, 2 zones, calibration): {total:8.1f} us, "
        f"of which analytics {analytics:.1f} us ({analytics / 1000:.3f} ms; goal < 0.5 ms; "
        f"{events} crossing and zone events in the {len(frames)} frames)"
    )
    if bt is None:
        print("(trackers.ByteTrackTracker not importable here: see this script's docstring to include it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
