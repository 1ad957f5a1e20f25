"""Decoders on constructed tensors: geometry, NMS, CTC, top-k and shape errors."""

from __future__ import annotations

import math
import re
from typing import Any

import cv2
import numpy as np
import pytest

from edged.decoders.nms import nms
from edged.decoders.ppocr import load_charset
from edged.decoders.registry import build_decoder, get_decoder
from edged.preprocess.spec import Plan, PreprocessSpec, plan_crops, plan_frame

# --- ppocr_det -----------------------------------------------------------------------------------

# Model input 480x320 letterboxing a 600x300 source: scale 0.8, content 480x240 at y=40.
DET_SPEC = PreprocessSpec(resize="letterbox", size=(480, 320))
SRC_W, SRC_H = 600, 300
SCALE, OFF_Y = 0.8, 40


def _to_src(pts: np.ndarray) -> np.ndarray:
    return np.stack([pts[:, 0] / SCALE, (pts[:, 1] - OFF_Y) / SCALE], axis=1)


def _grown_rect(rect: tuple[Any, ...], ratio: float = 1.6, raster: float = 1.0) -> np.ndarray:
    """The expected DB output for a filled rectangle: each side pushed out by area*ratio/perimeter.

    `raster`: the filled pixel region is one pixel wider than the rectangle (fillPoly covers both
    edge pixels) and the 2x2 dilation adds another, while contours run through pixel centres: +1 net.
    """
    (cx, cy), (w, h), a = rect
    w, h = w + raster, h + raster
    d = w * h * ratio / (2 * (w + h))
    return np.asarray(cv2.boxPoints(((cx, cy), (w + 2 * d, h + 2 * d), a)))


def _prob_map(rects: list[tuple[Any, ...]], value: float = 0.9) -> np.ndarray:
    prob = np.full((320, 480), 0.02, dtype=np.float32)
    for r in rects:
        cv2.fillPoly(prob, [np.round(cv2.boxPoints(r)).astype(np.int32)], value)
    return prob


AXIS_RECT = ((150.0, 100.0), (120.0, 30.0), 0.0)
ROT_RECT = ((330.0, 210.0), (110.0, 26.0), 20.0)


def _match_corners(polygon: list[tuple[float, float]], expected: np.ndarray, tol: float) -> None:
    got = np.asarray(polygon)
    for e in expected:
        assert np.min(np.linalg.norm(got - e, axis=1)) < tol, (got, expected)


def _clockwise_from_top_left(polygon: list[tuple[float, float]]) -> None:
    q = np.asarray(polygon)
    # Shoelace in image coordinates (y down): positive = clockwise on screen.
    area = 0.5 * np.sum(q[:, 0] * np.roll(q[:, 1], -1) - np.roll(q[:, 0], -1) * q[:, 1])
    assert area > 0
    left_two = q[np.argsort(q[:, 0])[:2]]
    assert tuple(q[0]) == tuple(left_two[np.argmin(left_two[:, 1])])


def test_db_decodes_axis_and_rotated_rectangles_into_source_coordinates() -> None:
    plan = plan_frame(DET_SPEC, SRC_W, SRC_H)
    assert plan.content == (0, 40, 480, 240)
    # Listed bottom-first so the reading-order sort has something to do.
    prob = _prob_map([ROT_RECT, AXIS_RECT])
    dec = build_decoder("ppocr_det", {})
    dets = dec.decode({"sigmoid": prob[None, None]}, [plan])[0]
    assert len(dets) == 2
    top, bottom = dets
    for det, rect in ((top, AXIS_RECT), (bottom, ROT_RECT)):
        assert det.label == "text"
        # The dilated ring of background (0.02) around the region lowers the mean a little.
        assert 0.8 < det.score <= 0.9
        assert det.polygon is not None
        # Within ~1.5 map pixels (staircase edges of the rotated raster), 1 map pixel = 1.25 source.
        _match_corners(det.polygon, _to_src(_grown_rect(rect)), tol=2.0)
        _clockwise_from_top_left(det.polygon)
        q = np.asarray(det.polygon)
        assert det.box == pytest.approx((q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()))
    # The rotated one really is rotated by ~20 degrees in the output.
    q = np.asarray(bottom.polygon)
    assert math.degrees(math.atan2(q[1, 1] - q[0, 1], q[1, 0] - q[0, 0])) == pytest.approx(20, abs=1.5)


