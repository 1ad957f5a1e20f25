"""Validation of lines, zones and calibrations: one message per problem with file:line:column (what
`edged check-config` prints and a SIGHUP reload logs), every problem in one run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edged.config.loader import load_config
from edged.config.problems import ConfigError
from tests.support.paths import ROOT

HEAD = """\
models:
  det: {path: det.onnx, kind: ppocr_det}
  yolo: {path: yolo.onnx, kind: yolo, labels: labels.txt}
cameras:
  road:
    source: road.mp4
    width: 640
    height: 360
    chain: [{model: det}]
    analytics:
"""


def problems(tmp_path: Path, analytics: str, head: str = HEAD) -> list[str]:
    path = tmp_path / "edged.yaml"
    path.write_text(head + analytics)
    (tmp_path / "labels.txt").write_text("person\ncar\ntruck\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, check_files=False)
    return [str(p).replace(str(path), "edged.yaml") for p in e.value.problems]


def test_a_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "edged.yaml"
    path.write_text(
        HEAD
        + """\
      lines:
        gate: {points: [[300, 10], [320, 350]], in_direction: right, classes: [text]}
      zones:
        bay: {points: [[400, 200], [600, 200], [600, 350], [400, 350]], loiter_s: 30}
      calibration:
        image: [[100, 350], [540, 350], [460, 60], [180, 60]]
        ground: [[0, 0], [20, 0], [20, 40], [0, 40]]
"""
    )
    cfg = load_config(path, check_files=False)
    an = cfg.cameras["road"].analytics
    assert list(an.lines) == ["gate"] and an.zones["bay"].inertia == 3 and an.calibration is not None


def test_points_outside_the_frame(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
      lines:
        gate: {points: [[300, 10], [700, 350]], in_direction: right}
      zones:
        bay:
          points: [[400, 200], [600, 200], [600, 380], [400, 350]]
""",
    )
    assert got == [
        "edged.yaml:12:36: cameras.road.analytics.lines.gate.points[1]: point [700, 350] is outside the 640x360 frame",
        "edged.yaml:15:44: cameras.road.analytics.zones.bay.points[2]: point [600, 380] is outside the 640x360 frame",
    ]


def test_degenerate_lines_and_zones(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
      lines:
        dot: {points: [[300, 10], [300, 10]], in_direction: right}
        flat: {points: [[100, 100], [500, 110]], in_direction: right}
        short: {points: [[100, 100]], in_direction: down}
      zones:
        line: {points: [[10, 10], [100, 100], [200, 200]]}
        bowtie: {points: [[10, 10], [100, 10], [10, 100], [100, 100]]}
""",
    )
    assert got == [
        "edged.yaml:12:15: cameras.road.analytics.lines.dot.points: points 0 and 1 are the same: every segment of a line needs a length",
        "edged.yaml:13:9: cameras.road.analytics.lines.flat: the line runs almost right-wards itself, so moving right hardly crosses it: set in_direction to up or down",
        "edged.yaml:14:17: cameras.road.analytics.lines.short.points: List should have at least 2 items after validation, not 1",
        "edged.yaml:16:16: cameras.road.analytics.zones.line.points: the points enclose no area (they lie on one line): a zone needs a polygon",
        "edged.yaml:17:18: cameras.road.analytics.zones.bowtie.points: edges 1-2 and 3-0 cross: list the points in order around the zone",
    ]


def test_unknown_classes_and_classes_the_first_stage_drops(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
      lines:
        gate: {points: [[300, 10], [320, 350]], in_direction: right, classes: [text, car]}
""",
    )
    assert got == [
        "edged.yaml:12:86: cameras.road.analytics.lines.gate.classes[1]: unknown class 'car': model det gives text"
    ]
    yolo = HEAD.replace("chain: [{model: det}]", "chain: [{model: yolo, classes: [car, truck]}]")
    got = problems(
        tmp_path,
        """\
      zones:
        bay: {points: [[400, 200], [600, 200], [600, 350]], classes: [truck, bus, person]}
""",
        yolo,
    )
    assert got == [
        "edged.yaml:12:78: cameras.road.analytics.zones.bay.classes[1]: unknown class 'bus': model yolo gives person, car, truck",
        "edged.yaml:12:83: cameras.road.analytics.zones.bay.classes[2]: class 'person' never reaches the tracker: the first stage keeps only car, truck",
    ]


