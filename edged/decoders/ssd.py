"""SSD-style detectors with box/score/class outputs (TF Object Detection API exports, their ONNX conversions).

Expected outputs (names configurable; a ':0' suffix is accepted):
  boxes   [N, K, 4]  y1,x1,y2,x2 (TF default) or x1,y1,x2,y2; normalized to 0..1 of the model input
                     (`normalized: true`) or in model-input pixels
  scores  [N, K]     score of each box's class (post-processed exports), with
  classes [N, K]     class index as float or int (TF: 1-based, hence `label_offset`), or
  scores  [N, K, nc] per-class scores (raw exports, no classes output): best class per box, then NMS
  num     [N]        optional count of valid rows (TF `num_detections`)
NMS is applied when `nms_iou` is set, and always for per-class scores (they have not been suppressed).
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


class SsdParams(DecodeParams):
    boxes_output: str = Field("detection_boxes", description="Name of the [N, K, 4] boxes output.")
    scores_output: str = Field(
        "detection_scores", description="Name of the [N, K] or [N, K, nc] scores output."
    )
    classes_output: str = Field(
        "detection_classes",
        description="Name of the [N, K] classes output; ignored when scores are per class.",
    )
    num_output: str = Field(
        "", description="Name of the [N] valid-count output (e.g. num_detections); empty = none."
    )
    box_format: Literal["yxyx", "xyxy"] = Field("yxyx", description="Corner order of each box row.")
    normalized: bool = Field(
        True, description="Boxes are fractions of the model input size (else input pixels)."
    )
    score_thresh: float = Field(0.5, ge=0, le=1, description="Minimum score kept.")
    label_offset: int = Field(
        0, description="Subtracted from class values before the labels lookup (1 for 1-based TF class ids)."
    )
    background_class: int = Field(
        -1, description="Per-class scores only: index of a background column to ignore (-1 = none)."
    )
    nms_iou: float | None = Field(
        None, gt=0, le=1, description="Class-aware NMS IoU; unset = only for per-class scores (then 0.45)."
    )
    max_det: int = Field(100, ge=1, description="Most detections kept per image.")


def ssd_candidates(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None, p: SsdParams, in_w: int, in_h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image -> (Kx4 x1y1x2y2 in model-input pixels, scores, class ids) above the threshold."""
    if scores.ndim == 2:
        s = scores.astype(np.float32, copy=True)
        if 0 <= p.background_class < s.shape[1]:
            s[:, p.background_class] = -np.inf
        class_ids = np.argmax(s, axis=1)
        best = s[np.arange(len(s)), class_ids]
    else:
        best = scores.astype(np.float32)
        class_ids = (
            np.rint(classes).astype(np.int64) if classes is not None else np.zeros(len(best), dtype=np.int64)
        )
    keep = np.nonzero(best >= p.score_thresh)[0]
    b = boxes[keep].astype(np.float32)
    if p.box_format == "yxyx":
        b = b[:, [1, 0, 3, 2]]
    if p.normalized:
        b = b * np.array([in_w, in_h, in_w, in_h], dtype=np.float32)
    # Some exports emit corners in either order; normalise so x1 <= x2, y1 <= y2.
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
    return b, best[keep], class_ids[keep].astype(np.int64) - p.label_offset


@register("ssd")
class SsdDecoder(Decoder):
    Params = SsdParams
    default_preprocess = PreprocessSpec(
        resize="stretch", size=(300, 300), color="rgb", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )

    def _outputs(
        self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        p = self.params
        assert isinstance(p, SsdParams)
        boxes = pick_output(outputs, self.kind, p.boxes_output)
        scores = pick_output(outputs, self.kind, p.scores_output)
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise shape_error(self.kind, p.boxes_output, boxes.shape, "[N, K, 4]")
        if scores.ndim not in (2, 3) or scores.shape[:2] != boxes.shape[:2]:
            raise shape_error(
                self.kind,
                p.scores_output,
                scores.shape,
                f"[N, K] or [N, K, nc] with N, K = {boxes.shape[:2]}",
            )
        check_batch(self.kind, p.boxes_output, boxes, plans)
        classes = None
        if scores.ndim == 2 and p.classes_output:
            classes = pick_output(outputs, self.kind, p.classes_output).reshape(scores.shape[0], -1)
            if classes.shape != scores.shape:
                raise shape_error(
                    self.kind, p.classes_output, classes.shape, f"{tuple(scores.shape)} like the scores"
                )
        num = pick_output(outputs, self.kind, p.num_output).reshape(-1) if p.num_output else None
        return boxes, scores, classes, num

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        p = self.params
        assert isinstance(p, SsdParams)
        boxes, scores, classes, num = self._outputs(outputs, plans)
        iou = p.nms_iou if p.nms_iou is not None else (0.45 if scores.ndim == 3 else None)
        results: list[list[Detection]] = []
        for i, plan in enumerate(plans):
            k = int(num[i]) if num is not None else boxes.shape[1]
            b, s, c = ssd_candidates(
                boxes[i, :k],
                scores[i, :k],
                None if classes is None else classes[i, :k],
                p,
                plan.out_w,
                plan.out_h,
            )
            if iou is not None:
                keep = nms(b, s, iou, c, p.max_det)
            else:
                keep = np.argsort(-s, kind="stable")[: p.max_det]
            src = boxes_to_source(clip_boxes(b[keep], plan), plan)
            results.append(
                [
                    Detection(label=self.label(int(ci)), score=float(si), box=as_box(bi), class_id=int(ci))
                    for bi, si, ci in zip(src, s[keep], c[keep], strict=True)
                ]
            )
        return results
