"""GPU benchmark, side by side in one run on the same frames (needs pycuda + a CUDA GPU):

(a) fused preprocessing kernel vs CPU OpenCV (cv2.resize + copyMakeBorder + cvtColor + normalize +
    transpose) on a 1080p BGR frame, to a 640x640 YOLO letterbox and to the PP-OCR det size
    (short side 736 -> 1312x736); and vs the DRAM roofline: (source + output bytes) / kernel time
    compared with a measured device-to-device copy bandwidth (bytes read + written);
(b) the cv2.cuda path vs the fused kernel (same frames, same stream);
(c) ONNX Runtime CUDA engine-only throughput (IO binding, device inputs) for PP-OCR det and rec.

GPU times: CUDA events around many back-to-back launches after a warm-up. CPU times: median of runs.
Usage: python scripts/bench_gpu.py [--models .models] [--out bench.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.preprocess.cpu import preprocess_frame  # noqa: E402
from edged.preprocess.spec import PreprocessSpec, plan_frame  # noqa: E402
from edged.types import Frame  # noqa: E402

HALF = (0.5, 0.5, 0.5)
SPECS = {
    "yolo 640x640 letterbox": PreprocessSpec(resize="letterbox", size=(640, 640), pad_value=114, color="rgb"),
    "ppocr det 1312x736": PreprocessSpec(
        resize="limit_side", limit_side=736, color="bgr", mean=HALF, std=HALF
    ),
}


def cpu_opencv(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The usual hand-written CPU preprocessing (what edged replaces), tight: no Python loops."""
    import cv2

    plan = plan_frame(spec, img.shape[1], img.shape[0])
    x, y, cw, ch = plan.content
    r = cv2.resize(img, (cw, ch), interpolation=cv2.INTER_LINEAR)
    if (cw, ch) != (plan.out_w, plan.out_h):
        v = float(spec.pad_value)
        r = cv2.copyMakeBorder(
            r, y, plan.out_h - ch - y, x, plan.out_w - cw - x, cv2.BORDER_CONSTANT, value=(v, v, v)
        )
    if spec.color == "rgb":
        r = cv2.cvtColor(r, cv2.COLOR_BGR2RGB)
    a, b = spec.scale_bias
    f = r.astype(np.float32) * a + b
    return np.ascontiguousarray(f.transpose(2, 0, 1)[None])


def cpu_time(fn: Callable[[], Any], n: int = 30) -> float:
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


_SPIN: list[Any] = []


def _spin(stream: Any, ms: float) -> None:
    """Keep the GPU busy for `ms` so the host can enqueue the timed launches ahead of execution: the
    events then time back-to-back GPU work, not Python's launch overhead."""
    import pycuda.driver as cuda
    from pycuda.compiler import SourceModule

    if not _SPIN:
        mod = SourceModule(
            "__global__ void spin(long long c) { long long t = clock64(); while (clock64() - t < c) {} }"
        )
        _SPIN.append((mod, mod.get_function("spin")))
    clock_khz = cuda.Context.get_device().get_attribute(cuda.device_attribute.CLOCK_RATE)
    _SPIN[0][1](np.int64(clock_khz * ms), block=(1, 1, 1), grid=(1, 1), stream=stream)


def gpu_time(fn: Callable[[], Any], stream: Any, n: int = 300, warmup: int = 20) -> float:
    """ms per call: the lower of two CUDA-event timings of n back-to-back enqueues on `stream`, one queued
    behind a spin (pure GPU time, unless a call syncs the host) and one plain (includes launch overhead)."""
    return min(_events_time(fn, stream, n, warmup, spin=True), _events_time(fn, stream, n, 0, spin=False))


def _events_time(fn: Callable[[], Any], stream: Any, n: int, warmup: int, spin: bool) -> float:
    import pycuda.driver as cuda

    for _ in range(warmup):
        fn()
    stream.synchronize()
    start, end = cuda.Event(), cuda.Event()
    if spin:
        _spin(stream, 300.0)
    start.record(stream)
    for _ in range(n):
        fn()
    end.record(stream)
    end.synchronize()
    return start.time_till(end) / n


