"""Smaller-precision versions of ONNX models, made at build time beside the float model:

- int8 (`quantize_qdq`, `<stem>.int8.onnx`, loaded with `models.<name>.onnxruntime.int8`): ONNX Runtime
  static quantization (QDQ) calibrated on real model inputs made by edged's own preprocessing
  (scripts/quantize_models.py takes them from the sample video); faster on CPUs.
- fp16 (`convert_fp16`, `<stem>.fp16.onnx`, loaded with `models.<name>.onnxruntime.fp16`): weights and
  activations in float16 except the operators in `FP16_KEEP_FP32`, with float32 inputs and outputs (so
  preprocessing and decoding are unchanged); faster on ONNX Runtime's CUDA provider, not on CPUs.

A build-time tool: it needs the `onnx` package (a dev dependency), runs in the caller's thread, and the
daemon never imports it. The suffixes are repeated in edged.config.inference (config and infer are
sibling layers), and tests/test_quantize.py and tests/test_fp16.py check the two agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

INT8_SUFFIX = ".int8.onnx"
FP16_SUFFIX = ".fp16.onnx"

# Operators the fp16 conversion leaves in float32, besides the converter's DEFAULT_OP_BLOCK_LIST. The
# PP-OCR detector's spatial means (ReduceMean over axes [2, 3], GlobalAveragePool) overflow float16 at
# large inputs: converted with everything in fp16 it gave NaN in every output pixel at 1088x1920 on the
# CUDA provider (H200, onnxruntime-gpu 1.31.1, 2026-11-30; the CPU provider upcasts, so it hid this).
# Keeping these two in fp32 removed the NaN and kept the speed-up (271 vs 208 calls/s at 1 row);
# keeping Erf, Div, Sigmoid, ConvTranspose and Resize too lost it (223/s). docs/benchmarks.md.
FP16_KEEP_FP32 = ("ReduceMean", "GlobalAveragePool")


def int8_path(path: Path) -> Path:
    """Where the int8 version of model `path` lives: beside it, `<stem>.int8.onnx`."""
    return path.with_name(path.stem + INT8_SUFFIX)


def fp16_path(path: Path) -> Path:
    """Where the fp16 version of model `path` lives: beside it, `<stem>.fp16.onnx`."""
    return path.with_name(path.stem + FP16_SUFFIX)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over prepared input tensors."""

    def __init__(self, name: str, tensors: Sequence[np.ndarray]) -> None:
        self._it: Iterator[np.ndarray] = iter(tensors)
        self.name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        t = next(self._it, None)
        return None if t is None else {self.name: t}


def quantize_qdq(src: Path, dst: Path, input_name: str, tensors: Sequence[np.ndarray]) -> None:
    """Static QDQ quantization of `src` into `dst`: int8 per-channel weights, uint8 activations with
    MinMax ranges calibrated on `tensors` (inputs of `input_name`)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not tensors:
        raise ValueError(f"no calibration inputs for {src.name}")
    pre, opset13 = dst.with_suffix(".pre.onnx"), dst.with_suffix(".op13.onnx")
    model = onnx.load(str(src))
    if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
        # Per-channel QDQ (DequantizeLinear with `axis`) needs opset 13; the bundled models are opset 11.
        model = version_converter.convert_version(model, 13)
    onnx.save(model, str(opset13))
    try:
        quant_pre_process(str(opset13), str(pre), skip_symbolic_shape=True)  # sympy is not a dependency
        quantize_static(
            str(pre),
            str(dst),
            _Reader(input_name, tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        pre.unlink(missing_ok=True)
        opset13.unlink(missing_ok=True)


def convert_fp16(src: Path, dst: Path, keep_fp32: Sequence[str] = FP16_KEEP_FP32) -> None:
    """Write the fp16 version of `src` to `dst`: float16 weights and activations, except the operators
    of the converter's default block list and `keep_fp32`, which compute in float32 behind Casts; float32
    inputs and outputs (keep_io_types), so edged feeds and decodes it as it does the float model."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep_fp32]
    )
    tmp = dst.with_suffix(".tmp")
    try:
        onnx.save(converted, str(tmp))
        tmp.replace(dst)  # a half-written file never takes the name edged loads
    finally:
        tmp.unlink(missing_ok=True)