def test_db_filters_low_scores_small_boxes_and_supports_axis_output() -> None:
    plan = plan_frame(DET_SPEC, SRC_W, SRC_H)
    faint = ((300.0, 80.0), (100.0, 30.0), 0.0)
    prob = _prob_map([AXIS_RECT])
    prob[250, 50] = 0.99  # a speck: under min_size even after dilation
    # Above thresh, below box_thresh:
    cv2.fillPoly(prob, [np.round(cv2.boxPoints(faint)).astype(np.int32)], 0.4)
    batch = np.stack([prob, np.zeros_like(prob)])[:, None]
    dec = build_decoder("ppocr_det", {"box_type": "axis"})
    first, empty = dec.decode({"x": batch}, [plan, plan])
    assert len(first) == 1 and first[0].polygon is None
    assert empty == []
    lowered = build_decoder("ppocr_det", {"box_thresh": 0.3}).decode({"x": prob[None, None]}, [plan])[0]
    assert len(lowered) == 2


def test_db_map_to_frame_through_a_crop_plan() -> None:
    # A detector run on a crop: plan maps crop pixels into the frame, so boxes come out in frame pixels.
    spec = PreprocessSpec(resize="stretch", size=(480, 320))
    quad = np.array([[100, 50], [340, 50], [340, 210], [100, 210]], dtype=np.float32)  # 240x160 at (100, 50)
    plan = plan_crops(spec, [quad])[0]
    det = build_decoder("ppocr_det", {}).decode({"x": _prob_map([AXIS_RECT])[None, None]}, [plan])[0][0]
    expected = _grown_rect(AXIS_RECT) * 0.5 + np.array([100, 50])
    assert det.polygon is not None
    _match_corners(det.polygon, expected, tol=1.5)


# --- ppocr_rec / ppocr_cls -----------------------------------------------------------------------

CHARS = "a\nb\nc"  # classes: 0 blank, 1 a, 2 b, 3 c, 4 space


def _one_hot(seq: list[int], probs: list[float], num_classes: int = 5) -> np.ndarray:
    out = np.full((len(seq), num_classes), 0.0, dtype=np.float32)
    for t, (c, p) in enumerate(zip(seq, probs, strict=True)):
        out[t] = (1 - p) / (num_classes - 1)
        out[t, c] = p
    return out


def _crop_plans(spec: PreprocessSpec, n: int) -> list[Plan]:
    quad = np.array([[0, 0], [100, 0], [100, 20], [0, 20]], dtype=np.float32)
    return plan_crops(spec, [quad] * n)


def test_ctc_collapses_repeats_drops_blanks_and_reads_space() -> None:
    dec = build_decoder("ppocr_rec", {}, metadata={"character": CHARS})
    #         a  a  _  a  b  b  ' ' c  _
    seq = [1, 1, 0, 1, 2, 2, 4, 3, 0]
    probs = [0.9, 0.8, 0.99, 0.7, 0.6, 0.95, 0.9, 0.8, 0.99]
    low = _one_hot([3, 0, 3], [0.3, 0.9, 0.3])
    batch = np.stack([_one_hot(seq, probs), _one_hot([0] * 9, [0.9] * 9), np.pad(low, ((0, 6), (0, 0)))])
    batch[2, 3:] = _one_hot([0] * 6, [0.9] * 6)
    plans = _crop_plans(dec.default_preprocess, 3)
    read, blank, rejected = (r[0] for r in dec.decode({"out": batch}, plans))
    assert read.label == "aab c"
    # Kept steps: first a (0.9), a after blank (0.7), first b (0.6), space (0.9), c (0.8).
    assert read.score == pytest.approx(np.mean([0.9, 0.7, 0.6, 0.9, 0.8]), abs=1e-5)
    assert (blank.label, blank.score, blank.attrs.get("rejected")) == ("", 0.0, True)
    assert rejected.label == "" and rejected.attrs == {"rejected": True, "text": "cc"}


def test_charset_from_labels_wins_and_mismatch_is_reported() -> None:
    assert load_charset({"character": CHARS}, ["x", "y"]) == ["x", "y"]
    assert load_charset({"character": CHARS}) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no character dictionary"):
        load_charset({})
    dec = build_decoder("ppocr_rec", {}, labels=["x", "y"], metadata={"character": CHARS})
    plans = _crop_plans(dec.default_preprocess, 1)
    assert dec.decode({"o": _one_hot([1, 2, 3], [0.9] * 3, 4)[None]}, plans)[0][0].label == "xy "
    with pytest.raises(ValueError, match="7 classes but the dictionary has 2"):
        dec.decode({"o": np.zeros((1, 3, 7), np.float32)}, plans)


def test_cls_rotates_only_confident_180() -> None:
    dec = build_decoder("ppocr_cls", {})
    scores = np.array([[0.99, 0.01], [0.05, 0.95], [0.2, 0.8]], dtype=np.float32)
    res = [r[0] for r in dec.decode({"o": scores}, _crop_plans(dec.default_preprocess, 3))]
    assert [(r.label, r.attrs["angle"]) for r in res] == [("0", 0), ("180", 180), ("180", 0)]
    assert res[1].score == pytest.approx(0.95)
    assert dec.default_preprocess.size == (192, 48)


