"""The preprocessing geometry contract (plans) that CPU and GPU implementations share."""

from __future__ import annotations

import dataclasses

import numpy as np

from edged.decoders.registry import get_decoder
from edged.preprocess.spec import PreprocessSpec, limit_side_size, plan_crops, plan_frame


def quad(x: float, y: float, w: float, h: float) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def test_letterbox_maps_corners_back() -> None:
    plan = plan_frame(PreprocessSpec(resize="letterbox", size=(640, 640)), 1920, 1080)
    x, y, w, h = plan.content
    assert (plan.out_w, plan.out_h, w) == (640, 640, 640) and y == (640 - h) // 2
    assert np.allclose(plan.to_source(np.array([[x, y], [x + w, y + h]])), [[0, 0], [1920, 1080]], atol=0.5)


def test_ppocr_det_sizing_matches_rapidocr() -> None:
    spec = get_decoder("ppocr_det").default_preprocess
    assert limit_side_size(spec, 640, 480) == (992, 736)
    assert limit_side_size(spec, 1920, 1080) == (1920, 1088)


def test_fixed_height_batch_width_and_width_multiple() -> None:
    rec = get_decoder("ppocr_rec").default_preprocess
    quads = [quad(0, 0, 200, 40), quad(0, 50, 420, 40)]
    plans = plan_crops(rec, quads)
    assert {(p.out_w, p.out_h) for p in plans} == {(504, 48)}  # 48 * 420/40
    assert [p.content[2] for p in plans] == [240, 504]
    rounded = plan_crops(dataclasses.replace(rec, width_multiple=160), quads)
    assert {p.out_w for p in rounded} == {640} and [p.content[2] for p in rounded] == [240, 504]
    assert plan_crops(dataclasses.replace(rec, width_multiple=160), [quad(0, 0, 100, 40)])[0].out_w == 320
