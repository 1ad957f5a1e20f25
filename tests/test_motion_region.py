"""Motion region mode on the real gate video (40 s at 5 fps, 2 passes) with the real PP-OCR models on
CPU ONNX Runtime, through the real camera loop (CameraRunner: file capture -> motion gate -> model
servers): the detector runs on a region around the motion, on smaller declared canvases, yet finds
the same text boxes in frame coordinates and reads the same plates as the whole-frame gated run, from
the first frames of each pass; with tracking every pass is one track that reads its plate."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edged.config.cameras import CameraConfig
from edged.config.inference import ModelConfig
from edged.demo.sample_gate import make_gate_sample
from edged.demo.truth import result_texts
from edged.observability.metrics import Metrics
from edged.pipeline.dispatch import FrameDispatcher
from edged.pipeline.motion import Box, MotionResult
from edged.pipeline.runner import CameraRunner
from edged.pipeline.tracker import iou_matrix
from edged.serving.loading import LoadedModel, load_model
from edged.types import Detection, Frame, FrameResult
from tests.support.chain import DELIVERY, SpyEngine
from tests.support.paths import need_models

SECONDS, FPS, GAPS = 40.0, 5.0, (6.0, 9.0)
FRAMES = int(SECONDS * FPS)
BELOW_CLOCK = [[0, 30], [640, 30], [640, 480], [0, 480]]  # the burned-in clock is text, not a plate


@pytest.fixture(scope="module")
def gate_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("gate") / "gate.mp4"
    make_gate_sample(path, seconds=SECONDS, fps=FPS, gap_s=GAPS)
    return path, json.loads(path.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, LoadedModel]]:
    d = need_models()
    det = ModelConfig.model_validate(
        {
            "path": d / "PP-OCRv6_det_small.onnx",
            "kind": "ppocr_det",
            "preprocess": {"limit_side": 480, "limit_type": "max"},
            "batching": {"max_batch": 1},
            "onnxruntime": {"intra_op_threads": 1, "inter_op_threads": 1},
        }
    )
    rec = ModelConfig.model_validate(
        {"path": d / "PP-OCRv6_rec_small.onnx", "kind": "ppocr_rec", "batching": {"widths": [320, 640]}}
    )
    loaded = {
        "text_det": load_model("text_det", det, source_sizes=[(640, 480)], regions=True),
        "text_rec": load_model("text_rec", rec),
    }
    loaded["text_det"].slot.wrap(SpyEngine)
    yield loaded
    for lm in loaded.values():
        lm.close()


class Run:
    """One pass of the camera loop over the video: results by frame and the gate's decision per frame."""

    def __init__(self, results: list[FrameResult], decisions: dict[int, MotionResult], shapes: list[Any]):
        self.by_seq = {r.frame.seq: r for r in results}
        self.decisions = decisions
        self.det_shapes = shapes  # the detector's input tensor shapes, one per engine call

    def ran(self) -> list[int]:
        return sorted(s for s, d in self.decisions.items() if d.run_detector)

    def first_read(self, text: str) -> int | None:
        return next((s for s in sorted(self.by_seq) if text in result_texts(self.by_seq[s])), None)

    def tracks_reading(self, text: str) -> set[Any]:
        return {
            d.attrs.get("track_id")
            for r in self.by_seq.values()
            for d in r.detections
            if text in [k.label for kids in d.children.values() for k in kids]
        }


def run_camera(
    video: Path, meta: dict[str, Any], models: Mapping[str, LoadedModel], *, region: bool, tracked: bool
) -> Run:
    cam = CameraConfig.model_validate(
        {
            "source": f"file://{video}",
            "fps": FPS,
            "realtime": False,
            "tracking": {"enabled": tracked},
            "motion": {"enabled": True, "masks": list(meta["masks"].values()), "region": region},
            "chain": [
                {"model": "text_det", "min_score": 0.5, "roi": BELOW_CLOCK},
                {"model": "text_rec", "on": "text_det"},
            ],
        }
    )
    spy = models["text_det"].server.engine
    assert isinstance(spy, SpyEngine)
    spy.reset()
    results: list[FrameResult] = []
    done = threading.Event()

    def sink(r: FrameResult) -> None:
        results.append(r)
        if len(results) == FRAMES:
            done.set()

    dispatcher = FrameDispatcher()
    runner = CameraRunner("gate", cam, models, sink, Metrics(), dispatcher, DELIVERY)
    decisions: dict[int, MotionResult] = {}
    gate = runner.motion
    assert gate is not None
    check = gate.check

    def recording(frame: Frame, tracking: bool = False) -> MotionResult:  # the real gate, recorded
        decisions[frame.seq] = check(frame, tracking)
        return decisions[frame.seq]

    gate.check = recording  # type: ignore[method-assign]
    runner.start()
    try:
        assert done.wait(600), f"{len(results)} of {FRAMES} frames came back"
    finally:
        runner.stop()
        dispatcher.stop()
    return Run(results, decisions, list(spy.shapes))


