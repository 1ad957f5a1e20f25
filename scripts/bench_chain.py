"""Chain benchmark (CPU, or GPU with a GPU config), side by side in one run on the same frames:

(a) edged's pipeline (video decode -> preprocess -> det -> crops -> rec, stages overlapped across
    frames) vs model-only throughput of the same chain (only the engine calls, run back to back on
    tensors prepared beforehand);
(b) edged vs RapidOCR 3.10.0's own engine (the peer), same ONNX models, same detector input size
    (short side 736), same strings checked against the sample's ground truth.

Also prints capture->result latency p50/p99 of the pipeline run.

Usage: python scripts/bench_chain.py [--config configs/edged.yaml] [--video samples/plates.mp4] [--frames 60]
       [--repeat 3] [--peer-cuda]   (the GPU run uses configs/examples/gpu.yaml)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.capture import make_source  # noqa: E402
from edged.capture.worker import CameraCapture  # noqa: E402
from edged.chain.chain import Chain, StageState  # noqa: E402
from edged.chain.pipeline import Pipeline  # noqa: E402
from edged.config import load_config  # noqa: E402
from edged.preprocess.spec import upright_quad  # noqa: E402
from edged.runtime import build_chain, load_model, uses_gpu  # noqa: E402
from edged.testing import read_video, result_texts, sample_truth  # noqa: E402
from edged.types import Frame, FrameResult  # noqa: E402


def gpu_context() -> Any:
    """The CUDA lane for stage threads when the chain runs on the GPU (as CameraRunner does), else None."""
    global _LANE
    if not _GPU:
        return None
    if _LANE is None:
        from edged.gpu import Pipeline as GpuLane

        _LANE = GpuLane("bench")
    return _LANE.active


_GPU = False
_LANE: Any = None


def model_only(chain: Chain, frames: list[np.ndarray]) -> float:
    """Seconds spent in engine calls alone (det + rec) for all frames; preprocessing and decoding run
    outside the timed region, so this is what the models cost with nothing else around them."""
    det, rec = chain.stages[0], chain.stages[-1]
    total = 0.0
    for i, img in enumerate(frames):
        state = StageState(Frame("bench", i, img))
        tensor, plan = det.preprocessor.frame(state.frame, det.spec)
        t0 = time.perf_counter()
        outputs = det.infer(tensor)
        total += time.perf_counter() - t0
        parents = rec.filter.select(det.filter.select(det.decoder.decode(outputs, [plan])[0]))
        if parents:
            quads = [upright_quad(d.quad()) for d in parents]
            rec_tensor, _ = rec.preprocessor.crops(state.frame, quads, rec.spec)
            t0 = time.perf_counter()
            rec.infer(rec_tensor)
            total += time.perf_counter() - t0
    return total


def edged_pipeline(chain: Chain, video: Path, n: int) -> tuple[float, list[FrameResult]]:
    """Wall seconds for n frames through capture (file, as fast as consumed) + pipelined chain."""
    results: list[FrameResult] = []
    done: queue.Queue[None] = queue.Queue()

    def sink(r: FrameResult) -> None:
        results.append(r)
        if len(results) == n:
            done.put(None)

    capture = CameraCapture("bench", lambda: make_source(f"file://{video}"), fps=1000, realtime=False)
    pipeline = Pipeline(chain, sink, name="bench", depth=1, thread_context=gpu_context())
    pipeline.start()
    t0 = time.perf_counter()
    capture.start()
    submitted = 0
    while submitted < n:
        frame = capture.get(timeout_s=5.0)
        if frame is None:
            break
        pipeline.submit(frame)
        submitted += 1
    done.get(timeout=600)
    wall = time.perf_counter() - t0
    capture.stop()
    pipeline.stop()
    return wall, sorted(results, key=lambda r: r.frame.seq)


def peer(frames: list[np.ndarray], use_cls: bool, cuda: bool = False) -> tuple[float, list[list[str]]]:
    from rapidocr import RapidOCR

    params: dict[str, Any] = {
        "Global.use_cls": use_cls,
        "Global.log_level": "error",
        "Det.limit_side_len": 736,
        "Det.limit_type": "min",
    }
    if cuda:
        params["EngineConfig.onnxruntime.use_cuda"] = True
    engine = RapidOCR(params=params)
    engine(frames[0])  # warm-up
    out = []
    t0 = time.perf_counter()
    for img in frames:
        r = engine(img)
        out.append(sorted(r.txts or ()))
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default=str(ROOT / "samples/plates.mp4"))
    ap.add_argument("--config", default=str(ROOT / "configs/edged.yaml"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cls", action="store_true", help="include the 0/180 classifier in both chains")
    ap.add_argument(
        "--peer-cuda", action="store_true", help="run RapidOCR with onnxruntime-gpu's CUDA provider"
    )
    a = ap.parse_args()
    global _GPU
    logging.basicConfig(level=logging.WARNING)

    video = Path(a.video)
    frames = read_video(video, a.frames)
    n = len(frames)
    truth = sample_truth(video, n)
    cfg = load_config(a.config, env={})
    models = {name: load_model(name, m) for name, m in cfg.models.items()}
    cam = next(iter(cfg.cameras.values()))
    chain = build_chain(cam, models)
    _GPU = uses_gpu(models, set(models))
    ctx = gpu_context()
    with_text = [i for i in range(n) if truth[i]]

    rows: dict[str, list[float]] = {"model-only": [], "edged": [], "rapidocr": []}
    reads: dict[str, int] = {"edged": 0, "rapidocr": 0}
    latencies: list[float] = []
    for rep in range(a.repeat):
        with ctx() if ctx is not None else contextlib.nullcontext():
            rows["model-only"].append(n / model_only(chain, frames))
        wall, results = edged_pipeline(chain, video, n)
        rows["edged"].append(n / wall)
        ok = sum(result_texts(results[i]) == truth[i] for i in with_text)
        latencies += [r.latency_ms["total"] for r in results]
        wall_p, peer_txt = peer(frames, a.cls, a.peer_cuda)
        rows["rapidocr"].append(n / wall_p)
        ok_p = sum(peer_txt[i] == truth[i] for i in with_text)
        if rep == 0:
            reads = {"edged": ok, "rapidocr": ok_p}
            for i in with_text:  # which frames were misread, to compare paths (CPU vs GPU) frame by frame
                if result_texts(results[i]) != truth[i]:
                    print(f"  edged misread frame {i}: {result_texts(results[i])} (truth {truth[i]})")
            same = sum(result_texts(results[i]) == peer_txt[i] for i in range(n))
        print(
            f"run {rep + 1}: model-only {rows['model-only'][-1]:.2f} fps, edged {rows['edged'][-1]:.2f} fps, "
            f"rapidocr {rows['rapidocr'][-1]:.2f} fps",
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in rows.items()}
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}; frames: {n} "
        f"({len(with_text)} with text) of {video.name}, repeats: {a.repeat}, medians below"
    )
    print("| measure | frames/s | exact reads |\n|---|---|---|")
    print(f"| model-only (engine calls of det+rec) | {med['model-only']:.2f} | - |")
    print(f"| edged pipeline | {med['edged']:.2f} | {reads['edged']}/{len(with_text)} |")
    print(
        f"| RapidOCR 3.10.0 (use_cls={a.cls}) | {med['rapidocr']:.2f} | {reads['rapidocr']}/{len(with_text)} |"
    )
    engines = {
        n: f"{m.engine.info.backend}/{m.engine.info.device}, preprocess {m.preprocessor.name}"
        for n, m in models.items()
    }
    print(f"edged models: {engines}; RapidOCR CUDA provider: {a.peer_cuda}")
    latencies.sort()
    print(
        f"edged capture->result latency over {len(latencies)} frames: p50 {statistics.median(latencies):.1f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms (frames fed as fast as the chain takes them)"
    )
    print(f"edged / model-only = {med['edged'] / med['model-only']:.2f} (goal >= {0.97 if _GPU else 0.90})")
    print(f"edged / RapidOCR   = {med['edged'] / med['rapidocr']:.2f} (goal >= {3 if _GPU else 1.5})")
    print(f"frames where edged and RapidOCR read the same strings: {same}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
