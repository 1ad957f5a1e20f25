"""Helpers for tests that run the real PP-OCR ONNX models shipped in the rapidocr wheel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.decoders.base import Decoder
from edged.decoders.registry import build_decoder
from edged.infer.base import Engine
from edged.infer.factory import create_engine
from edged.preprocess.cpu import preprocess_crops, preprocess_frame
from edged.preprocess.spec import upright_quad
from edged.types import Detection


def rapidocr_models_dir() -> Path | None:
    try:
        import rapidocr
    except ImportError:
        return None
    d = Path(rapidocr.__file__).parent / "models"
    return d if (d / "PP-OCRv6_det_small.onnx").exists() else None


@dataclass
class Stage:
    engine: Engine
    decoder: Decoder

    def run(self, tensor: np.ndarray, plans: list[Any]) -> list[list[Detection]]:
        out = self.engine.infer({self.engine.inputs[0].name: tensor})
        return self.decoder.decode(out, plans)


@dataclass
class OcrChain:
    """det -> (cls) -> rec on one BGR image, the way the chain wires them (crops through plans)."""

    det: Stage
    cls: Stage
    rec: Stage

    @classmethod
    def load(cls, models: Path) -> OcrChain:
        stages = []
        for kind, name in (
            ("ppocr_det", "PP-OCRv6_det_small.onnx"),
            ("ppocr_cls", "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
            ("ppocr_rec", "PP-OCRv6_rec_small.onnx"),
        ):
            engine = create_engine(kind, models / name, backend="onnxruntime")
            stages.append(Stage(engine, build_decoder(kind, {}, metadata=engine.metadata)))
        return cls(*stages)

    def detect(self, image: np.ndarray) -> list[Detection]:
        x, plan = preprocess_frame(image, self.det.decoder.default_preprocess)
        return self.det.run(x, [plan])[0]

    def read(self, image: np.ndarray, use_cls: bool = True) -> list[tuple[Detection, Detection, int]]:
        """(text box, recognition, angle applied) per detected line, in reading order."""
        boxes = self.detect(image)
        quads = [upright_quad(d.quad()) for d in boxes]
        angles = [0] * len(quads)
        if use_cls and quads:
            x, plans = preprocess_crops(image, quads, self.cls.decoder.default_preprocess)
            angles = [r[0].attrs["angle"] for r in self.cls.run(x, plans)]
            quads = [
                upright_quad(q, rotate_tall=False, flip=a == 180) for q, a in zip(quads, angles, strict=True)
            ]
        if not quads:
            return []
        x, plans = preprocess_crops(image, quads, self.rec.decoder.default_preprocess)
        texts = [r[0] for r in self.rec.run(x, plans)]
        return list(zip(boxes, texts, angles, strict=True))


def text_image(
    lines: list[tuple[str, int]], size: tuple[int, int] = (640, 480), scale: float = 1.6, x0: int = 40
) -> np.ndarray:
    """White BGR image with black text lines: (text, cv2 font) per line, spaced down the image."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    step = h // (len(lines) + 1)
    for i, (text, font) in enumerate(lines):
        cv2.putText(img, text, (x0 + 30 * i, step * (i + 1) + 20), font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    return img


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre (counter-clockwise), filling with white."""
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex quadrilaterals (rasterised on a shared grid, good to well under 1%)."""
    import cv2

    pts = np.concatenate([a, b]).reshape(-1, 2)
    lo = np.floor(pts.min(axis=0)) - 1
    size = (np.ceil(pts.max(axis=0) - lo) + 2).astype(int)
    k = 4  # supersample so one-pixel disagreements do not dominate small boxes
    ma = np.zeros((size[1] * k, size[0] * k), np.uint8)
    mb = np.zeros_like(ma)
    cv2.fillConvexPoly(ma, np.round((a - lo) * k).astype(np.int32), 1)
    cv2.fillConvexPoly(mb, np.round((b - lo) * k).astype(np.int32), 1)
    inter = np.logical_and(ma, mb).sum()
    union = np.logical_or(ma, mb).sum()
    return float(inter / union) if union else 0.0
