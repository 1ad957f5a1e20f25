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
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import engines_only  # noqa: E402

from edged.capture.sources import make_source  # noqa: E402
from edged.capture.worker import CameraCapture  # noqa: E402
from edged.config.loader import load_config  # noqa: E402
from edged.demo.truth import read_video, result_texts, sample_truth  # noqa: E402
from edged.pipeline.flow import run_frames  # noqa: E402
from edged.pipeline.runner import build_stages  # noqa: E402
from edged.serving.loading import LoadedModel, load_model  # noqa: E402
from edged.types import Frame, FrameResult  # noqa: E402


def edged_pipeline(
    models: dict[str, LoadedModel], cam: Any, video: Path, n: int
) -> tuple[float, list[FrameResult]]:
    """Wall seconds for n frames through capture (file, as fast as consumed) + the chain's model servers."""
    capture = CameraCapture("bench", lambda: make_source(f"file://{video}"), fps=1000, realtime=False)

    def captured() -> Iterator[Frame]:
        for _ in range(n):
            frame = capture.get(timeout_s=5.0)
            if frame is None:
                return
            yield frame

    t0 = time.perf_counter()
    capture.start()
    results, failed = run_frames("bench", build_stages(cam, models), captured())
    wall = time.perf_counter() - t0
    capture.stop()
    if failed:
        raise RuntimeError(f"{len(failed)} frames failed, first: {failed[0][1]}")
    return wall, results


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
    logging.basicConfig(level=logging.WARNING)

    video = Path(a.video)
    frames = read_video(video, a.frames)
    n = len(frames)
    truth = sample_truth(video, n)
    cfg = load_config(a.config, env={})
    models = {
        name: load_model(name, m, source_sizes=[frames[0].shape[1::-1]]) for name, m in cfg.models.items()
    }
    cam = next(iter(cfg.cameras.values()))
    det, rec = models[cam.chain[0].model], models[cam.chain[-1].model]
    gpu = any(m.lane is not None for m in models.values())
    with_text = [i for i in range(n) if truth[i]]

    rows: dict[str, list[float]] = {"model-only": [], "edged": [], "rapidocr": []}
    reads: dict[str, int] = {"edged": 0, "rapidocr": 0}
    latencies: list[float] = []
    for rep in range(a.repeat):
        rows["model-only"].append(n / engines_only(det, rec if rec is not det else None, frames)[0])
        wall, results = edged_pipeline(models, cam, video, n)
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
    print(f"edged / model-only = {med['edged'] / med['model-only']:.2f} (goal >= {0.97 if gpu else 0.90})")
    print(f"edged / RapidOCR   = {med['edged'] / med['rapidocr']:.2f} (goal >= {3 if gpu else 1.5})")
    print(f"frames where edged and RapidOCR read the same strings: {same}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
