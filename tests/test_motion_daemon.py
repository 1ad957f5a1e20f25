"""`edged run` with motion gating on the real gate video (32 s at 5 fps): real PP-OCR models, real
mosquitto, real HTTP. The gated camera (region mode) skips most frames yet every pass's plate gets one
track with its text; an ungated camera on the same file runs the detector on every frame it takes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.demo.sample_gate import make_gate_sample
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import EdgedProcess, metric, stats, up, wait_until
from tests.support.paths import need_models

SECONDS, FPS, GAPS = 40.0, 5.0, (6.0, 9.0)
FRAMES = int(SECONDS * FPS)
OFF_FPS = 1.0  # the ungated camera takes every 5th frame: enough to show it runs on each, cheap on CI


@pytest.fixture(scope="module")
def gate_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("gate") / "gate.mp4"
    make_gate_sample(path, seconds=SECONDS, fps=FPS, gap_s=GAPS)
    return path, json.loads(path.with_suffix(".json").read_text())


@pytest.fixture
def procs() -> Iterator[list[EdgedProcess]]:
    out: list[EdgedProcess] = []
    yield out
    for p in out:
        p.kill()


def gate_config(tmp: Path, video: Path, meta: dict[str, Any], broker: int, health: int) -> Path:
    models = need_models()
    below_clock = [[0, 30], [640, 30], [640, 480], [0, 480]]  # the burned-in clock is not a plate
    chain = [
        {"model": "text_det", "min_score": 0.5, "roi": below_clock},
        {"model": "text_rec", "on": "text_det", "run": "every_k", "every_k": 3},
    ]
    common = {"source": f"file://{video}", "realtime": False, "loop": False, "chain": chain}
    cfg = {
        "device": {"name": "test"},
        "state_dir": str(tmp / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker, "outbox": {"dir": str(tmp / "outbox")}},
        "health": {"port": health},
        "models": {
            "text_det": {
                "path": str(models / "PP-OCRv6_det_small.onnx"),
                "kind": "ppocr_det",
                "preprocess": {"limit_side": 480, "limit_type": "max"},
                "onnxruntime": {"intra_op_threads": 1, "inter_op_threads": 1},
            },
            "text_rec": {"path": str(models / "PP-OCRv6_rec_small.onnx"), "kind": "ppocr_rec"},
        },
        "cameras": {
            "gate": {
                **common,
                "fps": FPS,
                "tracking": {"enabled": True, "events": "tracks"},
                # Region mode: the detector runs around the motion (tests/test_motion_region.py
                # compares it with whole-frame runs); here the daemon's path to it.
                "motion": {"enabled": True, "masks": list(meta["masks"].values()), "region": True},
            },
            "ungated": {**common, "fps": OFF_FPS},
        },
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_gated_camera_reads_every_pass_once_with_a_fraction_of_the_detector_runs(
    tmp_path: Path,
    mosquitto: Mosquitto,
    gate_video: tuple[Path, dict[str, Any]],
    procs: list[EdgedProcess],
) -> None:
    video, meta = gate_video
    health = free_port()
    config = gate_config(tmp_path, video, meta, mosquitto.port, health)
    with Subscriber(mosquitto, "edged/test/gate/tracks") as sub:
        proc = EdgedProcess(config)
        procs.append(proc)
        assert wait_until(lambda: up(health), 60), proc.text()

        def done() -> bool:
            cams = stats(health).get("cameras", {})
            gate, off = cams.get("gate", {}), cams.get("ungated", {})
            motion = gate.get("motion") or {}
            return (
                gate.get("state") == "ended"
                and sum(motion.get("frames", {}).values()) == FRAMES
                and gate.get("frames_processed")
                == FRAMES - motion["frames"]["idle"] - motion["frames"]["lighting"]
                and off.get("state") == "ended"
                and off.get("frames_processed") == FRAMES // FPS * OFF_FPS
            )

        assert wait_until(done, 300), (stats(health), proc.text()[-3000:])
        cams = stats(health)["cameras"]
        # The detector declared (and warmed) the region canvases: down to a quarter of 480x352 per side.
        assert "128x96" in stats(health)["models"]["text_det"]["shapes"], stats(health)["models"]
        motion = cams["gate"]["motion"]
        assert motion["state"] == "idle", motion  # the video ends on the empty scene
        assert cams["ungated"]["motion"] is None
        runs = FRAMES - motion["frames"]["idle"] - motion["frames"]["lighting"]
        det_gate = metric(health, "edged_stage_latency_seconds_count", 'camera="gate",stage="text_det"')
        det_off = metric(health, "edged_stage_latency_seconds_count", 'camera="ungated",stage="text_det"')
        # Cars are in view about half of this short scene (the 10-minute one: under 10 %, docs/benchmarks.md).
        assert det_gate == runs and runs < 0.6 * FRAMES, motion
        assert det_off == FRAMES // FPS * OFF_FPS  # no gate: the detector runs on every frame taken
        idle = metric(health, "edged_motion_frames_total", 'camera="gate",decision="idle"')
        assert idle == motion["frames"]["idle"] and idle > 0.4 * FRAMES
        passes = [p["text"] for p in meta["passes"]]
        assert sub.wait_for(lambda msgs: set(passes) <= read_by_track(msgs).keys(), 30), by_track(
            sub.messages
        )
    # One track per pass that read anything, and it read the whole plate (entering and leaving, the
    # same track also reads the part of the plate in view: those are updates of it, not new tracks).
    tracks = by_track(sub.messages)
    assert len(tracks) == len(passes), tracks
    assert all(len(read_by_track(sub.messages)[text]) == 1 for text in passes), tracks
    assert proc.stop() == 0, proc.text()
    assert "Traceback" not in proc.text()


def by_track(messages: list[Any]) -> dict[int, set[str]]:
    """Every text each track's events carried, for the tracks that read anything."""
    out: dict[int, set[str]] = {}
    for m in messages:
        event = json.loads(m.payload)
        read = " ".join(texts(event["detection"]))
        if read:
            out.setdefault(event["track_id"], set()).add(read)
    return out


def read_by_track(messages: list[Any]) -> dict[str, set[int]]:
    """The tracks that read each text."""
    out: dict[str, set[int]] = {}
    for track, read in by_track(messages).items():
        for text in read:
            out.setdefault(text, set()).add(track)
    return out


def texts(detection: dict[str, Any]) -> list[str]:
    return [k["label"] for kids in detection.get("children", {}).values() for k in kids]
