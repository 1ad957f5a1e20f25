"""int8 versions of ONNX models: ONNX Runtime static quantization (QDQ) with calibration tensors.

`quantize_qdq(src, dst, input_name, tensors)` writes `dst` (by convention `int8_path(src)`, which the
`models.<name>.onnxruntime.int8` switch loads). Calibration tensors are real model inputs, made by
edged's own preprocessing (scripts/quantize_models.py takes them from the sample video). A build-time
tool: it needs the `onnx` package (a dev dependency), runs in the caller's thread, and the daemon never
imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

INT8_SUFFIX = ".int8.onnx"


def int8_path(path: Path) -> Path:
    """Where the int8 version of model `path` lives: beside it, `<stem>.int8.onnx`."""
    return path.with_name(path.stem + INT8_SUFFIX)


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
