"""`edged install-models`: copy the PP-OCR ONNX models out of the installed rapidocr wheel.

Nothing is downloaded at run time: the models ship inside the `rapidocr` wheel (Apache-2.0), which
scripts/setup-env.sh and scripts/install.sh install with --no-deps. Each copy is atomic (a half-copied
model is never picked up). Runs in the CLI's main thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

BUNDLED_MODELS = (
    "PP-OCRv6_det_small.onnx",
    "PP-OCRv6_rec_small.onnx",
    "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
)


def cmd_install_models(args: argparse.Namespace) -> int:
    """Copy the PP-OCR ONNX models out of the installed rapidocr wheel (no download at run time)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("rapidocr")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        print(
            "edged: the `rapidocr` package is not installed: pip install --no-deps rapidocr==3.10.0 (it carries the models)",
            file=sys.stderr,
        )
        return 1
    src_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    from edged.cli.progress import Progress

    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    with Progress("install-models", total=len(BUNDLED_MODELS), unit="files", stream=sys.stderr) as progress:
        for name in BUNDLED_MODELS:
            src = src_dir / name
            if not src.is_file():
                print(
                    f"edged: {src} is missing from the rapidocr package (rapidocr==3.10.0 ships it)",
                    file=sys.stderr,
                )
                return 1
            target = dest / name
            if not (target.is_file() and target.stat().st_size == src.stat().st_size):
                tmp = target.with_suffix(".part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)  # atomic: a half-copied model is never picked up
            progress.advance()
    print(f"models ready in {dest} (PP-OCR, Apache-2.0, from rapidocr)")
    return 0
