"""Precision as a build product (issue 28, item 1), the parts a CPU machine runs: which precision a
model gets where, the config's rules, and the shadow-checked swap on the CPU backend where it applies
(int8: the real detector quantized by edged.infer.quantize with frames of the sample video, shadow-
checked in a real `edged run` against fp32: switched with the default tolerance, refused with none).

The fp16 version for ONNX Runtime's CUDA provider and TensorRT's lower-precision plans go through the
same shadow check; they need a GPU: tests/gpu/test_precision_gpu.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.config.inference import ModelConfig
from edged.serving.precision import PrecisionState, plan_precision
from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, small_sample, stats, wait_until
from tests.support.paths import need_models


def plan(configured: str, *, device: str = "cpu", int8: bool = False, tmp: Path, **kw: object):  # type: ignore[no-untyped-def]
    f = tmp / "det.int8.onnx"
    if int8:
        f.write_bytes(b"x")
    args = {"backend": "onnxruntime", "switch": None, "trt_precision": "fp16", "background_build": False}
    args.update(kw)
    return plan_precision(configured, device=device, int8_file=f, **args)  # type: ignore[arg-type]


def test_precision_selection(tmp_path: Path) -> None:
    # CPU: fp32 unless an int8 version exists and int8 is asked for; fp16 never (slower there).
    assert plan("auto", tmp=tmp_path).target is None
    assert "slower" in plan("fp16", tmp=tmp_path).reason and plan("fp16", tmp=tmp_path).target is None
    assert (
        plan("int8", tmp=tmp_path).target is None and "quantize_models" in plan("int8", tmp=tmp_path).reason
    )
    p = plan("int8", int8=True, tmp=tmp_path)
    assert (p.target, p.source, p.path) == ("int8", "file", tmp_path / "det.int8.onnx")
    # The CUDA provider: fp16 built in the background by default, nothing for fp32.
    p = plan("auto", device="cuda", tmp=tmp_path)
    assert (p.serving, p.target, p.source) == ("fp32", "fp16", "build")
    assert plan("fp32", device="cuda", tmp=tmp_path).target is None
    made = tmp_path / "det.fp16.onnx"  # made by `edged make-fp16` elsewhere: used instead of a build
    made.write_bytes(b"x")
    p = plan("auto", device="cuda", fp16_file=made, tmp=tmp_path)
    assert (p.target, p.source, p.path) == ("fp16", "file", made)
    # TensorRT beside ONNX Runtime: its own build's flags, shadow-checked unless fp32.
    p = plan("auto", device="cuda", background_build=True, tmp=tmp_path)
    assert (p.target, p.source) == ("fp16", "tensorrt")
    assert (
        plan("fp32", device="cuda", background_build=True, trt_precision="fp32", tmp=tmp_path).target is None
    )
    # A version loaded by its switch is served as it is.
    p = plan("auto", device="cuda", switch="fp16", tmp=tmp_path)
    assert (p.serving, p.target) == ("fp16", None)
    state = PrecisionState(plan("auto", device="cuda", tmp=tmp_path))
    assert state.as_dict()["state"] == "building"
    state.record("shadow_started")
    state.record("refused", "frame 3: score drifted")
    assert state.as_dict() == {
        "configured": "auto",
        "serving": "fp32",
        "target": "fp16",
        "state": "refused",
        "reason": "frame 3: score drifted",
    }


def test_precision_settings_that_contradict_each_other_are_refused(tmp_path: Path) -> None:
    base = {"path": tmp_path / "m.onnx", "kind": "ppocr_det"}
    with pytest.raises(ValueError, match="both choose the model's precision"):
        ModelConfig.model_validate({**base, "precision": "int8", "onnxruntime": {"fp16": True}})
    with pytest.raises(ValueError, match="disagree"):
        ModelConfig.model_validate({**base, "precision": "fp32", "tensorrt": {"precision": "fp16"}})
    assert ModelConfig.model_validate({**base, "precision": "fp32"}).trt_precision == "fp32"
    assert ModelConfig.model_validate(base).trt_precision == "fp16"  # TensorRT's own default


def test_int8_on_the_cpu_is_shadow_checked_then_switched_or_refused(tmp_path: Path) -> None:
    pytest.importorskip("onnx")  # quantizing is a build-time step (a dev dependency)
    from edged.demo.sample import make_sample
    from edged.demo.truth import read_video
    from edged.infer.quantize import int8_path, quantize_qdq
    from edged.serving.loading import load_model
    from edged.types import Frame
    from tests.support.versions import DET

    models = need_models()
    det = tmp_path / "det.onnx"
    det.symlink_to(models / "PP-OCRv6_det_small.onnx")
    calib_video = tmp_path / "calib.mp4"
    make_sample(calib_video, frames=14, seed=7, size=(320, 240))
    frames = read_video(calib_video)
    small = {**DET, "preprocess": {"limit_side": 320, "limit_type": "max"}}
    fp32 = load_model("det", ModelConfig.model_validate({"path": det, **small}))
    try:
        calib = [fp32.preprocessor.frame(Frame("c", i, frames[i]), fp32.spec)[0] for i in (0, 13)]
        quantize_qdq(det, int8_path(det), fp32.engine.inputs[0].name, calib)
    finally:
        fp32.close()

    health = free_port()
    video = small_sample(tmp_path)
    model = {
        "path": str(det),
        **small,
        "precision": "int8",
        "onnxruntime": {"intra_op_threads": 1, "inter_op_threads": 1},
        "tensorrt": {"cache_dir": str(tmp_path / "engines")},
    }
    cfg = {
        "device": {"name": "prec"},
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"enabled": False},
        "health": {"port": health},
        "models": {
            "det_a": {**model, "update": {"shadow_frames": 4}},
            # No score may move at all: int8 moves them, so this one must be refused.
            "det_b": {**model, "update": {"shadow_frames": 4, "max_score_drift": 0.0}},
        },
        "cameras": {
            name: {
                "source": f"file://{video}",
                "loop": True,
                "fps": 5,
                "chain": [{"model": model_name, "min_score": 0.3}],
            }
            for name, model_name in (("a", "det_a"), ("b", "det_b"))
        },
    }
    config = tmp_path / "edged.yaml"
    config.write_text(json.dumps(cfg))
    proc = EdgedProcess(config)
    got: dict[str, dict] = {}

    def decided() -> bool:
        models_now = stats(health).get("models", {})
        got.update({n: models_now.get(n, {}).get("precision", {}) for n in ("det_a", "det_b")})
        return all(got[n].get("state") in ("switched", "refused", "failed") for n in got)

    try:
        assert wait_until(decided, 120), (got, proc.text()[-3000:])
        assert proc.stop() == 0
    finally:
        proc.kill()
    a, b = got["det_a"], got["det_b"]
    assert a["state"] == "switched" and a["serving"] == "int8" and a["configured"] == "int8", a
    assert b["state"] == "refused" and b["serving"] == "fp32" and "drifted" in b["reason"], b
    log = proc.text()
    assert "model det_a: switched det.int8.onnx@" in log, log[-3000:]
    assert "model det_b: refused det.int8.onnx@" in log
    assert "Traceback" not in log
