"""Frame-level cross-camera batching on the GPU path: three cameras' host frames go up once each, are
preprocessed in one kernel launch per batch, detected in one ONNX Runtime CUDA call, and each camera
reads its own text back through its own recognizer stage; the same frames read the same on the
CPU path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edged.chain.chain import Chain
from edged.chain.pipeline import Pipeline
from edged.chain.streammux import FrameBatcher
from edged.infer.base import EngineOptions
from edged.models import build_decoder, get_decoder
from edged.types import Frame, FrameResult
from tests._chain import SpyEngine, make_stage, run_cameras
from tests.gpu.test_ort_cuda import DET, REC, _text_image

pytestmark = pytest.mark.gpu


def test_cameras_batched_on_the_gpu_read_their_own_text(ort_cuda: Any, ppocr_models: Path) -> None:
    from edged.gpu import Pipeline as GpuLane
    from edged.gpu.preprocess import GpuPreprocessor
    from edged.infer.onnxruntime import OnnxRuntimeEngine
    from edged.infer.onnxruntime_cuda import OrtCudaEngine

    det = SpyEngine(OrtCudaEngine("det", ppocr_models / DET, EngineOptions()))
    rec = OrtCudaEngine("rec", ppocr_models / REC, EngineOptions())
    cpu_det = OnnxRuntimeEngine("det", ppocr_models / DET, EngineOptions(providers=("CPUExecutionProvider",)))
    cpu_rec = OnnxRuntimeEngine("rec", ppocr_models / REC, EngineOptions(providers=("CPUExecutionProvider",)))
    pre = GpuPreprocessor()
    spec = get_decoder("ppocr_det").default_preprocess
    mux = FrameBatcher(
        "det",
        det,
        build_decoder("ppocr_det", {}),
        spec,
        pre,
        max_batch=4,
        max_wait_ms=300,
        pad_to_max=True,
        thread_context=GpuLane("mux").active,
    )
    texts = {"north": ["EDGED 2026"], "south": ["AB 123 CD"], "east": ["GATE-01 OPEN"]}
    images = {c: _text_image(t) for c, t in texts.items()}
    results: dict[str, list[FrameResult]] = {c: [] for c in texts}
    pipes = {}
    for cam in texts:
        chain = Chain(
            [
                make_stage("ppocr_det", "det", det),
                make_stage("ppocr_rec", "rec", rec, on="det"),
            ]
        )
        for st in chain.stages:
            st.preprocessor = pre
        pipes[cam] = Pipeline(
            chain, results[cam].append, name=cam, thread_context=GpuLane(cam).active, batcher=mux
        )
    run_cameras(pipes, lambda cam, seq: images[cam], 2)
    mux.close()

    cpu_chain = Chain(
        [make_stage("ppocr_det", "det", cpu_det), make_stage("ppocr_rec", "rec", cpu_rec, on="det")]
    )
    for cam, want in texts.items():
        got = [[k.label for d in r.detections for k in d.children.get("rec", [])] for r in results[cam]]
        cpu = [
            k.label for d in cpu_chain.run(Frame(cam, 0, images[cam])).detections for k in d.children["rec"]
        ]
        print(f"{cam}: gpu batched {got}, cpu {cpu}")
        assert cpu == want, "the CPU reference misread: the comparison would be vacuous"
        assert got == [want, want], cam
    assert set(det.calls) == {4} and mux.frames == 6 and mux.batches == len(det.calls) < 6
