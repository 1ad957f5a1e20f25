"""Bring-your-own ONNX: preprocessing follows what the model declares (fixed size, NHWC, fp16).

The models are real ONNX files built here with the `onnx` package (a pooling graph: no weights needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edged.config.inference import ModelConfig
from edged.infer.base import ModelLoadError
from edged.serving.loading import load_model
from edged.types import Detection, Frame


def pooling_model(path: Path, shape: list[int | str], nhwc: bool = False, fp16: bool = False) -> Path:
    """input -> (NHWC: transpose) -> GlobalAveragePool -> [N, 3] 'class scores'."""
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    nodes = []
    src = "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        src = "xt"
    nodes += [
        helper.make_node("GlobalAveragePool", [src], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def load(path: Path, **extra: object) -> object:
    return load_model(
        "m",
        ModelConfig.model_validate(
            {"path": str(path), "kind": "classifier", "backend": "onnxruntime", **extra}
        ),
    )


def test_fixed_nchw_size_replaces_the_kind_default(tmp_path: Path) -> None:
    lm = load(pooling_model(tmp_path / "a.onnx", [1, 3, 96, 128]))
    assert lm.spec.size == (128, 96) and lm.spec.layout == "nchw"  # type: ignore[attr-defined]
    # And it really runs: a crop of a frame classified without shape errors.
    got: list = []
    frame = Frame("cam", 0, np.full((120, 160, 3), 200, np.uint8))
    quad = Detection("thing", 0.9, (10, 10, 60, 40)).quad()
    lm.server.submit_crops(frame, [quad], lambda rows, err: got.append((rows, err)))  # type: ignore[attr-defined]
    lm.close()  # type: ignore[attr-defined]
    ((rows, err),) = got
    assert err is None and len(rows) == 1 and len(rows[0]) == 1


def test_nhwc_and_fp16_inputs_are_detected(tmp_path: Path) -> None:
    lm = load(pooling_model(tmp_path / "b.onnx", [1, 64, 48, 3], nhwc=True, fp16=True))
    assert lm.spec.layout == "nhwc" and lm.spec.size == (48, 64) and lm.spec.dtype == "float16"  # type: ignore[attr-defined]


def test_dynamic_inputs_keep_the_configured_size(tmp_path: Path) -> None:
    lm = load(pooling_model(tmp_path / "c.onnx", ["n", 3, "h", "w"]), preprocess={"size": [200, 100]})
    assert lm.spec.size == (200, 100)  # type: ignore[attr-defined]


def test_config_contradicting_a_fixed_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError, match=r"models\.m\.preprocess\.size: \[300, 300\] does not match .* 128x96"
    ):
        load(pooling_model(tmp_path / "d.onnx", [1, 3, 96, 128]), preprocess={"size": [300, 300]})
