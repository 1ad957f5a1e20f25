"""Fixed input shapes, declared once per model.

GPU backends pay for every new input shape: ONNX Runtime's CUDA EP re-plans memory and cuDNN algorithms,
TensorRT needs an optimization profile that covers it. So a model server never lets the data choose
its tensor shape freely: `declare_shapes` turns the preprocessing spec and the model's batching settings
into a finite `ShapeSet` (row buckets x output sizes), and every request is planned *into* that set:

  letterbox / stretch   one size (the model's);
  limit_side            one canvas per declared source size (PP-OCR detector sizing of that source); a frame
                        whose natural size differs is placed top-left in the smallest canvas that holds it
                        (the rest is padding the decoder ignores) or scaled down into the largest canvas;
  fixed_height          a ladder of crop widths up to the spec's max width; each crop is padded on the
                        right to the smallest width that holds it.

Regions (motion gating, edged.pipeline.motion): a detector may run on a rectangle of the frame instead of
the whole frame. `region_plan` samples it at the whole frame's scale (so text reads as in a whole-frame
run) and places it top-left in the smallest declared canvas that holds it. `declare_shapes(regions=True)`
adds, for limit_side detectors, a ladder of smaller canvases (REGION_STEPS of each frame canvas per
side) so a region costs less than the frame; without them a region pads into the frame's canvas.

A row's shape depends only on its own source (never on which other cameras' rows share its batch), so a
batched camera reads exactly what an unbatched one reads. The same set gives the warm-up list, the
TensorRT optimization profiles and the engine-cache key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from edged.preprocess.spec import (
    Plan,
    PreprocessSpec,
    _scale_homography,
    limit_side_size,
    plan_crops,
    plan_frame,
)

# Source sizes a limit_side detector is declared for when the config names none: 16:9 and 4:3 cameras.
DEFAULT_SOURCE_SIZES: tuple[tuple[int, int], ...] = ((1920, 1080), (1280, 720), (640, 480))
# Crop widths as multiples of the line height (PP-OCR: 48 px high crops, 320..2048 wide).
WIDTH_STEPS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.4)
# Region canvases per side, as shares of a frame canvas (limit_side detectors with regions on): with
# the frame itself, 4 x 4 canvases per source size, so a region pays at most ~1.8x its own area.
REGION_STEPS = (0.25, 0.5, 0.75)


class ShapeError(ValueError):
    """The declared shapes contradict the model's fixed input dimensions."""


@dataclass(frozen=True)
class ShapeSet:
    """The finite set of inputs one model is ever fed: `rows` x `sizes` ((width, height) of a row)."""

    rows: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]

    @property
    def max_rows(self) -> int:
        return self.rows[-1]

    def rows_to_take(self, n: int) -> int:
        """How many of n waiting rows to run now: all of them, padded up to their row bucket, unless
        the bucket below wastes less (9 rows: run 8 now and 1 with the next batch, rather than 7 zero
        rows; 16 cameras on an H200 had most batches between 9 and 16 rows)."""
        below = max((r for r in self.rows if r <= n), default=n)
        return below if n - below < self.rows_for(n) - n else n

    def rows_for(self, n: int) -> int:
        """The row bucket a batch of n rows runs as (zero rows fill the gap)."""
        if n > self.max_rows:
            raise ValueError(f"{n} rows exceed the largest declared batch {self.max_rows}")
        return next(r for r in self.rows if r >= n)

    def input_shapes(self, spec: PreprocessSpec) -> list[tuple[int, int, int, int]]:
        """Every tensor shape of this set in the spec's layout, smallest first (warm-up order)."""
        return [spec.batch_shape(n, w, h) for w, h in self.sizes for n in self.rows]

    def describe(self) -> str:
        sizes = ", ".join(f"{w}x{h}" for w, h in self.sizes)
        return f"rows {list(self.rows)} x sizes [{sizes}] = {len(self.rows) * len(self.sizes)} shapes"


def row_buckets(max_batch: int, pad_to_max: bool) -> tuple[int, ...]:
    """Powers of two up to max_batch (or max_batch alone: one shape, what GPU backends like best)."""
    if pad_to_max:
        return (max_batch,)
    return tuple(sorted({min(2**i, max_batch) for i in range(max_batch.bit_length() + 1)}))


