"""Where tests find the real models and the sample video (made by scripts/setup-env.sh)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("EDGED_MODELS_DIR", ROOT / "models"))


def need_models() -> Path:
    if not (MODELS_DIR / "PP-OCRv6_det_small.onnx").is_file():
        pytest.fail(f"PP-OCR models missing in {MODELS_DIR}: run `edged install-models --dest {MODELS_DIR}`")
    return MODELS_DIR