def d2d_bandwidth(stream: Any) -> float:
    """GB/s of a 512 MiB device-to-device copy, counting bytes read + written."""
    import pycuda.driver as cuda

    n = 512 << 20
    a, b = cuda.mem_alloc(n), cuda.mem_alloc(n)
    ms = gpu_time(lambda: cuda.memcpy_dtod_async(b, a, n, stream), stream, n=20, warmup=3)
    a.free()
    b.free()
    return 2 * n / (ms * 1e-3) / 1e9


def ocr_chain_bench(models: Path, pre: Any) -> list[str]:
    """(d) PP-OCR det -> cls -> rec per frame on a 640x480 text image: edged's GPU path (kernel
    preprocessing, device tensors, GPU CTC argmax) vs CPU preprocessing + the same CUDA engines with
    host I/O (how the peer runs). DB box extraction runs on the CPU in both."""
    import cv2

    from edged.decoders.registry import build_decoder
    from edged.gpu.context import GpuLane, gpu_thread
    from edged.gpu.postprocess import ctc_best
    from edged.infer.base import EngineOptions
    from edged.infer.onnxruntime_cuda import OrtCudaEngine
    from edged.preprocess.cpu import preprocess_crops
    from edged.preprocess.spec import upright_quad

    img = np.full((480, 640, 3), 255, np.uint8)
    for i, t in enumerate(["EDGED 2026", "GATE-01 OPEN", "AB 123 CD"]):
        cv2.putText(
            img, t, (40 + 20 * i, 120 * (i + 1)), cv2.FONT_HERSHEY_DUPLEX, 1.5, (0, 0, 0), 3, cv2.LINE_AA
        )
    names = {
        "det": "PP-OCRv6_det_small.onnx",
        "cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "rec": "PP-OCRv6_rec_small.onnx",
    }
    pipe = GpuLane("ocr-bench")
    # The engines run on the chain's lane, as a model server's engine runs on the server's.
    eng = {k: OrtCudaEngine(k, models / f, EngineOptions(), pipe) for k, f in names.items()}
    dec = {k: build_decoder(f"ppocr_{k}", {}, metadata=eng[k].metadata) for k in names}
    inp = {k: e.inputs[0].name for k, e in eng.items()}

    def texts(idx: np.ndarray, conf: np.ndarray, table: np.ndarray) -> list[str]:
        out = []
        for i in range(idx.shape[0]):
            keep = np.ones(idx.shape[1], bool)
            keep[1:] = idx[i, 1:] != idx[i, :-1]
            keep &= idx[i] != 0
            out.append("".join(table[idx[i][keep]]))
        return out

    def gpu_frame(seq: int) -> list[str]:
        f = Frame("ocr-bench", seq, img)
        x, plan = pre.frame(f, dec["det"].default_preprocess, pipe)
        boxes = dec["det"].decode(eng["det"].infer({inp["det"]: x}), [plan])[0]
        quads = [upright_quad(d.quad()) for d in boxes]
        xc, pc = pre.crops(f, quads, dec["cls"].default_preprocess, pipe)
        ang = [r[0].attrs["angle"] for r in dec["cls"].decode(eng["cls"].infer({inp["cls"]: xc}), pc)]
        quads = [upright_quad(q, rotate_tall=False, flip=a == 180) for q, a in zip(quads, ang, strict=True)]
        xr, _ = pre.crops(f, quads, dec["rec"].default_preprocess, pipe)
        scores = next(iter(eng["rec"].infer_device({inp["rec"]: xr}).values()))
        idx, conf = ctc_best(scores, pipe)
        return texts(idx, conf, dec["rec"].table(scores.shape[2]))

    def cpu_pre_frame() -> list[str]:
        x, plan = preprocess_frame(img, dec["det"].default_preprocess)
        boxes = dec["det"].decode(eng["det"].infer({inp["det"]: x}), [plan])[0]
        quads = [upright_quad(d.quad()) for d in boxes]
        xc, pc = preprocess_crops(img, quads, dec["cls"].default_preprocess)
        ang = [r[0].attrs["angle"] for r in dec["cls"].decode(eng["cls"].infer({inp["cls"]: xc}), pc)]
        quads = [upright_quad(q, rotate_tall=False, flip=a == 180) for q, a in zip(quads, ang, strict=True)]
        xr, pr = preprocess_crops(img, quads, dec["rec"].default_preprocess)
        return [r[0].label for r in dec["rec"].decode(eng["rec"].infer({inp["rec"]: xr}), pr)]

    seq = [0]

    def gpu_step() -> list[str]:
        seq[0] += 1  # a new frame each time: the upload is part of the measurement
        return gpu_frame(seq[0])

    with gpu_thread():
        got = gpu_step()
        h2d0, d2h0 = pipe.h2d, pipe.d2h
        gpu_step()
        per_frame = (pipe.h2d - h2d0, pipe.d2h - d2h0)
        t_gpu = cpu_time(gpu_step, n=50)
        ref = cpu_pre_frame()
        t_cpu = cpu_time(cpu_pre_frame, n=30)
    return [
        "| PP-OCR det+cls+rec, 640x480 text frame (3 lines) | ms/frame | frames/s | read |",
        "|---|---|---|---|",
        f"| edged GPU path (kernel preprocessing, device tensors, GPU CTC argmax) | {t_gpu:.2f} | {1000 / t_gpu:.0f} "
        f"| {got} |",
        f"| CPU preprocessing + same CUDA engines, host I/O | {t_cpu:.2f} | {1000 / t_cpu:.0f} | {ref} |",
        f"(bytes per frame on the GPU path: {per_frame[0]} up (frame {img.nbytes}), {per_frame[1]} down)",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=str(ROOT / ".models"))
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import cv2

    from edged.gpu import context
    from edged.gpu.buffers import DeviceTensor
    from edged.gpu.preprocess import GpuPreprocessor

    context.init()
    info = context.device_info()
    pre = GpuPreprocessor()
    pipe = context.GpuLane("bench")
    rng = np.random.default_rng(0)
    base = cv2.resize(
        rng.integers(0, 256, (270, 480, 3), dtype=np.uint8), (1920, 1080), interpolation=cv2.INTER_CUBIC
    )
    frame_host = np.ascontiguousarray(base)
    lines = [
        f"# GPU bench on {info['name']} (sm_{info['sm']}), OpenCV {cv2.__version__}, CPU threads "
        f"{cv2.getNumThreads()}",
        "",
    ]
    bw = d2d_bandwidth(pipe.stream)
    lines += [f"device-to-device copy: {bw:.0f} GB/s (read + write)", ""]

    # The frame on the device once (as a cudaImage would be): the kernel-only numbers read it in place.
    import pycuda.driver as cuda

    dev = cuda.mem_alloc(frame_host.nbytes)
    cuda.memcpy_htod(dev, frame_host)
    dev_frame = DeviceTensor(int(dev), frame_host.shape, np.dtype(np.uint8), owner=dev)

    cvpre = None
    try:
        from edged.gpu.cv2cuda import Cv2CudaPreprocessor, unavailable_reason

        if unavailable_reason() is None:
            cvpre = Cv2CudaPreprocessor(pre)
        else:
            lines.append(f"cv2.cuda: {unavailable_reason()}")
    except Exception as e:
        lines.append(f"cv2.cuda unavailable: {e}")

    lines += [
        "| 1080p BGR -> | CPU OpenCV ms | edged CPU ref ms | kernel ms (device frame) | speed-up vs CPU OpenCV "
        "| kernel GB/s (src+dst) | % of D2D | upload+kernel ms (host frame) | cv2.cuda ms | cv2.cuda / kernel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with context.gpu_thread():
        for name, spec in SPECS.items():
            t_cpu = cpu_time(lambda spec=spec: cpu_opencv(frame_host, spec))
            t_ref = cpu_time(lambda spec=spec: preprocess_frame(frame_host, spec), n=10)
            f_dev = Frame("bench", 0, dev_frame)
            t_k = gpu_time(lambda spec=spec, f=f_dev: pre.frame(f, spec, pipe), pipe.stream)
            out, _plan = pre.frame(f_dev, spec, pipe)
            nbytes = frame_host.nbytes + out.nbytes
            gbs = nbytes / (t_k * 1e-3) / 1e9

            def host_path(spec: PreprocessSpec = spec, seq: list[int] = [1]) -> None:  # noqa: B006
                seq[0] += 1  # a new frame each call: forces the upload
                pre.frame(Frame("bench", seq[0], frame_host), spec, pipe)

            t_up = cpu_time(lambda hp=host_path: (hp(), pipe.synchronize()), n=50)
            if cvpre is not None:
                t_cv = gpu_time(lambda spec=spec, f=f_dev: cvpre.frame(f, spec, pipe), pipe.stream, n=200)
                cv_cols = f"{t_cv:.3f} | {t_cv / t_k:.1f}x"
            else:
                cv_cols = "n/a | n/a"
            lines.append(
                f"| {name} | {t_cpu:.2f} | {t_ref:.2f} | {t_k:.4f} | {t_cpu / t_k:.0f}x | {gbs:.0f} | "
                f"{100 * gbs / bw:.0f}% | {t_up:.3f} | {cv_cols} |"
            )
            pipe.synchronize()
    lines += [
        "",
        "kernel-only: the frame already in device memory (cudaImage / cached upload), one launch per frame;",
        "upload+kernel: host frame copied to pinned memory then uploaded async each call (wall time on the stream,",
        "the host-side copy into pinned memory included: median wall time per frame, synchronized).",
        "",
    ]

    models = Path(args.models)
    try:
        from edged.infer.base import EngineOptions
        from edged.infer.onnxruntime_cuda import OrtCudaEngine, cuda_unavailable_reason

        reason = cuda_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        lines += [
            "| ORT CUDA engine only (IO binding, device input) | input | ms/run | runs/s |",
            "|---|---|---|---|",
        ]
        for label, fname, shape in (
            ("PP-OCR det", "PP-OCRv6_det_small.onnx", (1, 3, 736, 1312)),
            ("PP-OCR rec", "PP-OCRv6_rec_small.onnx", (6, 3, 48, 320)),
            ("PP-OCR cls", "ch_ppocr_mobile_v2.0_cls_mobile.onnx", (6, 3, 48, 192)),
        ):
            eng = OrtCudaEngine(label, models / fname, EngineOptions())
            x = rng.normal(size=shape).astype(np.float32)
            xd = cuda.mem_alloc(x.nbytes)
            cuda.memcpy_htod(xd, x)
            t = DeviceTensor(int(xd), shape, np.dtype(np.float32), owner=xd)
            for _ in range(10):
                eng.infer_device({"x": t})
            ms = cpu_time(lambda eng=eng, t=t: eng.infer_device({"x": t}), n=100)
            lines.append(f"| {label} | {'x'.join(map(str, shape))} | {ms:.3f} | {1000 / ms:.0f} |")
        lines.append("(ms/run: median wall time of run_with_iobinding, which returns when the GPU is done)")
    except Exception as e:
        lines.append(f"ORT CUDA engine bench skipped: {type(e).__name__}: {e}")
    try:
        lines += ["", *ocr_chain_bench(models, pre)]
    except Exception as e:
        lines.append(f"PP-OCR chain bench skipped: {type(e).__name__}: {e}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
