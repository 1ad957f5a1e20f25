"""PP-OCR decoders: text detection (DB), orientation (0/180) and recognition (CTC), matching rapidocr 3.10.0.

Preprocessing defaults are rapidocr's (config.yaml, DetPreProcess, TextClassifier/TextRecognizer
resize_norm_img): BGR, x/255 then (x - 0.5) / 0.5, crops padded on the right with zeros after
normalization (pad_value 127.5 normalizes to exactly 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edged.decoders._common import check_batch, pick_output, shape_error
from edged.decoders.base import DecodeParams, Decoder, register
from edged.decoders.dbnet import db_bitmap, db_boxes, order_clockwise, reading_order
from edged.preprocess.spec import Plan, PreprocessSpec
from edged.types import Detection

_HALF = (0.5, 0.5, 0.5)
_NO_BOX = (0.0, 0.0, 0.0, 0.0)
# Names of the outputs after a reduction on the GPU (`reduce_on_device`); `decode` takes either form.
PROB_U8 = "edged:prob_u8"  # detector map as round(p * 255)
CTC_BEST, CTC_SCORE, CTC_CLASSES = "edged:ctc_best", "edged:ctc_score", "edged:ctc_classes"


def _line_crops(max_width: int, min_width: int) -> PreprocessSpec:
    """Text-line crops as rapidocr feeds its cls/rec models: height 48, aspect kept, right-padded with
    zeros after normalization (pixel 127.5 -> 0), BGR, (x/255 - 0.5)/0.5."""
    return PreprocessSpec(
        resize="fixed_height",
        size=(max_width, 48),
        min_ratio=min_width / 48,
        color="bgr",
        mean=_HALF,
        std=_HALF,
        pad_value=127.5,
        pad_align="top_left",
    )


# --- detection -----------------------------------------------------------------------------------


class PpocrDetParams(DecodeParams):
    thresh: float = Field(0.3, ge=0, le=1, description="Probability above which a map pixel is text.")
    box_thresh: float = Field(0.5, ge=0, le=1, description="Minimum mean probability inside a box.")
    unclip_ratio: float = Field(
        1.6, gt=0, description="How far boxes grow: area * ratio / perimeter on each side."
    )
    max_candidates: int = Field(1000, ge=1, description="Most contours examined per image.")
    use_dilation: bool = Field(
        True, description="Dilate the binary map with a 2x2 kernel before finding contours."
    )
    score_mode: Literal["fast", "slow"] = Field(
        "fast", description="Box score: mean over the rectangle (fast) or over the exact contour (slow)."
    )
    min_size: float = Field(
        3.0, ge=0, description="Minimum short side of a box in map pixels (before unclip)."
    )
    box_type: Literal["quad", "axis"] = Field(
        "quad", description="quad: report the rotated polygon too; axis: only the axis-aligned box."
    )
    line_gap: float = Field(
        10.0,
        ge=0,
        description="Source pixels of top-left y difference under which boxes share a reading line.",
    )


@register("ppocr_det")
class PpocrDetDecoder(Decoder):
    Params = PpocrDetParams
    default_preprocess = PreprocessSpec(
        resize="limit_side", limit_side=736, limit_type="min", multiple=32, color="bgr", mean=_HALF, std=_HALF
    )

    def reduce_on_device(self, outputs: Mapping[str, Any], rows: int) -> dict[str, Any] | None:
        """The probability map as bytes (round(p * 255)): 2 MB instead of 8 MB per 1080p frame."""
        raw = next(iter(outputs.values()), None)
        if raw is None or np.dtype(raw.dtype) != np.float32:
            return None
        from edged.gpu.postprocess import quantize_u8_device

        return {PROB_U8: quantize_u8_device(raw, rows)}

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        p = self.params
        assert isinstance(p, PpocrDetParams)
        raw = np.asarray(outputs[PROB_U8]) if PROB_U8 in outputs else pick_output(outputs, self.kind)
        if raw.ndim == 4 and raw.shape[1] == 1:
            raw = raw[:, 0]
        if raw.ndim != 3:
            raise shape_error(self.kind, "probability map", raw.shape, "[N, 1, H, W]")
        check_batch(self.kind, "probability map", raw, plans)
        # A byte map q = round(p * 255) (reduced on the GPU): thresholds and box scores scale by 255.
        unit = 255.0 if raw.dtype == np.uint8 else 1.0
        results = []
        for prob, plan in zip(raw, plans, strict=True):
            if unit == 1.0:
                prob = prob.astype(np.float32, copy=False)
            bitmap = db_bitmap(prob, p.thresh * unit, p.use_dilation)
            quads, scores = db_boxes(
                prob,
                bitmap,
                unit=unit,
                box_thresh=p.box_thresh,
                unclip_ratio=p.unclip_ratio,
                max_candidates=p.max_candidates,
                min_size=p.min_size,
                score_mode=p.score_mode,
            )
            results.append(self.to_detections(quads, scores, prob.shape, plan))
        return results

    def to_detections(
        self, quads: np.ndarray, scores: np.ndarray, map_shape: tuple[int, ...], plan: Plan
    ) -> list[Detection]:
        """Map-coordinate quads -> source-coordinate Detections in reading order."""
        p = self.params
        assert isinstance(p, PpocrDetParams)
        if len(quads) == 0:
            return []
        # The map may be smaller than the input (strided heads); scale to input pixels first.
        q = quads * np.array([plan.out_w / map_shape[1], plan.out_h / map_shape[0]], dtype=np.float32)
        x, y, w, h = plan.content
        q[..., 0] = np.clip(q[..., 0], x, x + w)
        q[..., 1] = np.clip(q[..., 1], y, y + h)
        src = order_clockwise(plan.to_source(q.reshape(-1, 2)).reshape(-1, 4, 2))
        # rapidocr drops boxes whose (integer) side is 3 source pixels or less.
        side_w = np.linalg.norm(src[:, 0] - src[:, 1], axis=1).astype(np.int64)
        side_h = np.linalg.norm(src[:, 0] - src[:, 3], axis=1).astype(np.int64)
        ok = (side_w > 3) & (side_h > 3)
        src, scores = src[ok], scores[ok]
        order = reading_order(src, p.line_gap)
        dets = []
        for i in order:
            pts = src[i]
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            polygon = [(float(px), float(py)) for px, py in pts] if p.box_type == "quad" else None
            dets.append(
                Detection(
                    label="text",
                    score=float(scores[i]),
                    box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                    polygon=polygon,
                )
            )
        return dets


# --- orientation ---------------------------------------------------------------------------------


class PpocrClsParams(DecodeParams):
    thresh: float = Field(
        0.9, ge=0, le=1, description="Turn a crop 180 degrees only when the '180' score exceeds this."
    )


@register("ppocr_cls")
class PpocrClsDecoder(Decoder):
    """[N, 2] scores for 0 / 180 degrees.

    label/score are the classifier's top class and its score; attrs.angle is the decision
    (180 only when the top class is 180 with score > thresh, as rapidocr decides).
    """

    Params = PpocrClsParams
    per_crop = True
    text_crops = True
    default_preprocess = _line_crops(max_width=192, min_width=192)

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        p = self.params
        assert isinstance(p, PpocrClsParams)
        raw = pick_output(outputs, self.kind)
        if raw.ndim != 2 or raw.shape[1] != 2:
            raise shape_error(self.kind, "output", raw.shape, "[N, 2] (scores for 0 and 180 degrees)")
        check_batch(self.kind, "output", raw, plans)
        top = np.argmax(raw, axis=1)
        top_score = raw[np.arange(len(raw)), top]
        flip = (top == 1) & (top_score > p.thresh)
        return [
            [
                Detection(
                    label=("0", "180")[int(t)],
                    score=float(s),
                    box=_NO_BOX,
                    class_id=int(t),
                    attrs={"angle": 180 if f else 0},
                )
            ]
            for t, s, f in zip(top, top_score, flip, strict=True)
        ]


# --- recognition ---------------------------------------------------------------------------------


def load_charset(metadata: Mapping[str, str] | None, labels: Sequence[str] = ()) -> list[str]:
    """The recognizer's characters in class order, without blank and space (see `class_table`).

    From a labels file when given (one character per line), else from the model's custom metadata
    key `character` (PP-OCR ONNX exports embed their dictionary there).
    """
    if labels:
        return list(labels)
    text = (metadata or {}).get("character")
    if not text:
        raise ValueError(
            "ppocr_rec: no character dictionary: the model has no 'character' metadata "
            "and no labels file is set"
        )
    return text.splitlines()


def class_table(charset: Sequence[str], num_classes: int) -> np.ndarray:
    """Index -> string for the model's class axis: 0 = CTC blank, then the characters, then ' ' if present."""
    n = len(charset)
    if num_classes == n + 2:
        table = ["", *charset, " "]
    elif num_classes == n + 1:
        table = ["", *charset]
    else:
        raise ValueError(
            f"ppocr_rec: the model has {num_classes} classes but the dictionary has {n} characters "
            f"(expected {n + 2}: blank + characters + space)"
        )
    return np.asarray(table, dtype=object)


