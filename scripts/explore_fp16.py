"""Exploration, not a product figure: fp16 conversions of the PP-OCR detector on ONNX Runtime's CUDA EP,
on real 1080p frames, side by side in one run. For each variant: NaN outputs (real and random input),
max |prob - fp32 prob|, the share of bitmap pixels (prob > 0.3) that differ from fp32, and engines-only
frames/s at 1 and 16 rows (IO binding on device OrtValues; one warm call, then 20 / 4 timed).

The variants differ in the operators kept in fp32 on top of the converter's default block list. Make
them where the `onnx` package is (it is not on the GPU machine), then carry the folder:
    python scripts/explore_fp16.py --make .exp16 --model models/PP-OCRv6_det_small.onnx
and on the GPU machine (scripts/device_run.sh explore, EXPLORE=scripts/explore_fp16.py):
    python scripts/explore_fp16.py samples/plates-1080.avi --variants .exp16 --model /tmp/models/...onnx
Figures: docs/benchmarks.md, "fp16 detector for the CUDA EP".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = {
    "v0": [],  # everything fp16
    "v1": ["ReduceMean", "GlobalAveragePool"],  # what edged ships (edged.infer.quantize.FP16_KEEP_FP32)
    "v2": ["ReduceMean", "GlobalAveragePool", "Erf", "Div"],
    "v3": ["ReduceMean", "GlobalAveragePool", "Erf", "Div", "Sigmoid", "ConvTranspose", "Resize"],
}
# ImageNet mean/std, as in the measured run (edged's ppocr_det uses 0.5/0.5; the input range is alike).
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def make(folder: Path, model: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    folder.mkdir(parents=True, exist_ok=True)
    for name, keep in VARIANTS.items():
        converted = convert_float_to_float16(
            onnx.load(str(model)), keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + keep
        )
        onnx.save(converted, str(folder / f"det-{name}.onnx"))


def frames(video: str, n: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(video)
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        f = cv2.resize(f, (1920, 1088)).astype(np.float32) / 255.0
        out.append(((f - MEAN) / STD).transpose(2, 0, 1))
    return np.stack(out)


def session(path: Path) -> Any:
    import onnxruntime as ort

    opts = {"device_id": "0", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "1"}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=[("CUDAExecutionProvider", opts)])


def run(s: Any, x: np.ndarray, n: int = 1) -> tuple[np.ndarray, float]:
    import onnxruntime as ort

    b = s.io_binding()
    b.bind_ortvalue_input(s.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    b.bind_output(s.get_outputs()[0].name, "cuda")
    s.run_with_iobinding(b)
    b.synchronize_outputs()
    t0 = time.perf_counter()
    for _ in range(n):
        s.run_with_iobinding(b)
    b.synchronize_outputs()
    return b.get_outputs()[0].numpy(), x.shape[0] * n / (time.perf_counter() - t0)


def compare(video: str, variants: Path, model: Path) -> None:
    x = frames(video, 48)[::3]  # 16 frames spread over the first 48
    rnd = np.random.default_rng(0).uniform(-1, 1, x.shape).astype(np.float32)
    ref = None
    for label, path in [("fp32", model)] + [(v, variants / f"det-{v}.onnx") for v in VARIANTS]:
        s = session(path)
        y16, fps16 = run(s, x, 4)
        _, fps1 = run(s, x[:1], 20)
        yr, _ = run(s, rnd)
        ref = y16 if ref is None else ref
        ok = ~np.isnan(y16)
        diff = float(np.abs(y16[ok] - ref[ok]).max()) if ok.any() else float("nan")
        bits = float(((y16 > 0.3) != (ref > 0.3)).mean())
        print(
            f"{label}: 1 row {fps1:6.1f}/s, 16 rows {fps16:6.1f}/s | NaN real {int(np.isnan(y16).sum())} "
            f"random {int(np.isnan(yr).sum())} | max|d| vs fp32 {diff:.4f}, bitmap pixels differing {bits:.2e}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?")
    ap.add_argument("--make", type=Path, help="write the variants into this folder and stop")
    ap.add_argument("--variants", type=Path, default=Path(".exp16"))
    ap.add_argument("--model", type=Path, default=Path("/tmp/models/PP-OCRv6_det_small.onnx"))
    a = ap.parse_args()
    if a.make:
        make(a.make, a.model)
    else:
        compare(a.video, a.variants, a.model)


if __name__ == "__main__":
    main()
