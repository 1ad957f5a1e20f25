"""Chains on the real PP-OCR models: nesting, one batch per frame, filters, latencies, pipelining."""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
import pytest

from edged.chain.chain import Chain, Stage
from edged.chain.filters import StageFilter, point_in_polygon
from edged.chain.pipeline import Pipeline
from edged.infer.base import Engine
from edged.types import Detection, Frame, FrameResult
from tests._chain import SpyEngine, make_stage

LINES = [
    ("KX 4471", cv2.FONT_HERSHEY_SIMPLEX),
    ("AB12 CDE", cv2.FONT_HERSHEY_DUPLEX),
    ("7ZT 903", cv2.FONT_HERSHEY_SIMPLEX),
]


def plate_image() -> np.ndarray:
    img = np.full((480, 640, 3), 255, np.uint8)
    for i, (text, font) in enumerate(LINES):
        cv2.putText(img, text, (60 + 40 * i, 110 + 130 * i), font, 1.6, (0, 0, 0), 3, cv2.LINE_AA)
    return img


def stage(ocr_engines: dict[str, Engine], kind: str, name: str, **kw: Any) -> Stage:
    return make_stage(kind, name, kw.pop("engine", ocr_engines[kind]), **kw)


def texts(result: FrameResult, stage_name: str = "rec") -> list[str]:
    return [k.label for d in result.detections for k in d.children.get(stage_name, [])]


def test_det_rec_chain_nests_results_and_batches_all_crops(ocr_engines: dict[str, Engine]) -> None:
    rec_engine = SpyEngine(ocr_engines["ppocr_rec"])
    chain = Chain(
        [
            stage(ocr_engines, "ppocr_det", "det"),
            stage(ocr_engines, "ppocr_rec", "rec", on="det", engine=rec_engine),
        ]
    )
    result = chain.run(Frame("cam", 7, plate_image()))
    assert texts(result) == [t for t, _ in LINES]
    assert rec_engine.calls == [3]  # all crops of the frame in one engine call
    assert set(result.latency_ms) == {"det", "rec", "total"}
    assert all(v > 0 for v in result.latency_ms.values())
    first = result.detections[0].to_dict()
    assert first["children"]["rec"][0] == {
        "label": "KX 4471",
        "score": pytest.approx(first["children"]["rec"][0]["score"]),
    }
    assert "box" in first and "box" not in first["children"]["rec"][0]  # child shares the parent's region


def test_batch_size_splits_crops(ocr_engines: dict[str, Engine]) -> None:
    rec_engine = SpyEngine(ocr_engines["ppocr_rec"])
    chain = Chain(
        [
            stage(ocr_engines, "ppocr_det", "det"),
            stage(ocr_engines, "ppocr_rec", "rec", on="det", engine=rec_engine, batch_size=2),
        ]
    )
    assert texts(chain.run(Frame("cam", 1, plate_image()))) == [t for t, _ in LINES]
    assert rec_engine.calls == [2, 1]


def test_roi_and_max_crops_select_parents(ocr_engines: dict[str, Engine]) -> None:
    lower_half = ((0.0, 180.0), (640.0, 180.0), (640.0, 480.0), (0.0, 480.0))
    chain = Chain(
        [
            stage(ocr_engines, "ppocr_det", "det"),
            stage(ocr_engines, "ppocr_rec", "rec", on="det", filter=StageFilter(roi=lower_half)),
        ]
    )
    result = chain.run(Frame("cam", 1, plate_image()))
    assert len(result.detections) == 3  # the detector keeps all; only crops are filtered
    assert texts(result) == ["AB12 CDE", "7ZT 903"]
    chain = Chain(
        [
            stage(ocr_engines, "ppocr_det", "det"),
            stage(ocr_engines, "ppocr_rec", "rec", on="det", filter=StageFilter(max_count=1)),
        ]
    )
    assert len(texts(chain.run(Frame("cam", 1, plate_image())))) == 1


def test_first_stage_filter_applies_to_its_own_output(ocr_engines: dict[str, Engine]) -> None:
    chain = Chain([stage(ocr_engines, "ppocr_det", "det", filter=StageFilter(min_size=(200, 0)))])
    result = chain.run(Frame("cam", 1, plate_image()))
    assert result.detections and all(d.width >= 200 for d in result.detections)
    assert len(result.detections) < 3


def test_frame_without_text_gives_no_detections(ocr_engines: dict[str, Engine]) -> None:
    chain = Chain([stage(ocr_engines, "ppocr_det", "det"), stage(ocr_engines, "ppocr_rec", "rec", on="det")])
    result = chain.run(Frame("cam", 1, np.full((240, 320, 3), 128, np.uint8)))
    assert result.detections == []


def test_pipeline_keeps_order_and_survives_a_failing_frame(ocr_engines: dict[str, Engine]) -> None:
    det_engine = SpyEngine(ocr_engines["ppocr_det"], fail_on_call=3)
    chain = Chain(
        [
            stage(ocr_engines, "ppocr_det", "det", engine=det_engine),
            stage(ocr_engines, "ppocr_rec", "rec", on="det"),
        ]
    )
    got: list[FrameResult] = []
    failed: list[int] = []
    done = threading.Event()

    def sink(r: FrameResult) -> None:
        got.append(r)
        if len(got) == 4:
            done.set()

    pipe = Pipeline(chain, sink, on_error=lambda f, e: failed.append(f.seq), depth=2)
    pipe.start()
    img = plate_image()
    for seq in range(5):
        assert pipe.submit(Frame("cam", seq, img), timeout=30)
    assert done.wait(60)
    assert pipe.stop(30)
    assert [r.frame.seq for r in got] == [0, 1, 3, 4]
    assert failed == [2]
    assert all(texts(r) == [t for t, _ in LINES] for r in got)
    assert pipe.in_flight == 0


def test_point_in_polygon() -> None:
    square = ((0, 0), (10, 0), (10, 10), (0, 10))
    assert point_in_polygon(5, 5, square)
    assert point_in_polygon(10, 5, square)  # on an edge
    assert not point_in_polygon(11, 5, square)
    tri = ((0, 0), (10, 0), (0, 10))
    assert not point_in_polygon(8, 8, tri)


def test_filter_classes_score_and_cap() -> None:
    dets = [
        Detection("car", 0.9, (0, 0, 10, 10)),
        Detection("person", 0.3, (0, 0, 50, 80)),
        Detection("person", 0.8, (0, 0, 5, 5)),
    ]
    assert [d.score for d in StageFilter(classes=frozenset({"person"})).select(dets)] == [0.3, 0.8]
    assert [d.label for d in StageFilter(min_score=0.5).select(dets)] == ["car", "person"]
    assert [d.score for d in StageFilter(max_count=2).select(dets)] == [0.9, 0.8]
    assert [d.score for d in StageFilter(min_size=(8, 8)).select(dets)] == [0.9, 0.3]
