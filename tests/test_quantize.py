"""The int8 detector (edged.infer.quantize, ONNX Runtime static QDQ) made from the real PP-OCR model with
calibration frames from the sample video, selected by `onnxruntime.int8`, reads what the float one reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.config.inference import ModelConfig
from edged.config.loader import load_config
from edged.config.problems import ConfigError
from edged.demo.sample import make_sample
from edged.demo.truth import read_video
from edged.infer.quantize import int8_path, quantize_qdq
from edged.serving.loading import load_model
from edged.types import Frame
from tests.support.paths import need_models
from tests.support.versions import DET, reads_per_detector

pytest.importorskip("onnx")  # a dev dependency: making int8 models is a build-time step


def test_int8_detector_reads_the_same_plates_as_the_float_one(tmp_path: Path) -> None:
    models = need_models()
    det = tmp_path / "det.onnx"
    det.symlink_to(models / "PP-OCRv6_det_small.onnx")
    video = tmp_path / "plates.mp4"
    make_sample(video, frames=40, seed=7)
    frames = read_video(video)
    float_det = load_model("text_det", ModelConfig.model_validate({"path": det, **DET}))
    calib = [float_det.preprocessor.frame(Frame("c", i, frames[i]), float_det.spec)[0] for i in (0, 13, 26)]
    quantize_qdq(det, int8_path(det), float_det.engine.inputs[0].name, calib)
    assert int8_path(det).stat().st_size < 0.5 * (models / "PP-OCRv6_det_small.onnx").stat().st_size

    int8_cfg = ModelConfig.model_validate({"path": det, **DET, "onnxruntime": {"int8": True}})
    assert int8_cfg.model_file == tmp_path / "det.int8.onnx"
    int8_det = load_model("text_det", int8_cfg)
    checked = [i for i in range(1, 40, 4)]  # frames the calibration did not see
    reads = reads_per_detector([float_det, int8_det], models, frames, checked)
    assert sum(1 for r in reads[0] if r) >= 8  # the float chain reads plates on these frames
    assert reads[1] == reads[0]


def test_int8_switch_without_the_int8_file_is_a_located_config_error(tmp_path: Path) -> None:
    (tmp_path / "det.onnx").symlink_to(need_models() / "PP-OCRv6_det_small.onnx")
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(
        "models:\n  text_det:\n    path: det.onnx\n    kind: ppocr_det\n    onnxruntime: {int8: true}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    text = str(e.value)
    assert "models.text_det.path: model file not found" in text and "det.int8.onnx" in text, text
    assert "scripts/quantize_models.py" in text, text
