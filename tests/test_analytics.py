"""The analytics layer on hand-made tracks: line crossings (direction, margin, min age, polylines),
zones (inertia, dwell, loitering, tracks that end inside, occupancy), speeds from a homography, the
counts store and its /metrics collector, the per-frame cost bookkeeping. Pure Python, milliseconds."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edged.analytics.counts import AnalyticsCollector, LineCounts
from edged.analytics.geometry import anchor_point, crossing_sign, in_sign, inside
from edged.analytics.lines import Line
from edged.analytics.scene import SceneAnalytics
from edged.analytics.speed import GroundMap, SpeedTrack
from edged.analytics.zones import Zone
from edged.config.analytics import DIRECTIONS, AnalyticsConfig, CalibrationConfig, LineConfig, ZoneConfig
from edged.types import Detection

VERTICAL = [(100.0, 0.0), (100.0, 200.0)]  # x = 100, drawn top to bottom


def det(x: float, y: float, tid: int, label: str = "car", w: float = 20, h: float = 10) -> Detection:
    """A tracked box whose bottom centre is (x, y)."""
    return Detection(label, 0.9, (x - w / 2, y - h, x + w / 2, y), attrs={"track_id": tid})


@pytest.mark.parametrize(
    ("points", "direction", "move"),
    [
        (VERTICAL, "right", ((90, 50), (110, 50))),
        (VERTICAL[::-1], "right", ((90, 50), (110, 50))),  # drawn bottom to top: same meaning
        (VERTICAL, "left", ((110, 50), (90, 50))),
        ([(0.0, 100.0), (200.0, 100.0)], "down", ((50, 90), (50, 110))),
        ([(200.0, 100.0), (0.0, 100.0)], "up", ((50, 110), (50, 90))),
        ([(0.0, 0.0), (200.0, 200.0)], "right", ((100, 110), (110, 100))),  # a diagonal, crossed rightwards
    ],
)
def test_the_in_direction_is_the_screen_direction_whatever_way_the_line_is_drawn(
    points: list[tuple[float, float]], direction: str, move: tuple[tuple[float, float], tuple[float, float]]
) -> None:
    sign = crossing_sign(move[0], move[1], points)
    assert sign != 0 and sign == in_sign(points, DIRECTIONS[direction])
    assert crossing_sign(move[1], move[0], points) == -sign


def test_crossings_need_the_segment_not_its_extension_and_a_zigzag_nets_out() -> None:
    assert crossing_sign((90, 250), (110, 250), VERTICAL) == 0  # below the segment's end
    zigzag = [(100.0, 0.0), (100.0, 100.0), (120.0, 100.0), (120.0, 200.0)]
    assert crossing_sign((90, 150), (130, 150), zigzag) == in_sign(zigzag, DIRECTIONS["right"])
    # A move that crosses the polyline twice (in, then back out through its other leg) counts nothing.
    assert crossing_sign((110, 50), (110, 150), [(100.0, 0.0), (130.0, 100.0), (100.0, 200.0)]) == 0


def test_anchor_points() -> None:
    box = (10.0, 20.0, 30.0, 60.0)
    assert anchor_point(box, "bottom_center") == (20.0, 60.0)
    assert anchor_point(box, "center") == (20.0, 40.0)
    assert anchor_point(box, "top_center") == (20.0, 20.0)
    assert anchor_point(box, "left_center") == (10.0, 40.0)
    assert anchor_point(box, "right_center") == (30.0, 40.0)
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    assert inside((5, 5), square) and not inside((15, 5), square) and not inside((5, -1), square)


def line(**kw: object) -> Line:
    return Line("gate", LineConfig.model_validate({"points": VERTICAL, "in_direction": "right", **kw}))


def test_a_line_counts_each_crossing_once_and_ignores_jitter_on_it() -> None:
    ln = line(min_age=1, margin=3)
    got = []
    # Approach, jitter on the line (within the margin) back and forth, then go through and back.
    for seq, x in enumerate([80, 90, 98.5, 101, 99, 102, 120, 130, 90]):
        got += [(c.direction, c.at_seq) for c in ln.observe(1, seq + 1, (x, 50), seq, seq / 10)]
    assert got == [("in", 6), ("out", 8)]


def test_a_young_track_counts_once_it_is_old_enough_unless_it_went_back() -> None:
    ln = line(min_age=3)
    assert ln.observe(1, 1, (90, 50), 0, 0.0) == []
    assert ln.observe(1, 2, (110, 50), 1, 0.1) == []  # crossed at age 2: pending
    late = ln.observe(1, 3, (115, 50), 2, 0.2)
    assert [(c.direction, c.at_seq, c.at_t, c.point) for c in late] == [("in", 1, 0.1, (110, 50))]
    # A flicker that crosses and comes back before it is old enough counts nothing.
    ln.observe(2, 1, (90, 150), 0, 0.0)
    ln.observe(2, 2, (110, 150), 1, 0.1)
    assert ln.observe(2, 3, (90, 150), 2, 0.2) == [] and ln.observe(2, 4, (80, 150), 3, 0.3) == []
    # A track that ends while its crossing is pending takes it along.
    ln.observe(3, 1, (90, 50), 0, 0.0)
    ln.observe(3, 2, (110, 50), 1, 0.1)
    ln.forget(3)
    assert ln.observe(3, 3, (120, 50), 2, 0.2) == []


def zone(**kw: object) -> Zone:
    square = [[0, 0], [100, 0], [100, 100], [0, 100]]
    return Zone("bay", ZoneConfig.model_validate({"points": square, **kw}))


def test_a_zone_enters_and_leaves_after_inertia_dated_at_the_first_frame() -> None:
    z = zone(inertia=3)
    xs = [-10, 10, -5, 10, 20, 30, 40, 150, 50, 150, 160, 170, 180]  # a flicker in, then in; out
    changes = [(seq, z.observe(7, "car", (x, 50), seq, seq * 0.2)) for seq, x in enumerate(xs)]
    happened = [(seq, c.kind, c.at_seq, c.dwell_s) for seq, c in changes if c is not None]
    assert happened == [(5, "enter", 3, 0.0), (11, "exit", 9, pytest.approx((9 - 3) * 0.2))]
    assert z.occupancy() == {"car": 0}


def test_loitering_is_raised_once_while_inside_and_a_lost_track_leaves_when_last_seen() -> None:
    z = zone(inertia=1, loiter_s=2.0)
    z.observe(1, "person", (50, 50), 0, 0.0)
    z.observe(2, "car", (60, 60), 0, 0.0)
    assert z.occupancy() == {"car": 1, "person": 1}
    assert z.loiterers(9, 1.8) == []
    loiter = z.loiterers(10, 2.0)
    assert sorted((c.track_id, c.kind, c.at_seq, c.dwell_s) for c in loiter) == [
        (1, "loiter", 10, 2.0),
        (2, "loiter", 10, 2.0),
    ]
    assert z.loiterers(11, 2.2) == []  # once per stay
    gone = z.end(1, (12, 2.4))
    assert gone is not None and (gone.kind, gone.reason, gone.at_seq, gone.dwell_s) == (
        "exit",
        "lost",
        12,
        2.4,
    )
    assert z.end(99, (12, 2.4)) is None
    assert z.occupancy() == {"car": 1, "person": 0}


def calibration() -> CalibrationConfig:
    # 10 px per metre along x; a perspective along y (rows nearer the top are further away).
    return CalibrationConfig(
        image=[(0, 400), (400, 400), (300, 100), (100, 100)], ground=[(0, 0), (40, 0), (40, 30), (0, 30)]
    )


def test_speed_is_the_slope_of_ground_positions_over_the_window() -> None:
    ground = GroundMap(calibration())
    assert ground.to_ground([(0, 400), (400, 400), (300, 100)]) == [
        pytest.approx((0, 0), abs=1e-6),
        pytest.approx((40, 0), abs=1e-6),
        pytest.approx((40, 30), abs=1e-6),
    ]
    sp = SpeedTrack(window_s=1.0)
    assert sp.kmh() is None
    for i in range(11):  # 5 m/s along the near edge, 10 frames a second
        sp.add(i / 10, ground.to_ground([(10.0 + 5.0 * i, 400.0)])[0])
    assert sp.kmh() == pytest.approx(18.0, rel=1e-6)
    assert sp.kmh(at=0.15) is None  # two positions are not a speed
    jitter = SpeedTrack(window_s=1.0)
    for i in range(11):
        jitter.add(i / 10, (0.5 * i + (0.05 if i % 2 else -0.05), 0.0))  # +-5 cm of noise
    assert jitter.kmh() == pytest.approx(18.0, rel=0.05)


def scene(cfg: dict[str, object], counts: LineCounts | None = None) -> SceneAnalytics:
    return SceneAnalytics("cam", AnalyticsConfig.model_validate(cfg), counts or LineCounts())


def test_scene_events_carry_counts_occupancy_speed_and_the_detection() -> None:
    counts = LineCounts()
    sc = scene(
        {
            "lines": {"gate": {"points": [[200, 0], [200, 400]], "in_direction": "right", "min_age": 2}},
            "zones": {"bay": {"points": [[250, 300], [400, 300], [400, 420], [250, 420]], "inertia": 2}},
            "calibration": calibration().model_dump(),
        },
        counts,
    )
    events = []
    for seq in range(12):
        d = det(155 + 10 * seq, 400, tid=5)
        d.children["rec"] = [Detection("AB 123", 0.99, d.box)]
        events += sc.update([d], seq, seq / 10, frame_size=(400, 420))
    kinds = [(e.kind, e.name, e.at_seq) for e in events]
    assert kinds == [("crossing", "gate", 5), ("enter", "bay", 10)]
    crossing, enter = events
    assert crossing.direction == "in" and crossing.counts == {"in": 1, "out": 0}
    assert crossing.speed_kmh == pytest.approx(3.6 * 10, rel=1e-6)  # 10 px a frame = 1 m at 10 fps
    assert crossing.detection.children["rec"][0].label == "AB 123"
    assert enter.occupancy == {"car": 1}
    assert counts.lines("cam")["gate"]["in"] == 1
    status = sc.status()
    assert status["lines"]["gate"]["in"] == 1 and status["zones"]["bay"]["occupancy"] == 1
    assert status["cost_ms"] is not None and status["problems"] == []
    # The track ends inside: it left when it was first not seen (frame 12), not when it ended (20).
    sc.update([], 12, 1.2)
    (lost,) = sc.update([], 20, 2.0, ended=[5])
    assert (lost.kind, lost.reason, lost.at_seq, lost.since_t, lost.dwell_s) == ("exit", "lost", 12, 1.0, 0.2)
    assert sc.occupancy() == {"bay": {"car": 0}}


def test_frames_the_chain_skipped_do_not_count_as_unseen() -> None:
    sc = scene({"zones": {"bay": {"points": [[0, 0], [100, 0], [100, 100], [0, 100]], "inertia": 1}}})
    sc.update([det(50, 50, tid=1)], 0, 0.0)
    for seq in range(1, 30):  # motion gating held the parked car's track over these frames
        sc.update([], seq, seq / 10, held=True)
    (gone,) = sc.update([], 30, 3.0, ended=[1])
    assert gone.at_seq == 30 and gone.dwell_s == pytest.approx(3.0)


def test_classes_filter_lines_and_zones() -> None:
    sc = scene(
        {
            "lines": {
                "gate": {
                    "points": [[100, 0], [100, 200]],
                    "in_direction": "right",
                    "classes": ["car"],
                    "min_age": 1,
                }
            },
            "zones": {
                "z": {"points": [[0, 0], [300, 0], [300, 300], [0, 300]], "classes": ["person"], "inertia": 1}
            },
        }
    )
    events = []
    for seq, x in enumerate((90, 110)):
        events += sc.update([det(x, 50, 1, "car"), det(x, 150, 2, "person")], seq, seq / 10)
    assert sorted((e.kind, e.track_id) for e in events) == [("crossing", 1), ("enter", 2)]


def test_lines_outside_the_frame_are_one_log_line_at_the_first_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sc = scene({"lines": {"gate": {"points": [[100, 0], [700, 400]], "in_direction": "down"}}})
    with caplog.at_level(logging.WARNING):
        sc.update([], 0, 0.0, frame_size=(640, 360))
        sc.update([], 1, 0.1, frame_size=(640, 360))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "analytics.lines.gate.points.1: point [700, 400] is outside the 640x360 frame" in warnings[0]
    assert sc.status()["problems"] == [
        "analytics.lines.gate.points.1: point [700, 400] is outside the 640x360 frame"
    ]


def test_counts_survive_a_camera_restart_reset_and_reach_metrics() -> None:
    counts = LineCounts(clock=lambda: 1000.0)
    counts.configure("cam", ["gate", "lane"])
    counts.add("cam", "gate", "in", "car")
    counts.add("cam", "gate", "in", "person")
    counts.add("cam", "gate", "out", "car")
    counts.configure("cam", ["gate"])  # restarted with `lane` removed: gate keeps its counts
    assert counts.lines("cam") == {
        "gate": {
            "in": 2,
            "out": 1,
            "by_label": {"car": {"in": 1, "out": 1}, "person": {"in": 1, "out": 0}},
            "since": 1000.0,
        }
    }
    registry = CollectorRegistry()
    registry.register(AnalyticsCollector(counts, lambda: {"cam": {"bay": {"car": 2, "person": 0}}}))
    text = generate_latest(registry).decode()
    assert 'edged_line_crossings_total{camera="cam",direction="in",line="gate"} 2.0' in text
    assert 'edged_line_crossings_total{camera="cam",direction="out",line="gate"} 1.0' in text
    assert 'edged_zone_objects{camera="cam",label="car",zone="bay"} 2.0' in text
    assert counts.reset("cam", "nope") == [] and counts.lines("cam")["gate"]["in"] == 2
    assert counts.reset("cam") == ["gate"]
    assert counts.lines("cam")["gate"] == {"in": 0, "out": 0, "by_label": {}, "since": 1000.0}
    counts.configure("cam", [])  # the camera lost its lines (or went): nothing reported
    assert counts.samples() == []


def test_the_documented_payloads_match_their_schemas() -> None:
    import json
    import re

    import jsonschema

    from edged.publish.event import event_schema
    from tests.support.paths import ROOT

    docs = (ROOT / "docs/analytics.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", docs, re.S)]
    kinds = {b["schema"]: b for b in blocks}
    assert set(kinds) == {"edged.crossing/1", "edged.zone/1"}
    jsonschema.validate(kinds["edged.crossing/1"], event_schema("crossing"))
    jsonschema.validate(kinds["edged.zone/1"], event_schema("zone"))
