"""ONNX Runtime CUDA EP with IO binding vs the CPU engine on the real PP-OCR models, and the PP-OCR
chain det -> crop -> cls -> rec on the GPU path (kernel preprocessing, device inputs, GPU CTC argmax)
reading the same strings as the CPU path, with the bus traffic asserted through the byte counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.gpu.kernels import ITEM_DTYPE
from edged.infer.base import EngineOptions
from edged.preprocess.cpu import preprocess_crops, preprocess_frame
from edged.preprocess.spec import PreprocessSpec, upright_quad
from edged.types import Frame

pytestmark = pytest.mark.gpu

DET, CLS, REC = "PP-OCRv6_det_small.onnx", "ch_ppocr_mobile_v2.0_cls_mobile.onnx", "PP-OCRv6_rec_small.onnx"


def _text_image(lines: list[str], size: tuple[int, int] = (640, 480)) -> np.ndarray:
    import cv2

    fonts = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX]
    w, h = size
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    step = h // (len(lines) + 1)
    for i, text in enumerate(lines):
        cv2.putText(
            img, text, (40 + 20 * i, step * (i + 1) + 20), fonts[i % 3], 1.5, (0, 0, 0), 3, cv2.LINE_AA
        )
    return img


IMAGES = [["EDGED 2026", "GATE-01 OPEN"], ["AB 123 CD", "hello world", "7429"], ["NVIDIA JETSON"]]


@pytest.fixture(scope="module")
def engines(ort_cuda: Any, ppocr_models: Path) -> dict[str, Any]:
    from edged.infer.onnxruntime import OnnxRuntimeEngine
    from edged.infer.onnxruntime_cuda import OrtCudaEngine

    out: dict[str, Any] = {}
    for name in (DET, CLS, REC):
        out[f"cpu:{name}"] = OnnxRuntimeEngine(
            name, ppocr_models / name, EngineOptions(providers=("CPUExecutionProvider",))
        )
        out[f"gpu:{name}"] = OrtCudaEngine(name, ppocr_models / name, EngineOptions())
    return out


def test_backend_factory_picks_cuda_engine(engines: dict[str, Any], ppocr_models: Path) -> None:
    from edged.infer.factory import create_engine
    from edged.infer.onnxruntime_cuda import OrtCudaEngine

    eng = create_engine("det", ppocr_models / CLS, backend="onnxruntime")
    assert isinstance(eng, OrtCudaEngine) and eng.info.device == "cuda"
    assert eng.session.get_providers()[0] == "CUDAExecutionProvider"


def test_det_and_rec_outputs_match_cpu_engine(engines: dict[str, Any]) -> None:
    from edged.gpu.buffers import DeviceTensor

    image = _text_image(IMAGES[0])
    det_spec = PreprocessSpec(
        resize="limit_side", limit_side=736, color="bgr", mean=(0.5,) * 3, std=(0.5,) * 3
    )
    x, _ = preprocess_frame(image, det_spec)
    cpu = engines[f"cpu:{DET}"].infer({"x": x})
    gpu = engines[f"gpu:{DET}"].infer({"x": x})  # host input: ORT uploads it
    name = next(iter(cpu))
    d_host = float(np.abs(cpu[name] - gpu[name]).max())
    # Same input bound from device memory: identical to the host-input run.
    import pycuda.driver as cuda

    dev = cuda.mem_alloc(x.nbytes)
    cuda.memcpy_htod(dev, x)
    gpu_dev = engines[f"gpu:{DET}"].infer({"x": DeviceTensor(int(dev), x.shape, x.dtype, owner=dev)})
    d_dev = float(np.abs(gpu_dev[name] - gpu[name]).max())
    print(f"det prob map: max |CUDA - CPU| = {d_host:.5f}; device-bound vs host-bound input: {d_dev:.6f}")
    assert d_host <= 0.03 and d_dev <= 1e-5

    quads = [np.array([[30, 40], [330, 40], [330, 100], [30, 100]], np.float32)]
    rec_spec = PreprocessSpec(
        resize="fixed_height",
        size=(2048, 48),
        color="bgr",
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        pad_value=127.5,
        pad_align="top_left",
    )
    xr, _ = preprocess_crops(image, quads * 3, rec_spec)
    rc = engines[f"cpu:{REC}"].infer({"x": xr})
    rg = engines[f"gpu:{REC}"].infer({"x": xr})
    rn = next(iter(rc))
    d_rec = float(np.abs(rc[rn] - rg[rn]).max())
    same_argmax = float(np.mean(rc[rn].argmax(-1) == rg[rn].argmax(-1)))
    print(f"rec scores {rc[rn].shape}: max |CUDA - CPU| = {d_rec:.5f}; argmax agreement {same_argmax:.4f}")
    assert d_rec <= 0.05 and same_argmax >= 0.99


def test_gpu_ctc_argmax_matches_numpy(engines: dict[str, Any]) -> None:
    from edged.gpu.postprocess import ctc_best

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3, 48, 400)).astype(np.float32)
    out = engines[f"gpu:{REC}"].infer_device({"x": x})
    dev = next(iter(out.values()))
    host = dev.to_host()
    idx, conf = ctc_best(dev)
    assert np.array_equal(idx, host.argmax(-1))
    assert np.allclose(conf, host.max(-1))


def test_threshold_mask_matches_numpy(gpu: Any) -> None:
    import pycuda.driver as cuda

    from edged.gpu.buffers import DeviceTensor
    from edged.gpu.postprocess import threshold_mask

    prob = np.random.default_rng(1).random((1, 1, 737, 1001)).astype(np.float32)
    dev = cuda.mem_alloc(prob.nbytes)
    cuda.memcpy_htod(dev, prob)
    mask = threshold_mask(DeviceTensor(int(dev), prob.shape, prob.dtype, owner=dev), 0.3)
    assert np.array_equal(mask, prob > 0.3)


def test_quantize_u8_matches_numpy_and_keeps_the_threshold(gpu: Any) -> None:
    import pycuda.driver as cuda

    from edged.gpu.buffers import DeviceTensor
    from edged.gpu.postprocess import quantize_u8_device

    rng = np.random.default_rng(2)
    prob = rng.random((3, 1, 737, 1001)).astype(np.float32)
    prob[0, 0, 0, :4] = [-0.5, 1.5, 0.3, 76.5 / 255]  # clamped, clamped, at the threshold, a rounding tie
    dev = cuda.mem_alloc(prob.nbytes)
    cuda.memcpy_htod(dev, prob)
    stream = cuda.Stream()
    q = quantize_u8_device(DeviceTensor(int(dev), prob.shape, prob.dtype, owner=dev, stream=stream), rows=2)
    assert q.shape == (2, 1, 737, 1001) and q.dtype == np.uint8
    host = q.to_host()
    want = np.rint(np.clip(prob[:2], 0, 1) * 255).astype(np.uint8)
    assert np.abs(host.astype(int) - want).max() <= 1  # float rounding at .5 may differ by one step
    assert np.mean(host == want) > 0.9999
    # The decoder's threshold on bytes (t * 255) selects the pixels the float threshold selects.
    assert np.mean((host > 0.3 * 255) == (prob[:2] > 0.3)) > 0.9999


def _gpu_read(
    engines: dict[str, Any], pre: Any, decoders: dict[str, Any], frame: Frame, lane: Any
) -> list[str]:
    """The GPU path, wired the way the chain wires it: device tensors in, small results out, all on
    `lane` (the engines were given it too)."""
    from edged.gpu.postprocess import ctc_best

    det_in, det_plan = pre.frame(frame, decoders["det"].default_preprocess, lane)
    det_out = engines[f"gpu:{DET}"].infer({engines[f"gpu:{DET}"].inputs[0].name: det_in})
    boxes = decoders["det"].decode(det_out, [det_plan])[0]
    quads = [upright_quad(d.quad()) for d in boxes]
    if not quads:
        return []
    cls_in, cls_plans = pre.crops(frame, quads, decoders["cls"].default_preprocess, lane)
    angles = [
        r[0].attrs["angle"]
        for r in decoders["cls"].decode(
            engines[f"gpu:{CLS}"].infer({engines[f"gpu:{CLS}"].inputs[0].name: cls_in}), cls_plans
        )
    ]
    quads = [upright_quad(q, rotate_tall=False, flip=a == 180) for q, a in zip(quads, angles, strict=True)]
    rec_in, _ = pre.crops(frame, quads, decoders["rec"].default_preprocess, lane)
    scores = next(
        iter(engines[f"gpu:{REC}"].infer_device({engines[f"gpu:{REC}"].inputs[0].name: rec_in}).values())
    )
    idx, conf = ctc_best(scores, lane)
    table = decoders["rec"].table(scores.shape[2])
    texts = []
    for i in range(idx.shape[0]):
        keep = np.ones(idx.shape[1], bool)
        keep[1:] = idx[i, 1:] != idx[i, :-1]
        keep &= idx[i] != 0
        text = "".join(table[idx[i][keep]])
        score = float(conf[i][keep].mean()) if keep.any() else 0.0
        texts.append(text if score >= 0.5 else "")
    return texts


def test_ppocr_chain_gpu_reads_same_as_cpu(
    engines: dict[str, Any], ppocr_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edged.infer.onnxruntime_cuda as ort_cuda
    from edged.decoders.registry import build_decoder
    from edged.gpu.context import GpuLane, gpu_thread
    from edged.gpu.preprocess import GpuPreprocessor
    from edged.infer.onnxruntime_cuda import OrtCudaEngine
    from edged.observability.metrics import Metrics
    from tests.support.models import OcrChain

    # The reference: CPU preprocessing and ONNX Runtime on the CPU (the backend factory would pick CUDA).
    with monkeypatch.context() as m:
        m.setattr(ort_cuda, "cuda_unavailable_reason", lambda: "CPU reference")
        m.setattr(ort_cuda._host, "default_providers", lambda: ["CPUExecutionProvider"])
        cpu_chain = OcrChain.load(ppocr_models)
    assert cpu_chain.det.engine.info.device == "cpu"
    decoders = {
        "det": build_decoder("ppocr_det", {}),
        "cls": build_decoder("ppocr_cls", {}),
        "rec": build_decoder("ppocr_rec", {}, metadata=engines[f"gpu:{REC}"].metadata),
    }
    pre = GpuPreprocessor()
    metrics = Metrics()
    # The lane the chain runs on; its engines are given it, as a model server gives its engine its own,
    # so their downloads are counted on it too.
    pipe = GpuLane("ocr", metrics=metrics)
    gpu_engines = {
        f"gpu:{name}": OrtCudaEngine(name, ppocr_models / name, EngineOptions(), pipe)
        for name in (DET, CLS, REC)
    }
    try:
        for seq, lines in enumerate(IMAGES):
            image = _text_image(lines)
            cpu_texts = [t.label for _, t, _ in cpu_chain.read(image)]
            h2d0, d2h0 = pipe.h2d, pipe.d2h
            with gpu_thread():
                gpu_texts = _gpu_read(gpu_engines, pre, decoders, Frame("ocr", seq, image), pipe)
            h2d, d2h = pipe.h2d - h2d0, pipe.d2h - d2h0
            print(
                f"image {seq}: cpu {cpu_texts} gpu {gpu_texts}; h2d {h2d} B (frame {image.nbytes} B), d2h {d2h} B"
            )
            assert any(cpu_texts), "the CPU reference read nothing: the comparison would be vacuous"
            assert gpu_texts == cpu_texts
            # Traffic: the raw frame once + kernel parameters (one Item per image) up; results down: the det
            # map, cls scores, and per-step (class, score) of the recognizer instead of its [N, T, 18710] scores.
            n = len(gpu_texts)
            assert image.nbytes <= h2d <= image.nbytes + ITEM_DTYPE.itemsize * (1 + 2 * n)
            assert d2h < 4 * 1024 * 1024
    finally:
        for engine in gpu_engines.values():
            engine.close()
        pipe.close()
