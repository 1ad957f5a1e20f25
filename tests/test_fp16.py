"""The fp16 detector (edged.infer.quantize.convert_fp16) made from the real PP-OCR model keeps its spatial
means in float32 and its float32 inputs and outputs, halves the file, and, selected by
`onnxruntime.fp16`, reads what the float one reads (on the CPU provider here: the speed-up is a GPU one,
tests/gpu/test_fp16_cuda.py checks the CUDA provider); the config refuses int8 with fp16 and names a
missing fp16 file with the command that makes it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.config.inference import ModelConfig
from edged.config.loader import load_config
from edged.config.problems import ConfigError
from edged.demo.sample import make_sample
from edged.demo.truth import read_video
from edged.infer.factory import create_engine
from edged.infer.quantize import FP16_KEEP_FP32, convert_fp16, fp16_path
from edged.serving.loading import load_model
from edged.types import Frame
from tests.support.paths import need_models
from tests.support.versions import DET, reads_per_detector

FLOAT = "PP-OCRv6_det_small.onnx"


@pytest.fixture(scope="module")
def fp16_det(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`det.onnx` (the real detector) with its fp16 version `det.fp16.onnx` beside it."""
    pytest.importorskip("onnx")  # a dev dependency: making fp16 models is a build-time step
    det = tmp_path_factory.mktemp("fp16") / "det.onnx"
    det.symlink_to(need_models() / FLOAT)
    convert_fp16(det, fp16_path(det))
    return det


def _elem_types(model: Any) -> dict[str, int]:
    """Element type of every tensor of the graph (shape inference fills in the intermediate ones)."""
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph
    types = {t.name: t.data_type for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        types[v.name] = v.type.tensor_type.elem_type
    return types


def test_fp16_graph_keeps_spatial_means_and_io_in_float32(fp16_det: Path) -> None:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(fp16_path(fp16_det)))
    types = _elem_types(model)
    g = model.graph
    assert [types[v.name] for v in [*g.input, *g.output]] == [TensorProto.FLOAT] * 2
    means = [n for n in g.node if n.op_type in FP16_KEEP_FP32]
    assert {n.op_type for n in means} == {"ReduceMean", "GlobalAveragePool"} and len(means) == 13
    for n in means:
        assert types[n.input[0]] == types[n.output[0]] == TensorProto.FLOAT, n.name
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in convs)
    # Float16 weights: the file is about half the float one.
    assert fp16_path(fp16_det).stat().st_size < 0.55 * (need_models() / FLOAT).stat().st_size


def test_fp16_detector_reads_the_same_plates_as_the_float_one(
    fp16_det: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = need_models()
    video = tmp_path / "plates.mp4"
    make_sample(video, frames=24, seed=7)
    frames = read_video(video)
    float_det = load_model("text_det", ModelConfig.model_validate({"path": fp16_det, **DET}))
    fp16_cfg = ModelConfig.model_validate({"path": fp16_det, **DET, "onnxruntime": {"fp16": True}})
    assert fp16_cfg.model_file == fp16_path(fp16_det)  # config and edged.infer.quantize agree
    with caplog.at_level(logging.WARNING, logger="edged.serving.loading"):
        half_det = load_model("text_det", fp16_cfg)
    # Loaded on the CPU provider: said once, and it still loads.
    said = [r.getMessage() for r in caplog.records if "onnxruntime.fp16" in r.getMessage()]
    assert len(said) == 1 and "CPUExecutionProvider" in said[0], said
    assert half_det.engine.inputs[0].dtype == half_det.engine.outputs[0].dtype == "float32"

    # The probability maps, from engines of their own (a loaded model's engine is its server's).
    x = float_det.preprocessor.frame(Frame("t", 5, frames[5]), float_det.spec)[0]
    engines = [create_engine("det", f, "onnxruntime") for f in (fp16_det, fp16_path(fp16_det))]
    prob = [next(iter(e.infer({e.inputs[0].name: x}).values())) for e in engines]
    assert not np.isnan(prob[1]).any()
    assert float(np.abs(prob[1] - prob[0]).max()) < 0.02  # 0.005 measured; the CPU provider upcasts
    assert float(np.mean((prob[1] > 0.3) != (prob[0] > 0.3))) < 1e-3  # the decoder's bitmap threshold

    reads = reads_per_detector([float_det, half_det], models, frames, list(range(1, 24, 3)))
    for lm in (float_det, half_det):
        lm.close()
    assert sum(1 for r in reads[0] if r) >= 6  # the float chain reads plates on these frames
    assert reads[1] == reads[0]


def _config(tmp_path: Path, onnxruntime: str) -> Path:
    (tmp_path / "det.onnx").symlink_to(need_models() / FLOAT)
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(
        f"models:\n  text_det:\n    path: det.onnx\n    kind: ppocr_det\n    onnxruntime: {{{onnxruntime}}}\n"
    )
    return cfg


def test_int8_with_fp16_is_one_located_config_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "int8: true, fp16: true")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert [str(p) for p in e.value.problems] == [
        f"{cfg}:5:5: models.text_det.onnxruntime: int8 and fp16 are both true: a model loads one version "
        "of its file (int8 for CPUs, fp16 for the CUDA provider); set one of them to false"
    ]


def test_fp16_switch_without_the_fp16_file_is_a_located_error_and_its_command_fixes_it(
    tmp_path: Path,
) -> None:
    """The error names the command that makes the file; running that command (the real CLI, in a
    subprocess) makes the config load."""
    pytest.importorskip("onnx")
    cfg = _config(tmp_path, "fp16: true")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    text = str(e.value)
    assert "models.text_det.path: model file not found" in text and "det.fp16.onnx" in text, text
    command = f"edged make-fp16 {tmp_path / 'det.onnx'}"
    assert f"(make it with {command}, or set onnxruntime.fp16: false)" in text, text
    assert len(e.value.problems) == 1, text
    run = [sys.executable, "-m", *command.split()]
    made = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"{tmp_path / 'det.fp16.onnx'}: written") and made.stderr == ""
    assert load_config(cfg).models["text_det"].model_file == tmp_path / "det.fp16.onnx"
    again = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "exists, kept" in again.stdout


def test_make_fp16_of_a_file_that_is_not_a_model_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "camera.onnx"
    bad.write_text("not a model")
    made = subprocess.run(
        [sys.executable, "-m", "edged", "make-fp16", str(bad), str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = made.stderr.strip().splitlines()
    assert made.returncode == 1 and len(lines) == 2, made.stderr
    assert "is not an ONNX model" in lines[0] and "model file not found" in lines[1]
    assert "Traceback" not in made.stderr and not (tmp_path / "camera.fp16.onnx").exists()
