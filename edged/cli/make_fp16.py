"""`edged make-fp16 MODEL.onnx ...`: write each model's fp16 version beside it (`<stem>.fp16.onnx`), the
file `models.<name>.onnxruntime.fp16: true` loads (edged.infer.quantize.convert_fp16: float16 weights
and activations, spatial means and float32 inputs/outputs kept). A one-off step on the device before
`edged run`, so a pip-installed edged can make it too; it needs the `onnx` package (`pip install onnx`),
which the daemon itself does not. Runs in the CLI's main thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def cmd_make_fp16(args: argparse.Namespace) -> int:
    """Convert every given model; one line per model, exit 1 if any could not be made."""
    if importlib.util.find_spec("onnx") is None:
        print("edged: making an fp16 model needs the `onnx` package: pip install onnx", file=sys.stderr)
        return 1
    from edged.config.files import model_file_problems
    from edged.infer.quantize import convert_fp16, fp16_path

    failed = 0
    for src in (Path(p) for p in args.models):
        dst = fp16_path(src)
        problems = model_file_problems(src, None)
        if problems:
            print(f"edged: {problems[0][1]}", file=sys.stderr)
            failed += 1
        elif dst.exists() and not args.force:
            print(f"{dst}: exists, kept (--force makes it again)")
        else:
            try:
                convert_fp16(src, dst)
            except Exception as e:  # the converter's own errors: one line naming the model, no traceback
                print(
                    f"edged: cannot make the fp16 version of {src}: {type(e).__name__}: {e}", file=sys.stderr
                )
                failed += 1
                continue
            mb = dst.stat().st_size / 1e6
            print(f"{dst}: written ({mb:.1f} MB, from {src.name}); load it with onnxruntime.fp16: true")
    return 1 if failed else 0