# --- yolo ----------------------------------------------------------------------------------------

# 1280x720 letterboxed into 640x640: scale 0.5, content 640x360 at y=140.
YOLO_PLAN = plan_frame(PreprocessSpec(resize="letterbox", size=(640, 640)), 1280, 720)
# cx, cy, w, h, score, class
YOLO_BOXES = [
    (100, 200, 50, 40, 0.9, 0),  # A
    (105, 203, 50, 40, 0.8, 0),  # overlaps A, same class: suppressed
    (100, 200, 50, 40, 0.7, 1),  # same place as A, other class: kept
    (400, 300, 80, 60, 0.6, 1),  # separate
    (500, 400, 30, 30, 0.1, 0),  # below threshold
]


def _yolo_v5() -> np.ndarray:
    # Padded with empty rows: real exports have thousands of boxes and far fewer channels.
    rows = np.zeros((64, 7), dtype=np.float32)
    for i, (cx, cy, w, h, s, c) in enumerate(YOLO_BOXES):
        rows[i, :4] = cx, cy, w, h
        rows[i, 4] = 1.0  # objectness; the class score carries the confidence
        rows[i, 5 + c] = s
    return rows[None]


def _yolo_v8() -> np.ndarray:
    v5 = _yolo_v5()[0]
    return np.concatenate([v5[:, :4], v5[:, 5:]], axis=1).T[None]  # [1, 4+nc, boxes]


def _check_yolo(dets: list[Any]) -> None:
    got = sorted((d.label, round(d.score, 3), tuple(round(v, 2) for v in d.box)) for d in dets)
    assert got == [
        ("car", 0.6, (720.0, 260.0, 880.0, 380.0)),
        ("car", 0.7, (150.0, 80.0, 250.0, 160.0)),
        ("person", 0.9, (150.0, 80.0, 250.0, 160.0)),
    ]


@pytest.mark.parametrize("layout", ["v5", "v8", "v8t"])
def test_yolo_layouts_class_aware_nms_and_letterbox_mapping(layout: str) -> None:
    raw = {"v5": _yolo_v5(), "v8": _yolo_v8(), "v8t": _yolo_v8().transpose(0, 2, 1)}[layout]
    dec = build_decoder("yolo", {}, labels=["person", "car"])
    _check_yolo(dec.decode({"output0": raw}, [YOLO_PLAN])[0])


def test_yolo_v5_objectness_multiplies_and_agnostic_nms() -> None:
    raw = _yolo_v5()
    raw[0, :, 4] = 0.5  # halves every score: 0.45, 0.4, 0.35, 0.3, 0.05
    dec = build_decoder("yolo", {"class_agnostic": True, "layout": "v5"}, labels=["person", "car"])
    dets = dec.decode({"o": raw}, [YOLO_PLAN])[0]
    assert [(d.label, round(d.score, 3)) for d in dets] == [("person", 0.45), ("car", 0.3)]


def test_nms_keeps_highest_and_respects_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.8, 0.1], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(boxes, scores, 0.5, np.array([0, 0, 1, 0])).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.5, max_det=1).tolist() == [1]


# --- ssd -----------------------------------------------------------------------------------------

SSD_PLAN = plan_frame(PreprocessSpec(resize="stretch", size=(300, 300)), 600, 450)


def test_ssd_post_processed_outputs_with_num_and_offset() -> None:
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4]]], dtype=np.float32)
    outputs = {
        "detection_boxes:0": boxes,
        "detection_scores:0": np.array([[0.9, 0.3, 0.95]], dtype=np.float32),
        "detection_classes:0": np.array([[1.0, 2.0, 1.0]], dtype=np.float32),
        "num_detections:0": np.array([2.0], dtype=np.float32),
    }
    dec = build_decoder("ssd", {"num_output": "num_detections", "label_offset": 1}, labels=["person", "dog"])
    dets = dec.decode(outputs, [SSD_PLAN])[0]
    # Third row is past num_detections; second is below the threshold. yxyx normalized -> source pixels.
    assert len(dets) == 1
    assert dets[0].label == "person" and dets[0].class_id == 0
    assert dets[0].box == pytest.approx((0.2 * 600, 0.1 * 450, 0.6 * 600, 0.5 * 450), abs=1e-3)


def test_ssd_per_class_scores_skip_background_and_nms() -> None:
    boxes = np.array([[[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 150, 150]]], dtype=np.float32)
    scores = np.array([[[0.05, 0.9, 0.05], [0.1, 0.8, 0.1], [0.99, 0.0, 0.6]]], dtype=np.float32)
    params = {
        "boxes_output": "boxes",
        "scores_output": "scores",
        "box_format": "xyxy",
        "normalized": False,
        "background_class": 0,
    }
    dec = build_decoder("ssd", params, labels=["bg", "cat", "dog"])
    dets = dec.decode({"boxes": boxes, "scores": scores}, [SSD_PLAN])[0]
    assert [(d.label, round(d.score, 2)) for d in dets] == [("cat", 0.9), ("dog", 0.6)]
    assert dets[1].box == pytest.approx((200, 150, 300, 225))


