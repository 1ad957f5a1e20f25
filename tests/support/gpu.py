"""Helpers shared by the GPU tests and the GPU benchmark (no fixtures here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def models_dir() -> Path | None:
    """The PP-OCR ONNX files: $EDGED_MODELS_DIR, ./.models (device runs carry it), or the rapidocr wheel."""
    for cand in (os.environ.get("EDGED_MODELS_DIR"), str(REPO / ".models")):
        if cand and (Path(cand) / "PP-OCRv6_det_small.onnx").is_file():
            return Path(cand)
    try:
        import rapidocr

        d = Path(rapidocr.__file__).parent / "models"
        return d if (d / "PP-OCRv6_det_small.onnx").is_file() else None
    except ImportError:
        return None


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A synthetic BGR frame with smooth gradients, hard edges and noise (exercises every sampling case)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 127 + 100 * np.sin(xx / 13.0) * np.cos(yy / 17.0)
    img[..., 1] = (xx * 255.0 / max(w - 1, 1) + yy * 0.3) % 256
    img[..., 2] = np.where(((xx // 24) + (yy // 24)) % 2 == 0, 220, 30)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def astronaut_bgr() -> np.ndarray:
    try:
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    except Exception:  # skimage missing or no data files: a generated frame is as good for sampling tests
        return textured(512, 512, seed=7)
