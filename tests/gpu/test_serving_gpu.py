"""Model servers on the GPU path: three cameras' host frames go up once each, every batch is one kernel
launch and one ONNX Runtime CUDA call on the server's own stream, for the detector and the recognizer
alike, and each camera reads its own text back; the same frames read the same through CPU servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edged.infer.base import EngineOptions
from tests.gpu.test_ort_cuda import DET, REC, _text_image
from tests.support.chain import Camera, make_stage, reads_by_frame, run_cameras, serve, spy_of

pytestmark = pytest.mark.gpu


def test_cameras_batched_on_the_gpu_read_their_own_text(ort_cuda: Any, ppocr_models: Path) -> None:
    from edged.gpu.context import GpuLane
    from edged.gpu.preprocess import GpuPreprocessor
    from edged.infer.onnxruntime import OnnxRuntimeEngine
    from edged.infer.onnxruntime_cuda import OrtCudaEngine

    lanes = {k: GpuLane(f"model-{k}") for k in ("det", "rec")}
    pre = GpuPreprocessor()
    gpu = {
        k: serve(
            kind,
            OrtCudaEngine(k, ppocr_models / path, EngineOptions(), lanes[k]),
            max_wait_ms=300,
            pad_to_max=k == "det",
            preprocessor=pre,
            lane=lanes[k],
            source_sizes=[(640, 480)],
        )
        for k, kind, path in (("det", "ppocr_det", DET), ("rec", "ppocr_rec", REC))
    }
    cpu = {
        k: serve(
            kind,
            OnnxRuntimeEngine(k, ppocr_models / path, EngineOptions(providers=("CPUExecutionProvider",))),
        )
        for k, kind, path in (("det", "ppocr_det", DET), ("rec", "ppocr_rec", REC))
    }
    texts = {"north": ["EDGED 2026"], "south": ["AB 123 CD"], "east": ["GATE-01 OPEN"]}
    images = {c: _text_image(t) for c, t in texts.items()}
    cams = {
        c: Camera(c, [make_stage("det", gpu["det"]), make_stage("rec", gpu["rec"], on="det")]) for c in texts
    }
    warm = {k: (lane.d2h, gpu[k].rows) for k, lane in lanes.items()}  # the warm-up's downloads
    try:
        run_cameras(cams, lambda cam, seq: images[cam], 2)
        for cam, want in texts.items():
            ref = Camera(cam, [make_stage("det", cpu["det"]), make_stage("rec", cpu["rec"], on="det")])
            (cpu_read,) = reads_by_frame(ref.run([images[cam]]))
            got = reads_by_frame(cams[cam].results)
            print(f"{cam}: gpu batched {got}, cpu {cpu_read}")
            assert cpu_read[1] == want, "the CPU reference misread: the comparison would be vacuous"
            assert got == [(0, want), (1, want)], cam
    finally:
        for s in (*gpu.values(), *cpu.values()):
            s.close()
    det = spy_of(gpu["det"])
    assert set(det.calls) == {4} and gpu["det"].rows == 6 and gpu["det"].batches == len(det.calls) < 6
    assert max(spy_of(gpu["rec"]).calls) > 1  # crops of several cameras shared a recognizer call
    assert lanes["det"].h2d > 0 and lanes["det"].d2h > 0  # bytes counted on the servers' own lanes
    # Reduced on the device before the download: the detector map as one byte per pixel of the
    # real rows only (not 4 bytes, no padding rows), the recognizer's best class + score per step.
    det_w, det_h = det.shapes[0][3], det.shapes[0][2]
    assert lanes["det"].d2h - warm["det"][0] == (gpu["det"].rows - warm["det"][1]) * det_w * det_h
    rec = spy_of(gpu["rec"])
    rec_rows = gpu["rec"].rows - warm["rec"][1]
    assert 0 < lanes["rec"].d2h - warm["rec"][0] < rec_rows * 8 * rec.shapes[-1][3]  # T < input width