def test_ssd_missing_output_is_named() -> None:
    dec = build_decoder("ssd", {})
    with pytest.raises(ValueError, match=r"no output named 'detection_boxes'.*boxes"):
        dec.decode({"boxes": np.zeros((1, 2, 4))}, [SSD_PLAN])


# --- classifier ----------------------------------------------------------------------------------


def test_classifier_softmax_top_k() -> None:
    logits = np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 5.0]], dtype=np.float32)
    dec = build_decoder("classifier", {"top_k": 3}, labels=["a", "b", "c", "d"])
    spec = get_decoder("classifier").default_preprocess
    first, second = (r[0] for r in dec.decode({"logits": logits[:, :, None, None]}, _crop_plans(spec, 2)))
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert (first.label, first.class_id) == ("b", 1)
    assert first.score == pytest.approx(p[1], rel=1e-5)
    assert [lbl for lbl, _ in first.attrs["topk"]] == ["b", "c", "a"]
    assert second.label == "d"
    raw = build_decoder("classifier", {"softmax": False}).decode({"p": logits}, _crop_plans(spec, 2))
    assert raw[0][0].score == 3.0 and raw[0][0].label == "1" and raw[0][0].attrs == {}


# --- shape errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        ("yolo", (1, 10)),
        ("yolo", (1, 100, 3)),
        ("ppocr_det", (1, 2, 32, 32)),
        ("ppocr_rec", (1, 5)),
        ("ppocr_cls", (1, 3)),
        ("classifier", (1, 2, 3)),
        ("ssd", (1, 3, 5)),
    ],
)
def test_bad_shapes_name_kind_and_shape(kind: str, shape: tuple[int, ...]) -> None:
    dec = build_decoder(kind, {}, metadata={"character": CHARS})
    plan = plan_frame(dec.default_preprocess, 64, 48)
    arr = np.zeros(shape, dtype=np.float32)
    outputs = {"detection_boxes": arr, "detection_scores": np.zeros((1, 3))} if kind == "ssd" else {"o": arr}
    with pytest.raises(ValueError, match=f"{kind} decoder: .*{re.escape(repr(shape))}"):
        dec.decode(outputs, [plan])


def test_batch_mismatch_and_unknown_param_are_errors() -> None:
    dec = build_decoder("ppocr_cls", {})
    with pytest.raises(ValueError, match="batch size 2"):
        dec.decode({"o": np.zeros((2, 2), np.float32)}, _crop_plans(dec.default_preprocess, 1))
    with pytest.raises(ValueError, match="conf_treshold"):
        build_decoder("yolo", {"conf_treshold": 0.5})


@pytest.mark.parametrize("thresh", [0.3, 76 / 255, 77 / 255, 0.0, 1.0])
def test_byte_map_threshold_is_numpys_compare(thresh: float) -> None:
    """OpenCV thresholds bytes at floor(thresh): the same pixels as `prob > thresh`, at and between
    integer levels; with and without the 2x2 dilation."""
    from edged.decoders.dbnet import db_bitmap

    prob = np.random.default_rng(3).integers(0, 256, (97, 131), dtype=np.uint8)
    for dilate in (False, True):
        want = (prob > thresh * 255).astype(np.uint8)
        if dilate:
            want = cv2.dilate(want, np.ones((2, 2), np.uint8))
        assert np.array_equal(db_bitmap(prob, thresh * 255, dilate), want)


def test_specks_are_not_boxes_and_a_real_region_still_is() -> None:
    """Single-pixel and line contours are skipped before their rectangles are measured; a text-sized
    region among them is found as before."""
    from edged.decoders.dbnet import db_bitmap, db_boxes

    prob = np.zeros((200, 300), np.uint8)
    prob[::7, ::9] = 255  # specks: one-pixel contours
    prob[50, 100:160] = 255  # a one-pixel line
    prob[120:140, 40:200] = 230  # a text line
    bitmap = db_bitmap(prob, 0.3 * 255, use_dilation=False)
    quads, scores = db_boxes(
        prob, bitmap, box_thresh=0.5, unclip_ratio=1.6, max_candidates=1000, min_size=3, score_mode="fast",
        unit=255.0,
    )  # fmt: skip
    assert len(quads) == 1 and scores[0] > 0.8
    x0, y0 = quads[0].min(axis=0)
    x1, y1 = quads[0].max(axis=0)
    assert x0 < 40 < 200 < x1 and y0 < 120 < 140 < y1
