"""YOLO detectors (Ultralytics v5 and v8+ export layouts): confidence filter, class-aware NMS, letterbox undo.

Layouts of the raw output tensor (one per batch item):
  v5: [N, boxes, 5 + nc]  rows of cx, cy, w, h, objectness, class scores (score = obj * cls)
  v8: [N, 4 + nc, boxes]  channels-first cx, cy, w, h, class scores (no objectness); the transposed
      [N, boxes, 4 + nc] is accepted too.
`layout: auto` first matches the channel count against the labels file (nc + 5 -> v5, nc + 4 -> v8
either way round); without labels it picks v8 when the middle axis is the smaller one (exports have
thousands of boxes and tens of channels), else v5. Set `layout` for a transposed v8 without labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from edged.decoders._common import as_box, boxes_to_source, check_batch, clip_boxes, pick_output, shape_error
from edged.decoders.base import DecodeParams, Decoder, register
from edged.decoders.nms import nms
from edged.preprocess.spec import Plan, PreprocessSpec
from edged.types import Detection

Layout = Literal["v5", "v8", "v8t"]  # v8t: v8 transposed to [N, boxes, 4 + nc]


class YoloParams(DecodeParams):
    conf_thresh: float = Field(
        0.25, ge=0, le=1, description="Minimum confidence (v5: objectness x class score)."
    )
    iou_thresh: float = Field(
        0.45, gt=0, le=1, description="IoU above which NMS suppresses the lower-scored box."
    )
    max_det: int = Field(300, ge=1, description="Most detections kept per image after NMS.")
    max_candidates: int = Field(
        30000,
        ge=1,
        description="Most candidates (highest scores) fed to NMS, bounding its cost on noisy frames.",
    )
    class_agnostic: bool = Field(
        False, description="NMS across classes (a box suppresses overlaps of any class)."
    )
    layout: Literal["auto", "v5", "v8"] = Field(
        "auto", description="Output layout; auto detects it from the shape."
    )
    output: str = Field("", description="Output tensor name; empty = the model's first output.")


def detect_layout(shape: Sequence[int], requested: str, num_labels: int) -> Layout:
    """Which layout a [N, A, B] output has (see the module doc)."""
    _, a, b = shape
    if requested == "v5":
        return "v5"
    if requested == "v8":
        return "v8" if a < b else "v8t"
    if num_labels:
        # The labels file pins the channel count, which settles it even for tiny box counts.
        if b == num_labels + 5:
            return "v5"
        if b == num_labels + 4:
            return "v8t"
        if a == num_labels + 4:
            return "v8"
    return "v8" if a < b else "v5"


def yolo_candidates(
    pred: np.ndarray, layout: Layout, conf_thresh: float, max_candidates: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw output -> (Kx4 x1y1x2y2 boxes in input pixels, scores, class ids) above threshold.

    This is the step a GPU pre-filter replaces: it only thresholds and takes the best class per box.
    """
    rows = pred.T if layout == "v8" else pred  # -> [boxes, C]
    cls = rows[:, 5:] * rows[:, 4:5] if layout == "v5" else rows[:, 4:]
    class_ids = np.argmax(cls, axis=1)
    scores = cls[np.arange(len(cls)), class_ids]
    keep = np.nonzero(scores >= conf_thresh)[0]
    if keep.size > max_candidates:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:max_candidates]]
    xywh = rows[keep, :4].astype(np.float32)
    half = xywh[:, 2:4] / 2
    boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
    return boxes, scores[keep].astype(np.float32), class_ids[keep].astype(np.int64)


@register("yolo")
class YoloDecoder(Decoder):
    Params = YoloParams
    default_preprocess = PreprocessSpec(
        resize="letterbox",
        size=(640, 640),
        color="rgb",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        pad_value=114.0,
    )

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        p = self.params
        assert isinstance(p, YoloParams)
        raw = pick_output(outputs, self.kind, p.output)
        if raw.ndim != 3:
            raise shape_error(
                self.kind, "output", raw.shape, "[N, boxes, 5+nc] (v5) or [N, 4+nc, boxes] (v8)"
            )
        check_batch(self.kind, "output", raw, plans)
        layout = detect_layout(raw.shape, p.layout, len(self.labels))
        channels = raw.shape[1] if layout == "v8" else raw.shape[2]
        min_channels = 6 if layout == "v5" else 5
        if channels < min_channels:
            raise shape_error(
                self.kind, f"output ({layout} layout)", raw.shape, f"at least {min_channels} channels"
            )
        results: list[list[Detection]] = []
        for pred, plan in zip(raw, plans, strict=True):
            boxes, scores, class_ids = yolo_candidates(
                pred.astype(np.float32), layout, p.conf_thresh, p.max_candidates
            )
            keep = nms(boxes, scores, p.iou_thresh, None if p.class_agnostic else class_ids, p.max_det)
            src = boxes_to_source(clip_boxes(boxes[keep], plan), plan)
            results.append(
                [
                    Detection(label=self.label(int(c)), score=float(s), box=as_box(b), class_id=int(c))
                    for b, s, c in zip(src, scores[keep], class_ids[keep], strict=True)
                ]
            )
        return results
