"""Chains on the real PP-OCR models: nesting, one batch per frame, filters, latencies, pipelining."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from edged.infer.base import Engine
from edged.pipeline.filters import StageFilter, point_in_polygon
from edged.serving.server import ModelServer
from edged.types import Detection, FrameResult
from tests.support.chain import Camera, SpyEngine, make_stage, serve, spy_of

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


def texts(result: FrameResult, stage_name: str = "rec") -> list[str]:
    return [k.label for d in result.detections for k in d.children.get(stage_name, [])]


def det_rec(servers: dict[str, ModelServer], **rec: Any) -> Camera:
    return Camera(
        "cam", [make_stage("det", servers["det"]), make_stage("rec", servers["rec"], on="det", **rec)]
    )


def test_det_rec_chain_nests_results_and_batches_all_crops(servers: dict[str, ModelServer]) -> None:
    rec, rows_before = spy_of(servers["rec"]), servers["rec"].rows
    rec.reset()
    (result,) = det_rec(servers).run([plate_image()])
    assert texts(result) == [t for t, _ in LINES]
    assert servers["rec"].rows - rows_before == 3  # each crop ran once (padding rows aside)
    assert len(rec.calls) == len(set(rec.shapes))  # crops of one width bucket share one engine call
    assert set(result.latency_ms) == {"det", "rec", "total"}
    assert all(v > 0 for v in result.latency_ms.values())
    first = result.detections[0].to_dict()
    assert first["children"]["rec"][0] == {
        "label": "KX 4471",
        "score": pytest.approx(first["children"]["rec"][0]["score"]),
    }
    assert "box" in first and "box" not in first["children"]["rec"][0]  # child shares the parent's region


def test_roi_and_max_crops_select_parents(servers: dict[str, ModelServer]) -> None:
    lower_half = ((0.0, 180.0), (640.0, 180.0), (640.0, 480.0), (0.0, 480.0))
    (result,) = det_rec(servers, filter=StageFilter(roi=lower_half)).run([plate_image()])
    assert len(result.detections) == 3  # the detector keeps all; only crops are filtered
    assert texts(result) == ["AB12 CDE", "7ZT 903"]
    (result,) = det_rec(servers, filter=StageFilter(max_count=1)).run([plate_image()])
    assert len(texts(result)) == 1


def test_first_stage_filter_applies_to_its_own_output(servers: dict[str, ModelServer]) -> None:
    (unfiltered,) = Camera("cam", [make_stage("det", servers["det"])]).run([plate_image()])
    widths = sorted(d.width for d in unfiltered.detections)
    assert len(widths) == 3 and widths[0] < widths[-1]
    # Just above the narrowest box (its exact width depends on the machine's float kernels).
    cut = (widths[0] + widths[1]) / 2 if widths[1] > widths[0] else (widths[0] + widths[-1]) / 2
    (result,) = Camera("cam", [make_stage("det", servers["det"], filter=StageFilter(min_size=(cut, 0)))]).run(
        [plate_image()]
    )
    assert result.detections and all(d.width >= cut for d in result.detections)
    assert len(result.detections) == sum(w >= cut for w in widths) < 3


def test_frame_without_text_gives_no_detections(servers: dict[str, ModelServer]) -> None:
    rec = spy_of(servers["rec"])
    rec.reset()
    (result,) = det_rec(servers).run([np.full((240, 320, 3), 128, np.uint8)])
    assert result.detections == []
    assert rec.calls == []  # no crops: the recognizer is not called at all


def test_flow_keeps_order_and_survives_a_failing_frame(
    ocr_engines: dict[str, Engine], servers: dict[str, ModelServer]
) -> None:
    det = serve("ppocr_det", SpyEngine(ocr_engines["ppocr_det"]), max_batch=1)
    spy_of(det).fail_on_call = 3
    try:
        cam = Camera("cam", [make_stage("det", det), make_stage("rec", servers["rec"], on="det")])
        got = cam.run([plate_image()] * 5)
    finally:
        det.close()
    assert [r.frame.seq for r in got] == [0, 1, 3, 4]
    assert [seq for seq, _ in cam.failed] == [2]
    assert all(texts(r) == [t for t, _ in LINES] for r in got)
    assert cam.flow.in_flight == 0


def test_results_leave_in_capture_order_when_a_later_frame_needs_no_second_stage(
    servers: dict[str, ModelServer],
) -> None:
    blank = np.full((480, 640, 3), 255, np.uint8)
    got = det_rec(servers).run([plate_image(), blank, plate_image(), blank])
    assert [r.frame.seq for r in got] == [0, 1, 2, 3]
    assert [bool(texts(r)) for r in got] == [True, False, True, False]


def test_frames_in_flight_never_share_a_buffer_slot(servers: dict[str, ModelServer]) -> None:
    """The GPU preprocessor keeps a frame's device copy in its `Frame.slot`, so two frames in flight must
    never hold the same slot, whatever the capture side dropped: here every other frame is dropped
    (seq 0, 2, 4, ...: one parity, which is where the slots once came from) and 3 frames are in flight.
    A slot is given again only after the sink of the frame that held it has returned; a camera whose
    chain keeps up uses one slot."""
    import threading
    import time

    from edged.types import Frame

    depth = 3
    cam = Camera(
        "slots", [make_stage("det", servers["det"]), make_stage("rec", servers["rec"], on="det")], depth
    )
    sink_end: dict[int, float] = {}
    accepted: dict[int, float] = {}
    room = threading.Event()
    cam.flow.on_free = room.set

    def sink(result: FrameResult) -> None:
        assert result.frame.slot is not None
        cam.results.append(result)
        sink_end[result.frame.seq] = time.perf_counter()

    cam.flow.sink = sink
    for seq in range(0, 24, 2):
        frame = Frame("slots", seq, plate_image())
        while not cam.flow.offer(frame):
            room.wait(0.05)
            room.clear()
        accepted[seq] = time.perf_counter()
    assert cam.flow.drain(120)
    slots = [(r.frame.seq, r.frame.slot) for r in cam.results]  # in the order frames were taken
    assert [seq for seq, _ in slots] == list(range(0, 24, 2))
    assert {slot for _, slot in slots} == set(range(depth))
    for k, (seq, slot) in enumerate(slots):
        previous = [s for s, sl in slots[:k] if sl == slot]
        if previous:  # the slot's last holder had left before this frame was taken
            assert sink_end[previous[-1]] < accepted[seq], f"frame {seq} took slot {slot} while in use"
    assert all(texts(r) == [t for t, _ in LINES] for r in cam.results)
    # One frame at a time (a chain that keeps up with its camera): one slot, so one frame buffer.
    alone = [cam.run([plate_image()], first_seq=100 + 2 * i)[0] for i in range(3)]
    assert [r.frame.slot for r in alone] == [0, 0, 0]
    cam.close()


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