def ctc_keep(idx: np.ndarray) -> np.ndarray:
    """[N, T] best classes -> kept mask: not the blank (0), not a repeat of the previous step."""
    keep = np.ones(idx.shape, dtype=bool)
    keep[:, 1:] = idx[:, 1:] != idx[:, :-1]
    keep &= idx != 0
    return keep


def ctc_greedy(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[N, T, C] -> (best class [N, T], its probability [N, T], kept mask [N, T]): greedy CTC."""
    idx = np.argmax(probs, axis=2)
    conf = np.take_along_axis(probs, idx[..., None], axis=2)[..., 0]
    return idx, conf, ctc_keep(idx)


class PpocrRecParams(DecodeParams):
    min_score: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Texts with a mean character score below this come out as label '' with attrs.rejected.",
    )


@register("ppocr_rec")
class PpocrRecDecoder(Decoder):
    """[N, T, C] per-step class scores -> one Detection per crop with the read text as label."""

    Params = PpocrRecParams
    per_crop = True
    text_crops = True
    # rapidocr has no width cap (batch width follows the widest crop); 2048 matches its TensorRT profile.
    default_preprocess = _line_crops(max_width=2048, min_width=320)

    def __init__(
        self, params: DecodeParams, labels: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(params, labels, metadata)
        self._table: np.ndarray | None = None

    def table(self, num_classes: int) -> np.ndarray:
        if self._table is None or len(self._table) != num_classes:
            self._table = class_table(load_charset(self.metadata, self.labels), num_classes)
        return self._table

    def reduce_on_device(self, outputs: Mapping[str, Any], rows: int) -> dict[str, Any] | None:
        """Greedy CTC needs the best class and its score per step: [N, T] twice instead of [N, T, C]
        (C = 18710 for PP-OCRv6: 1/9355 of the bytes)."""
        raw = next(iter(outputs.values()), None)
        if raw is None or len(raw.shape) != 3 or np.dtype(raw.dtype) != np.float32:
            return None
        from edged.gpu.postprocess import ctc_best_device

        best, score = ctc_best_device(raw, rows)
        return {CTC_BEST: best, CTC_SCORE: score, CTC_CLASSES: np.array([raw.shape[2]], np.int64)}

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        p = self.params
        assert isinstance(p, PpocrRecParams)
        if CTC_BEST in outputs:  # reduced on the GPU: best class and its score per step
            idx, conf = np.asarray(outputs[CTC_BEST]), np.asarray(outputs[CTC_SCORE])
            check_batch(self.kind, "output", idx, plans)
            table = self.table(int(outputs[CTC_CLASSES][0]))
            keep = ctc_keep(idx)
        else:
            raw = pick_output(outputs, self.kind)
            if raw.ndim != 3:
                raise shape_error(self.kind, "output", raw.shape, "[N, T, num_classes]")
            check_batch(self.kind, "output", raw, plans)
            table = self.table(raw.shape[2])
            idx, conf, keep = ctc_greedy(raw)
        results = []
        for i in range(idx.shape[0]):
            k = keep[i]
            text = "".join(table[idx[i][k]])
            score = float(np.mean(conf[i][k])) if k.any() else 0.0
            if text and score >= p.min_score:
                det = Detection(label=text, score=score, box=_NO_BOX)
            else:
                det = Detection(label="", score=score, box=_NO_BOX, attrs={"rejected": True, "text": text})
            results.append([det])
        return results
