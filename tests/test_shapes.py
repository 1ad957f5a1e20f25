"""Declared shapes: whatever a camera sends, every tensor a model server builds is one of its model's
declared input shapes, and a row's shape depends on that row alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.decoders.registry import get_decoder
from edged.preprocess.cpu import CpuPreprocessor
from edged.preprocess.spec import plan_frame
from edged.serving.shapes import (
    ShapeSet,
    crop_plan,
    declare_shapes,
    frame_plan,
    region_plan,
    row_buckets,
    width_ladder,
)
from edged.types import Frame

DET = get_decoder("ppocr_det").default_preprocess
REC = get_decoder("ppocr_rec").default_preprocess
YOLO = get_decoder("yolo").default_preprocess


def quad(x: float, y: float, w: float, h: float, tilt: float) -> np.ndarray:
    """A rotated rectangle (w x h at angle `tilt` degrees) with its top-left corner at (x, y)."""
    c, s = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
    pts = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) @ np.array([[c, s], [-s, c]])
    return np.add(pts, [x, y]).astype(np.float32)


@settings(max_examples=300, deadline=None)
@given(st.integers(16, 4096), st.integers(16, 2160), st.sampled_from([DET, YOLO]), st.integers(1, 16))
def test_every_frame_up_to_4096x2160_plans_into_a_declared_size(w: int, h: int, spec, max_batch: int) -> None:  # type: ignore[no-untyped-def]
    shapes = declare_shapes(spec, max_batch=max_batch, source_sizes=[(1920, 1080), (1280, 720)])
    plan = frame_plan(shapes, spec, w, h)
    assert (plan.out_w, plan.out_h) in shapes.sizes
    x, y, cw, ch = plan.content
    assert x >= 0 and y >= 0 and x + cw <= plan.out_w and y + ch <= plan.out_h
    # The content still covers the whole source: its corners map back to the source's corners.
    corners = plan.to_source(np.array([[x, y], [x + cw, y + ch]], dtype=np.float64))
    assert np.allclose(corners, [[0, 0], [w, h]], atol=1.0)
    for n in range(1, max_batch + 1):
        assert spec.batch_shape(shapes.rows_for(n), plan.out_w, plan.out_h) in shapes.input_shapes(spec)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0, 4000),
    st.floats(0, 2000),
    st.floats(2, 3000),
    st.floats(2, 400),
    st.floats(-40, 40),
    st.integers(1, 16),
)
def test_every_crop_plans_into_a_declared_width(
    x: float, y: float, w: float, h: float, tilt: float, max_batch: int
) -> None:
    shapes = declare_shapes(REC, max_batch=max_batch)
    plan = crop_plan(shapes, REC, quad(x, y, w, h, tilt))
    assert (plan.out_w, plan.out_h) in shapes.sizes
    assert plan.content[2] <= plan.out_w  # content left-aligned, padding on the right
    narrower = [sw for sw, _ in shapes.sizes if sw < plan.out_w]
    assert all(sw < plan.content[2] for sw in narrower)  # the smallest declared width that holds it


def test_a_rows_shape_depends_on_itself_not_on_its_batch() -> None:
    """The same crop planned alone or among wider crops gets the same plan (old behaviour: the
    batch took the widest crop's width, so a camera's reads depended on who shared its batch)."""
    shapes = declare_shapes(REC, max_batch=8)
    small, wide = quad(10, 10, 120, 40, 0), quad(10, 100, 1500, 40, 0)
    alone = crop_plan(shapes, REC, small)
    planned = [crop_plan(shapes, REC, q) for q in (small, wide)]
    same = (planned[0].out_w, planned[0].out_h, planned[0].content) == (
        alone.out_w,
        alone.out_h,
        alone.content,
    )
    assert same and np.array_equal(planned[0].h_out_to_src, alone.h_out_to_src)
    assert planned[1].out_w > alone.out_w


def test_rows_round_up_to_the_buckets() -> None:
    assert row_buckets(16, False) == (1, 2, 4, 8, 16)
    assert row_buckets(6, False) == (1, 2, 4, 6)
    assert row_buckets(8, True) == (8,)
    shapes = ShapeSet((1, 2, 4, 8), ((320, 48),))
    assert [shapes.rows_for(n) for n in (1, 3, 5, 8)] == [1, 4, 8, 8]
    with pytest.raises(ValueError, match="exceed"):
        shapes.rows_for(9)


def test_default_declarations() -> None:
    det = declare_shapes(DET, max_batch=4)
    # PP-OCR's "min 736" sizing: 640x480 and 1280x720 are scaled up, 1080p keeps its size (rounded to 32)
    assert det.sizes == ((992, 736), (1312, 736), (1920, 1088))
    assert len(det.input_shapes(DET)) == 9
    assert width_ladder(REC)[0] == 320 and width_ladder(REC)[-1] == 2048
    assert declare_shapes(YOLO, max_batch=1).sizes == (YOLO.size,)


def test_a_padded_frame_reads_like_the_natural_one() -> None:
    """A 4:3 frame on a 1080p-only declaration is placed top-left on the larger canvas: the content is
    the same pixels as its natural plan, the rest padding."""
    shapes = declare_shapes(DET, max_batch=1, source_sizes=[(1920, 1080)])
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    natural = plan_frame(DET, 640, 480)
    padded = frame_plan(shapes, DET, 640, 480)
    assert (padded.out_w, padded.out_h) == (1920, 1088) and (natural.out_w, natural.out_h) == (992, 736)
    pre = CpuPreprocessor()
    frame = Frame("cam", 0, img)
    a = pre.rows([(frame, natural)], DET)
    b = pre.rows([(frame, padded)], DET)
    assert np.array_equal(b[:, :, :736, :992], a)
    assert np.all(b[:, :, :, 992:] == b[0, 0, 0, -1]) and np.all(b[:, :, 736:] == b[0, 0, -1, 0])  # padding


def region_box(w: int, h: int, fx: float, fy: float, fw: float, fh: float) -> tuple[int, int, int, int]:
    x1, y1 = int(fx * w), int(fy * h)
    return x1, y1, max(x1 + 1, min(w, x1 + int(fw * w))), max(y1 + 1, min(h, y1 + int(fh * h)))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(16, 4096),
    st.integers(16, 2160),
    st.floats(0, 0.95),
    st.floats(0, 0.95),
    st.floats(0.01, 1),
    st.floats(0.01, 1),
    st.sampled_from([DET, YOLO]),
    st.integers(1, 8),
    st.booleans(),
)
def test_every_region_plans_into_a_declared_size_at_the_frames_scale(  # type: ignore[no-untyped-def]
    w: int, h: int, fx: float, fy: float, fw: float, fh: float, spec, max_batch: int, regions: bool
) -> None:
    """A motion region of any frame lands in a declared size (never a new shape), its content maps back
    onto the region, and (limit_side) it samples the frame exactly where the whole-frame plan does."""
    shapes = declare_shapes(
        spec, max_batch=max_batch, source_sizes=[(1920, 1080), (1280, 720)], regions=regions
    )
    box = region_box(w, h, fx, fy, fw, fh)
    plan = region_plan(shapes, spec, w, h, box)
    assert (plan.out_w, plan.out_h) in shapes.sizes
    x, y, cw, ch = plan.content
    assert x >= 0 and y >= 0 and x + cw <= plan.out_w and y + ch <= plan.out_h
    lo, hi = plan.to_source(np.array([[x, y], [x + cw, y + ch]], dtype=np.float64))
    if spec.resize != "limit_side":  # a crop of the region, resized into the model's size
        assert np.allclose([lo, hi], [box[:2], box[2:]], atol=1.0)
        return
    frame = frame_plan(shapes, spec, w, h)
    # The content covers the region and stays inside the frame's own content.
    assert (
        lo[0] <= box[0] + 1e-3
        and lo[1] <= box[1] + 1e-3
        and hi[0] >= box[2] - 1e-3
        and hi[1] >= box[3] - 1e-3
    )
    assert cw <= frame.content[2] and ch <= frame.content[3]
    assert lo[0] >= -1e-3 and lo[1] >= -1e-3 and hi[0] <= w + 1e-3 and hi[1] <= h + 1e-3
    # Same samples as the whole-frame run: the region's pixel (0, 0) is a pixel of the frame's grid.
    shift = np.linalg.solve(frame.h_out_to_src, plan.h_out_to_src)
    assert np.allclose(shift[:2, :2], np.eye(2), atol=1e-6) and np.allclose(
        shift[:2, 2], np.round(shift[:2, 2])
    )
    # Small: no declared canvas of less area holds the region with a stride of room to align it.
    sx, sy = frame.content[2] / w, frame.content[3] / h
    rw, rh = (box[2] - box[0]) * sx + 2 * spec.multiple, (box[3] - box[1]) * sy + 2 * spec.multiple
    assert all(a * b >= plan.out_w * plan.out_h for a, b in shapes.sizes if a >= rw and b >= rh)
    assert plan.out_w * plan.out_h <= frame.out_w * frame.out_h


def test_regions_declare_smaller_canvases_only_when_asked() -> None:
    plain = declare_shapes(DET, max_batch=1, source_sizes=[(640, 480)])
    assert plain.sizes == ((992, 736),)
    regions = declare_shapes(DET, max_batch=1, source_sizes=[(640, 480)], regions=True)
    assert len(regions.sizes) == 16 and regions.sizes[-1] == (992, 736) and regions.sizes[0] == (256, 192)
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in regions.sizes)
    assert declare_shapes(YOLO, max_batch=1, regions=True).sizes == (YOLO.size,)  # one size: nothing to add
    # A car-sized region of a 640x480 frame (scale 992/640) runs on a canvas of 1/8 of the frame's area.
    plan = region_plan(regions, DET, 640, 480, (300, 250, 440, 380))
    assert (plan.out_w, plan.out_h) == (256, 384) and plan.content == (0, 0, 256, 384)  # filled with frame
    lo, hi = plan.to_source(np.array([[0, 0], [256, 384]], dtype=np.float64))
    assert lo[0] <= 300 and lo[1] <= 250 and hi[0] >= 440 and hi[1] >= 380
    assert (
        region_plan(plain, DET, 640, 480, (300, 250, 440, 380)).out_w == 992
    )  # no ladder: the frame's canvas
    with pytest.raises(ValueError, match="empty region"):
        region_plan(regions, DET, 640, 480, (700, 0, 800, 10))


def test_a_region_renders_the_same_pixels_as_the_whole_frame() -> None:
    """The CPU preprocessing of a region is the matching part of the whole frame's input tensor."""
    shapes = declare_shapes(DET, max_batch=1, source_sizes=[(640, 480)], regions=True)
    rng = np.random.default_rng(5)
    img = cv2_blur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    frame = Frame("cam", 0, img)
    pre = CpuPreprocessor()
    whole_plan = frame_plan(shapes, DET, 640, 480)
    whole = pre.rows([(frame, whole_plan)], DET)
    plan = region_plan(shapes, DET, 640, 480, (101, 57, 333, 290))
    part = pre.rows([(frame, plan)], DET)
    x0, y0 = (round(float(v)) for v in np.linalg.solve(whole_plan.h_out_to_src, plan.h_out_to_src)[:2, 2])
    _, _, cw, ch = plan.content
    a, _ = DET.scale_bias
    diff = np.abs(part[0, :, :ch, :cw] - whole[0, :, y0 : y0 + ch, x0 : x0 + cw]) / a[0]
    assert diff.max() <= 2.0 and diff.mean() < 0.3  # cv2.resize vs warpPerspective rounding


def cv2_blur(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (7, 7), 0)  # type: ignore[no-any-return]


def test_rows_to_take_runs_whole_buckets_when_padding_wastes_more() -> None:
    ladder = ShapeSet((1, 2, 4, 8, 16), ((640, 480),))
    # (waiting rows, run now): below the next bucket by less than the padding -> the bucket below
    want = {1: 1, 2: 2, 3: 3, 5: 4, 6: 6, 9: 8, 10: 8, 11: 8, 12: 12, 13: 13, 16: 16}
    assert {n: ladder.rows_to_take(n) for n in want} == want
    assert ShapeSet((16,), ((640, 480),)).rows_to_take(9) == 9  # pad_to_max: one bucket, always padded
