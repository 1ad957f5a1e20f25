"""Many streams on one GPU: aggregate frames/s and p99 latency for N synthetic 1080p streams, beside
engine-only throughput at the same batch sizes, measured in one run.

Streams are synthetic cameras whose frames already sit in device memory (what jetson-utils' zero-copy
capture gives), each with its own pipeline (stage threads, its own CUDA stream); the detector is shared
through a cross-camera BatchingEngine (max batch = N). Chains: `ocr` (PP-OCR det at its default size ->
rec on crops) and `det` (the PP-OCR detector alone at a small input, 320x192).

Usage (GPU machine): python scripts/bench_streams.py --models DIR --streams 1 4 16 64 --seconds 10 --json out.json
       python scripts/bench_streams.py --soak 480 --streams 16 ...   (memory growth over a long run)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.chain.chain import Chain, Stage  # noqa: E402
from edged.chain.pipeline import Pipeline  # noqa: E402
from edged.chain.streammux import FrameBatcher  # noqa: E402
from edged.gpu import Pipeline as GpuLane  # noqa: E402
from edged.gpu import make_preprocessor  # noqa: E402
from edged.gpu.buffers import DeviceTensor  # noqa: E402
from edged.gpu.context import gpu_thread  # noqa: E402
from edged.infer import create_engine  # noqa: E402
from edged.infer.base import Engine  # noqa: E402
from edged.infer.batching import BatchingEngine  # noqa: E402
from edged.models import build_decoder, get_decoder  # noqa: E402
from edged.preprocess.spec import PreprocessSpec  # noqa: E402
from edged.sample import SampleScene  # noqa: E402
from edged.types import Frame, FrameResult  # noqa: E402

SMALL_DET = PreprocessSpec(resize="stretch", size=(320, 192), color="bgr", mean=(0.5,) * 3, std=(0.5,) * 3)


def device_frames(k: int) -> list[DeviceTensor]:
    """k distinct 1080p plate frames uploaded once (the streams reuse them, as a camera ring would)."""
    import pycuda.driver as cuda

    scene = SampleScene(frames=k, seed=11, size=(1920, 1080))
    out = []
    with gpu_thread():
        for i in range(k):
            img = np.ascontiguousarray(scene.render(i))
            buf = cuda.mem_alloc(img.nbytes)
            cuda.memcpy_htod(buf, img)
            out.append(DeviceTensor(int(buf), img.shape, img.dtype, owner=buf))
    return out


def stage(
    kind: str, name: str, engine: Engine, spec: PreprocessSpec | None = None, on: str | None = None
) -> Stage:
    return Stage(
        name,
        engine,
        build_decoder(kind, {}, metadata=engine.metadata),
        spec or get_decoder(kind).default_preprocess,
        make_preprocessor("kernel"),
        on=on,
    )


def run_streams(
    chain_kind: str,
    n: int,
    seconds: float,
    det: Engine,
    rec: Engine,
    frames: list[DeviceTensor],
    mux: str,
    decode_workers: int = 0,
) -> dict[str, Any]:
    """mux "frame": the streams' frames batched before preprocessing (FrameBatcher: one kernel launch,
    one engine call, decode on its own thread); "engine": each stream preprocesses on its own threads
    and only the engine calls are merged (BatchingEngine)."""
    det_spec = SMALL_DET if chain_kind == "det" else get_decoder("ppocr_det").default_preprocess
    shared = BatchingEngine(det, max_batch=n, max_wait_ms=2.0, pad_to_max=True)
    pre = make_preprocessor("kernel")
    with GpuLane("warm-up").active():
        one, _ = pre.frame(Frame("warm-up", 0, frames[0]), det_spec)
        shared.warm_up({det.inputs[0].name: one})
    batcher = None
    if mux == "frame":
        lane = GpuLane("mux")
        batcher = FrameBatcher(
            "det",
            det,
            build_decoder("ppocr_det", {}, metadata=det.metadata),
            det_spec,
            pre,
            max_batch=n,
            max_wait_ms=2.0,
            pad_to_max=True,
            thread_context=lane.active,
            decode_workers=decode_workers,
        )
    # Latencies of the last 200k frames: a soak must not measure the growth of its own bookkeeping
    # (an unbounded list grew RSS by ~40 bytes a frame, +4% in 8 minutes, in the first soak).
    lat: deque[float] = deque(maxlen=200_000)
    done = [0]
    lock = threading.Lock()

    def sink(r: FrameResult) -> None:
        with lock:
            done[0] += 1
            lat.append((time.monotonic_ns() - r.frame.t_mono_ns) / 1e6)

    stop = threading.Event()
    pipes = []
    for i in range(n):
        stages = [stage("ppocr_det", "det", shared, None if chain_kind == "ocr" else SMALL_DET)]
        if chain_kind == "ocr":
            rec_spec = dataclasses.replace(get_decoder("ppocr_rec").default_preprocess, width_multiple=160)
            stages.append(stage("ppocr_rec", "rec", rec, rec_spec, on="det"))
        lane = GpuLane(f"cam{i}")
        p = Pipeline(
            Chain(stages), sink, name=f"cam{i}", depth=1, thread_context=lane.active, batcher=batcher
        )
        p.start()
        pipes.append(p)

    def feed(i: int, p: Pipeline) -> None:
        seq = 0
        while not stop.is_set():
            p.submit(Frame(f"cam{i}", seq, frames[(seq + i) % len(frames)], "bgr8"), timeout=1.0)
            seq += 1

    feeders = [threading.Thread(target=feed, args=(i, p), daemon=True) for i, p in enumerate(pipes)]
    for t in feeders:
        t.start()
    time.sleep(min(2.0, seconds / 4))  # warm-up: engines, kernels, buffer pools
    with lock:
        done[0] = 0
        lat.clear()
    t0 = time.perf_counter()
    time.sleep(seconds)
    with lock:
        count, lats = done[0], list(lat)
    wall = time.perf_counter() - t0
    stop.set()
    for p in pipes:
        p.stop(10)
    shared.close(close_inner=False)
    if batcher is not None:
        batcher.close()
    lats.sort()
    return {
        "streams": n,
        "chain": chain_kind,
        "mux": mux,
        "decode_workers": decode_workers if mux == "frame" else 0,
        "fps": count / wall,
        "frames": count,
        "p50_ms": statistics.median(lats) if lats else None,
        "p99_ms": lats[int(0.99 * (len(lats) - 1))] if lats else None,
        "det_batches": shared.batches if batcher is None else batcher.batches,
    }


def engine_only(
    det: Engine, spec: PreprocessSpec | None, batch: int, frames: list[DeviceTensor], seconds: float
) -> float:
    """Detector calls per second x batch on an input prepared once (no preprocessing, no decoding)."""
    pre = make_preprocessor("kernel")
    lane = GpuLane("engine-only")
    with lane.active():
        one, _ = pre.frame(
            Frame("engine-only", 0, frames[0]), spec or get_decoder("ppocr_det").default_preprocess
        )
        x = {det.inputs[0].name: np.concatenate([one.to_host()] * batch)}  # host copy bound once below
        import pycuda.driver as cuda

        buf = cuda.mem_alloc(x[det.inputs[0].name].nbytes)
        cuda.memcpy_htod(buf, x[det.inputs[0].name])
        dt = DeviceTensor(int(buf), x[det.inputs[0].name].shape, np.dtype(np.float32), owner=buf)
        det.infer({det.inputs[0].name: dt})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            det.infer({det.inputs[0].name: dt})
            n += 1
        return n * batch / (time.perf_counter() - t0)


def rss_kib() -> int:
    """Resident memory now (not the peak) of this process and its children (decode workers), KiB."""
    pids = [str(os.getpid())]
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    if children.exists():
        pids += children.read_text().split()
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):  # a worker may just have exited
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * (
                os.sysconf("SC_PAGE_SIZE") // 1024
            )
    return total


def gpu_mem_used() -> int:
    import pycuda.driver as cuda

    with gpu_thread():
        free, total = cuda.mem_get_info()
    return int(total - free)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=str(ROOT / "models"))
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--chains", nargs="+", default=["det", "ocr"])
    ap.add_argument(
        "--mux",
        nargs="+",
        default=["frame", "engine"],
        choices=["frame", "engine"],
        help="frame: batch whole frames before preprocessing (FrameBatcher); engine: merge engine calls only",
    )
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument(
        "--decode-workers",
        type=int,
        nargs="+",
        default=[0],
        help="frame batching: decode processes (0: one thread)",
    )
    ap.add_argument("--soak", type=float, default=0.0, help="run one config this long, sampling memory")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    models = Path(a.models)
    det = create_engine("det", models / "PP-OCRv6_det_small.onnx", "onnxruntime")
    rec = create_engine("rec", models / "PP-OCRv6_rec_small.onnx", "onnxruntime")
    print(f"engines: {det.info}, {rec.info}", flush=True)
    frames = device_frames(8)
    results: dict[str, Any] = {"device": _device_name(), "rows": [], "soak": None}
    if a.soak:
        n, kind, mux = a.streams[0], a.chains[0], a.mux[0]
        samples = []

        def sampler(stop: threading.Event) -> None:
            while not stop.wait(10):
                samples.append((time.time(), gpu_mem_used(), rss_kib()))

        stop = threading.Event()
        threading.Thread(target=sampler, args=(stop,), daemon=True).start()
        row = run_streams(kind, n, a.soak, det, rec, frames, mux, a.decode_workers[0])
        stop.set()
        results["soak"] = {"row": row, "samples": samples}
        if len(samples) >= 3:
            g0, g1 = samples[1][1], samples[-1][1]
            r0, r1 = samples[1][2], samples[-1][2]
            print(
                f"soak {a.soak:.0f}s {n} streams {kind} ({mux} batching): {row['fps']:.0f} fps; GPU mem {g0 / 2**20:.0f} -> {g1 / 2**20:.0f} MiB "
                f"({(g1 - g0) / g0 * 100:+.2f}%), RSS (self + workers, now) {r0 / 1024:.0f} -> {r1 / 1024:.0f} MiB ({(r1 - r0) / r0 * 100:+.2f}%)"
            )
    else:
        engine_fps: dict[tuple[str, int], float] = {}
        for kind in a.chains:
            for n in a.streams:
                for mux, workers in [
                    (m, w) for m in a.mux for w in (a.decode_workers if m == "frame" else [0])
                ]:
                    row = run_streams(kind, n, a.seconds, det, rec, frames, mux, workers)
                    if (kind, n) not in engine_fps:
                        engine_fps[kind, n] = engine_only(
                            det, SMALL_DET if kind == "det" else None, n, frames, 3.0
                        )
                    row["engine_only_fps"] = engine_fps[kind, n]
                    row["ratio"] = row["fps"] / row["engine_only_fps"]
                    results["rows"].append(row)
                    print(
                        f"{kind:3} {mux:6} w{workers} streams {n:3}: pipeline {row['fps']:8.1f} fps  p50 {row['p50_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms"
                        f"  | engine-only (det, batch {n}) {row['engine_only_fps']:8.1f} fps  ratio {row['ratio']:.2f}",
                        flush=True,
                    )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    os._exit(0)  # daemon feeder threads may still hold CUDA objects; skip interpreter teardown


def _device_name() -> str:
    from edged.gpu.context import device_info

    return str(device_info()["name"])


if __name__ == "__main__":
    sys.exit(main())