def width_ladder(spec: PreprocessSpec) -> tuple[int, ...]:
    """Default crop widths of a fixed_height spec: from the minimum width up to the max, about 25 % apart."""
    max_w, h = spec.size
    lo = max(1, int(h * spec.min_ratio))
    m = max(1, spec.width_multiple)
    ws = {min(max_w, -(-int(lo * s) // m) * m) for s in WIDTH_STEPS}
    ws.add(max_w)
    return tuple(sorted(w for w in ws if w <= max_w))


def declare_shapes(
    spec: PreprocessSpec,
    *,
    max_batch: int,
    pad_to_max: bool = False,
    source_sizes: Iterable[tuple[int, int]] = (),
    widths: Sequence[int] = (),
    regions: bool = False,
) -> ShapeSet:
    """The shapes a model server declares for this spec (see the module docstring). `regions`: some
    camera runs this model on motion regions (limit_side: smaller canvases are declared for them)."""
    rows = row_buckets(max(1, max_batch), pad_to_max)
    if spec.resize in ("letterbox", "stretch"):
        sizes: set[tuple[int, int]] = {spec.size}
    elif spec.resize == "limit_side":
        srcs = list(source_sizes) or list(DEFAULT_SOURCE_SIZES)
        sizes = {limit_side_size(spec, w, h) for w, h in srcs}
        if regions:
            sizes |= {c for size in sizes for c in region_canvases(spec, *size)}
    else:  # fixed_height
        max_w, h = spec.size
        ws = sorted({int(w) for w in widths}) if widths else list(width_ladder(spec))
        if ws[-1] < max_w:
            ws.append(max_w)  # every crop must fit somewhere: the max width closes the ladder
        sizes = {(w, h) for w in ws if w <= max_w}
    return ShapeSet(rows, tuple(sorted(sizes, key=lambda s: (s[0] * s[1], s))))


def region_canvases(spec: PreprocessSpec, canvas_w: int, canvas_h: int) -> set[tuple[int, int]]:
    """The smaller canvases declared for regions of frames planned into a canvas_w x canvas_h canvas:
    REGION_STEPS of each side (and the full side), rounded up to the detector's multiple."""
    m = max(1, spec.multiple)

    def side(full: int) -> list[int]:
        return sorted({min(full, -(-int(full * f) // m) * m) for f in REGION_STEPS} | {full})

    return {(w, h) for w in side(canvas_w) for h in side(canvas_h)}


def check_model_input(shapes: ShapeSet, spec: PreprocessSpec, model_shape: Sequence[int], where: str) -> None:
    """One clear error when a declared shape cannot go into the model (fixed batch or fixed H/W)."""
    if len(model_shape) != 4:
        return
    for shape in shapes.input_shapes(spec):
        for axis, (want, fixed) in enumerate(zip(shape, model_shape, strict=True)):
            if fixed > 0 and fixed != want:
                what = ("batch rows", "dim 1", "dim 2", "dim 3")[axis]
                hint = "set batching.max_batch to it and batching.pad_to_max: true" if axis == 0 else ""
                raise ShapeError(
                    f"{where}: declared input {list(shape)} does not fit the model's fixed input "
                    f"{list(model_shape)} ({what} must be {fixed}){'; ' + hint if hint else ''}"
                )


def frame_plan(shapes: ShapeSet, spec: PreprocessSpec, src_w: int, src_h: int) -> Plan:
    """The plan of a whole frame, its output size one of the declared sizes."""
    plan = plan_frame(spec, src_w, src_h)
    if (plan.out_w, plan.out_h) in shapes.sizes:
        return plan
    if spec.resize == "fixed_height":
        quad = np.array([[0, 0], [src_w, 0], [src_w, src_h], [0, src_h]], dtype=np.float32)
        return crop_plan(shapes, spec, quad)
    return _fit_canvas(shapes.sizes, plan, src_w, src_h)


def crop_plan(shapes: ShapeSet, spec: PreprocessSpec, quad: np.ndarray) -> Plan:
    """The plan of one crop (4x2 corners in source pixels), its output size one of the declared sizes."""
    plan = plan_crops(spec, [quad])[0]
    if (plan.out_w, plan.out_h) in shapes.sizes:
        return plan
    if spec.resize == "fixed_height":
        # Content stays left-aligned at its natural width; only the padding on the right grows.
        width = next((w for w, h in shapes.sizes if h == plan.out_h and w >= plan.out_w), None)
        if width is not None:
            return dataclasses.replace(plan, out_w=width)
    w, h = plan.content[2], plan.content[3]
    return _fit_canvas(shapes.sizes, plan, w, h, crop=plan)


def _fit_canvas(
    sizes: Sequence[tuple[int, int]], plan: Plan, src_w: int, src_h: int, crop: Plan | None = None
) -> Plan:
    w, h = plan.content[2], plan.content[3]
    holding = [(cw, ch) for cw, ch in sizes if cw >= w and ch >= h]
    if holding:  # pad: smallest canvas (sizes are sorted by area) that holds the natural size
        cw, ch = holding[0]
        return Plan(cw, ch, (0, 0, w, h), plan.h_out_to_src)
    # Too large for every canvas: scale down into the canvas that keeps the most resolution.
    cw, ch = max(sizes, key=lambda s: (min(s[0] / w, s[1] / h), -s[0] * s[1]))
    s = min(cw / w, ch / h)
    nw, nh = max(1, min(cw, int(w * s))), max(1, min(ch, int(h * s)))
    if crop is None:
        hmat = _scale_homography(nw / src_w, nh / src_h, 0, 0)
    else:  # a crop's homography maps its content rectangle to the quad: pre-scale into it
        hmat = crop.h_out_to_src @ _scale_homography(nw / w, nh / h, 0, 0)
    return Plan(cw, ch, (0, 0, nw, nh), hmat)


def region_plan(
    shapes: ShapeSet, spec: PreprocessSpec, src_w: int, src_h: int, box: tuple[int, int, int, int]
) -> Plan:
    """The plan of a rectangle (x1, y1, x2, y2 frame pixels) of a src_w x src_h frame: sampled at the
    scale the whole frame is planned at (the detector sees the same pixels as in a whole-frame run),
    in the smallest declared canvas that holds it, the canvas filled with the frame around it. Its
    homography maps into frame pixels, so detections decode straight into frame coordinates. Modes
    without a per-frame scale (letterbox, stretch, fixed_height) plan the rectangle as a crop."""
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(src_w, int(box[2])), min(src_h, int(box[3]))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty region {box} of a {src_w}x{src_h} frame")
    if spec.resize != "limit_side":
        quad = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float32)
        return crop_plan(shapes, spec, quad)
    frame = frame_plan(shapes, spec, src_w, src_h)
    fw, fh = frame.content[2], frame.content[3]
    sx, sy = fw / src_w, fh / src_h
    # Whole output pixels of the frame's own plan, so the region's samples are the frame run's samples;
    # the origin on the detector's stride (`multiple`), so its convolutions see the same grid too.
    m = max(1, spec.multiple)
    ox1, oy1 = int(np.floor(x1 * sx)) // m * m, int(np.floor(y1 * sy)) // m * m
    ox2, oy2 = min(fw, int(np.ceil(x2 * sx))), min(fh, int(np.ceil(y2 * sy)))
    need_w, need_h = max(1, ox2 - ox1), max(1, oy2 - oy1)
    cw, ch = next(
        ((cw, ch) for cw, ch in shapes.sizes if cw >= need_w and ch >= need_h), (frame.out_w, frame.out_h)
    )
    # Fill the canvas with the frame around the region rather than padding: the detector sees more
    # context, and detectors with global pooling (PP-OCR's SE blocks) answer differently next to a
    # flat pad than inside a picture. Padding remains only where the frame's own plan has it.
    w, h = min(cw, fw), min(ch, fh)
    ox = min(max(0, ox1 - (w - need_w) // 2 // m * m), fw - w)
    oy = min(max(0, oy1 - (h - need_h) // 2 // m * m), fh - h)
    # Output pixel (x, y) of the region is output pixel (x + ox, y + oy) of the whole-frame plan.
    return Plan(cw, ch, (0, 0, w, h), _scale_homography(sx, sy, -ox, -oy))