def test_calibrations_that_do_not_invert(tmp_path: Path) -> None:
    collinear = problems(
        tmp_path,
        """\
      calibration:
        image: [[100, 350], [300, 350], [500, 350], [180, 60]]
        ground: [[0, 0], [20, 0], [20, 40], [0, 40]]
""",
    )
    assert collinear == [
        "edged.yaml:11:7: cameras.road.analytics.calibration: image points 0, 1 and 2 lie on one line: a calibration needs four points with no three in a line (e.g. the corners of a rectangle on the ground)"
    ]
    folded = problems(
        tmp_path,
        """\
      calibration:
        image: [[100, 350], [540, 350], [460, 60], [180, 60]]
        ground: [[0, 0], [20, 40], [20, 0], [0, 40]]
""",
    )
    assert folded == [
        "edged.yaml:11:7: cameras.road.analytics.calibration: the ground points cross over: list them in order around the area"
    ]
    dented = problems(  # a convex patch of road cannot map onto a dart by any perspective
        tmp_path,
        """\
      calibration:
        image: [[100, 350], [540, 350], [460, 60], [180, 60]]
        ground: [[0, 0], [20, 0], [5, 5], [0, 20]]
""",
    )
    assert len(dented) == 1 and dented[0].endswith("the calibration does not invert")
    # A mirrored ground frame (y the other way round) is a valid calibration.
    path = tmp_path / "edged.yaml"
    path.write_text(
        HEAD
        + "      calibration: {image: [[100, 350], [540, 350], [460, 60], [180, 60]], "
        + "ground: [[0, 0], [0, 20], [40, 20], [40, 0]]}\n"
    )
    assert load_config(path, check_files=False).cameras["road"].analytics.calibration is not None


def test_lines_beyond_the_calibrations_horizon(tmp_path: Path) -> None:
    # A road narrowing fast: 40 m away it is 40 px wide (y = 80), and its horizon is at y = 53.
    got = problems(
        tmp_path,
        """\
      calibration:
        image: [[100, 350], [540, 350], [340, 80], [300, 80]]
        ground: [[0, 0], [20, 0], [20, 40], [0, 40]]
      lines:
        sky: {points: [[300, 20], [310, 300]], in_direction: right}
""",
    )
    assert got == [
        "edged.yaml:15:24: cameras.road.analytics.lines.sky.points[0]: point [300, 20] lies beyond the "
        "calibration's horizon (it maps to no ground point): move it, or check calibration.image"
    ]


def test_lines_need_a_chain_and_every_problem_comes_in_one_run(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """\
      lines:
        gate: {points: [[300, 10], [320, 350]], in_direction: right, classes: [car]}
  empty:
    source: road.mp4
    fps: -1
    analytics:
      lines: {gate: {points: [[0, 0], [10, 10]], in_direction: right}}
""",
    )
    # A schema error elsewhere (fps) does not hide the analytics problems of the camera that is right.
    assert got == [
        "edged.yaml:12:80: cameras.road.analytics.lines.gate.classes[0]: unknown class 'car': model det gives text",
        "edged.yaml:15:10: cameras.empty.fps: Input should be greater than 0",
    ]
    path = tmp_path / "edged.yaml"
    path.write_text(
        HEAD.replace("chain: [{model: det}]", "chain: []")
        + "      lines: {g: {points: [[0, 0], [10, 10]], in_direction: right}}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(path, check_files=False)
    assert [str(p).replace(str(path), "edged.yaml") for p in e.value.problems] == [
        "edged.yaml:10:5: cameras.road.analytics: lines and zones need a chain (a detector) to have tracks to count"
    ]


def test_check_config_prints_them_and_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "edged.yaml"
    path.write_text(HEAD + "      zones: {bay: {points: [[0, 0], [10, 10], [20, 20]]}}\n")
    r = subprocess.run(
        [sys.executable, "-m", "edged", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 78, r.stderr
    assert f"{path}:11:21: cameras.road.analytics.zones.bay.points: the points enclose no area" in r.stderr
    assert "Traceback" not in r.stderr