@pytest.fixture(scope="module")
def whole(gate_video: tuple[Path, dict[str, Any]], models: dict[str, LoadedModel]) -> Run:
    return run_camera(*gate_video, models, region=False, tracked=False)


@pytest.fixture(scope="module")
def regional(gate_video: tuple[Path, dict[str, Any]], models: dict[str, LoadedModel]) -> Run:
    return run_camera(*gate_video, models, region=True, tracked=False)


def inside(box: tuple[float, float, float, float], region: Box, margin: float = 0.0) -> bool:
    return (
        box[0] >= region[0] + margin
        and box[1] >= region[1] + margin
        and box[2] <= region[2] - margin
        and box[3] <= region[3] - margin
    )


def test_region_runs_find_the_same_text_boxes_in_frame_coordinates(whole: Run, regional: Run) -> None:
    assert regional.ran() == whole.ran()  # the same gate decisions: the comparison is frame by frame
    regions = {s: d.region for s, d in regional.decisions.items() if d.region is not None}
    assert len(regions) > 30 and all(whole.decisions[s].region is None for s in regions)
    matched, ious = 0, []
    for seq, region in regions.items():
        ref: list[Detection] = whole.by_seq[seq].detections
        got: list[Detection] = regional.by_seq[seq].detections
        # Frame coordinates: inside the frame (the detector saw the region and the frame around it
        # that fills its canvas, so a box may lie beyond the motion region itself).
        assert all(inside(d.box, (0, 0, 640, 480), margin=-1) for d in got), (seq, [d.box for d in got])
        # Whole-frame boxes well inside the region (and not cut by the frame's edge) are found there
        # too, at the same place. Not to the pixel: the detector pools over its whole input (PP-OCR's
        # SE blocks), so a box may come out a few pixels larger on a smaller canvas.
        expect = [d for d in ref if inside(d.box, region, margin=8) and inside(d.box, (2, 2, 638, 478))]
        if not expect:
            continue
        iou = iou_matrix(expect, got)
        assert iou.shape[1] > 0 and (iou.max(axis=1) >= 0.6).all(), (
            seq,
            [d.box for d in expect],
            [d.box for d in got],
        )
        matched += len(expect)
        ious.extend(iou.max(axis=1).tolist())
    assert matched >= 20 and sum(ious) / len(ious) > 0.85, (matched, ious)


def test_region_mode_reads_every_plate_like_the_whole_frame_from_the_start_of_its_pass(
    gate_video: tuple[Path, dict[str, Any]], whole: Run, regional: Run
) -> None:
    _, meta = gate_video
    for p in meta["passes"]:
        text = p["text"]
        first_whole, first_region = whole.first_read(text), regional.first_read(text)
        assert first_whole is not None and first_region == first_whole, (text, first_whole, first_region)
        assert first_region <= p["first"] + 2, (text, first_region, p)  # read as soon as it is in view
        # Frame by frame over the pass: the region run reads the plate wherever the whole frame does.
        window = range(p["first"], p["last"] + 1)
        read_whole = [s for s in window if text in result_texts(whole.by_seq[s])]
        read_region = [s for s in window if text in result_texts(regional.by_seq[s])]
        assert len(read_whole) >= 5 and set(read_whole) - set(read_region) == set(), (
            text,
            read_whole,
            read_region,
        )


def test_region_runs_use_smaller_declared_canvases(
    models: dict[str, LoadedModel], whole: Run, regional: Run
) -> None:
    shapes = models["text_det"].shapes
    frame_canvas = (1, 3, 352, 480)  # 640x480 at long side 480
    assert set(whole.det_shapes) == {frame_canvas}
    declared = {models["text_det"].spec.batch_shape(n, w, h) for w, h in shapes.sizes for n in shapes.rows}
    assert set(regional.det_shapes) <= declared  # never a shape the server did not declare and warm
    pixels = [s[2] * s[3] for s in regional.det_shapes]
    assert len(pixels) == len(whole.det_shapes)
    smaller = [p for p in pixels if p < frame_canvas[2] * frame_canvas[3]]
    assert len(smaller) > 0.5 * len(pixels)
    assert sum(pixels) < 0.8 * len(pixels) * frame_canvas[2] * frame_canvas[3], sorted(
        set(regional.det_shapes)
    )


def test_region_mode_with_tracking_reads_each_pass_on_one_track(
    gate_video: tuple[Path, dict[str, Any]], models: dict[str, LoadedModel]
) -> None:
    video, meta = gate_video
    run = run_camera(video, meta, models, region=True, tracked=True)
    for p in meta["passes"]:
        assert len(run.tracks_reading(p["text"])) == 1, (p["text"], run.tracks_reading(p["text"]))
