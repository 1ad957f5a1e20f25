"""Motion gating and per-track skipping on the gate sample: engine calls, CPU time, plates read.

Each mode runs edged's real camera loop (CameraRunner: file capture -> motion gate -> pipelined
det -> rec) over the whole video, frames fed as fast as the chain takes them (realtime: false), and
counts the engine calls of each model (a counting wrapper around the real engines). CPU time is this
process's (all threads: video decode, motion, preprocessing, engines, decoding) from the first frame
to the last result. Plates: for every pass in the sample's truth, whether some frame of the pass read
its text, and (with tracking) how many tracks read it (1 = the plate is listed once per pass).

Optionally RapidOCR on a slice of the same video (`--peer-frames`), extrapolated per hour: it has no
gating, so it runs on every frame.

Usage: python scripts/bench_motion.py [--video samples/gate.mp4] [--modes every,gated,tracked,gated+tracked]
       (a mode naming region, e.g. gated+region+tracked, runs the detector on the motion region only)
       (a mode naming int8, e.g. gated+tracked+int8, loads the int8 detector: scripts/quantize_models.py)
       (make the video first: edged make-sample --scene gate)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.config.cameras import CameraConfig  # noqa: E402
from edged.config.inference import ModelConfig  # noqa: E402
from edged.demo.truth import read_video, result_texts  # noqa: E402
from edged.observability.metrics import Metrics  # noqa: E402
from edged.pipeline.delivery import Delivery  # noqa: E402
from edged.pipeline.dispatch import FrameDispatcher  # noqa: E402
from edged.pipeline.runner import CameraRunner  # noqa: E402
from edged.serving.loading import load_model  # noqa: E402
from edged.types import FrameResult  # noqa: E402

DET_SIDE = 480  # detector input: long side 480 (640x480 -> 480x352), the same for edged and RapidOCR
ROI_TOP = 30  # the burned-in clock is text too, but not a plate: the chain looks below it


class CountingEngine:
    """Delegates every call to the real engine and counts the calls and the input pixels (rows x H x W:
    what region mode saves is tensor size, not calls)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.calls = 0
        self.pixels = 0
        self.name, self.inputs, self.outputs = engine.name, engine.inputs, engine.outputs
        self.metadata, self.info = engine.metadata, engine.info

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        shape = next(iter(inputs.values())).shape
        self.pixels += shape[0] * (shape[2] * shape[3] if shape[1] in (1, 3) else shape[1] * shape[2])
        return dict(self._engine.infer(inputs))

    def close(self) -> None:
        self._engine.close()


def camera(video: Path, fps: float, masks: list[Any], mode: str) -> CameraConfig:
    gated, tracked, region = "gated" in mode, "tracked" in mode, "region" in mode
    rec: dict[str, Any] = {"model": "text_rec", "on": "text_det"}
    if tracked:
        rec |= {"run": "every_k", "every_k": 3}  # re-read a plate every 3rd frame of its track
    return CameraConfig.model_validate(
        {
            "source": f"file://{video}",
            "fps": fps,
            "realtime": False,
            "tracking": {"enabled": tracked},
            "motion": {"enabled": gated, "masks": masks, "region": region},
            "chain": [
                # The burned-in clock is text too, but not a plate.
                {
                    "model": "text_det",
                    "min_score": 0.5,
                    "roi": [[0, 30], [4000, 30], [4000, 4000], [0, 4000]],
                },
                rec,
            ],
        }
    )


def run_mode(video: Path, meta: dict[str, Any], mode: str) -> dict[str, Any]:
    det = ModelConfig.model_validate(
        {
            "path": ROOT / "models/PP-OCRv6_det_small.onnx",
            "kind": "ppocr_det",
            "preprocess": {"limit_side": DET_SIDE, "limit_type": "max"},
            # "int8" modes: the int8 detector made by scripts/quantize_models.py
            "onnxruntime": {"int8": "int8" in mode},
        }
    )
    rec = ModelConfig.model_validate({"path": ROOT / "models/PP-OCRv6_rec_small.onnx", "kind": "ppocr_rec"})
    models = {
        "text_det": load_model("text_det", det, regions="region" in mode),
        "text_rec": load_model("text_rec", rec),
    }
    counters = {}
    for name, lm in models.items():
        # The server is the engine's one caller: count there (after its warm-up, so live calls only).
        counters[name] = CountingEngine(lm.engine)
        lm.slot.wrap(lambda _e, c=counters[name]: c)  # type: ignore[misc]
    results: list[FrameResult] = []
    done = threading.Event()

    def sink(r: FrameResult) -> None:
        r.frame.image = None  # keep the results, not 3000 frames' pixels
        results.append(r)
        if len(results) == meta["frames"]:
            done.set()

    cam = camera(video, meta["fps"], list(meta["masks"].values()), mode)
    dispatcher, delivery = FrameDispatcher(), Delivery()
    runner = CameraRunner("gate", cam, models, sink, Metrics(), dispatcher, delivery)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runner.start()
    done.wait(timeout=7200)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    runner.stop()
    dispatcher.stop()
    delivery.close()
    for lm in models.values():
        lm.close()
    results.sort(key=lambda r: r.frame.seq)
    hours = meta["frames"] / meta["fps"] / 3600
    plates = []
    for p in meta["passes"]:
        window = [r for r in results if p["first"] <= r.frame.seq <= p["last"]]
        read = [r for r in window if p["text"] in result_texts(r)]
        tracks = {
            d.attrs.get("track_id")
            for r in results
            for d in r.detections
            for kids in d.children.values()
            for k in kids
            if k.label == p["text"]
        }
        plates.append(
            {"text": p["text"], "frames_read": len(read), "frames": len(window), "tracks": len(tracks)}
        )
    return {
        "mode": mode,
        "results": len(results),
        "det_calls_per_h": counters["text_det"].calls / hours,
        "rec_calls_per_h": counters["text_rec"].calls / hours,
        "det_mpx_per_h": counters["text_det"].pixels / hours / 1e6,
        "cpu_s_per_h": cpu / hours,
        "wall_s": wall,
        "motion": runner.motion.status()["frames"] if runner.motion is not None else None,
        "plates": plates,
    }


def peer(video: Path, meta: dict[str, Any], start: int, n: int) -> dict[str, Any]:
    from rapidocr import RapidOCR

    engine = RapidOCR(
        params={
            "Global.log_level": "error",
            "Global.use_cls": False,  # edged's chain has no 0/180 classifier either
            "Det.limit_side_len": DET_SIDE,
            "Det.limit_type": "max",
        }
    )
    # RapidOCR has no ROI: it gets the frame below the clock, as edged's ROI keeps.
    frames = [img[ROI_TOP:] for img in read_video(video, start + n)[start:]]
    engine(frames[0])  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    reads = [sorted(engine(img).txts or ()) for img in frames]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    truth = [sorted(t["text"] for t in meta["truth"][start + i]) for i in range(len(frames))]
    with_text = [i for i in range(len(frames)) if truth[i]]
    exact = sum(all(t in reads[i] for t in truth[i]) for i in with_text)
    return {
        "cpu_s_per_frame": cpu / len(frames),
        "wall_s_per_frame": wall / len(frames),
        "frames": len(frames),
        "exact": exact,
        "with_text": len(with_text),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=ROOT / "samples/gate.mp4")
    ap.add_argument("--modes", default="every,gated,gated+tracked")
    ap.add_argument("--peer-frames", type=int, default=150, help="RapidOCR on this many frames (0: skip)")
    ap.add_argument("--peer-start", type=int, default=60)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    meta = json.loads(a.video.with_suffix(".json").read_text())
    seconds = meta["frames"] / meta["fps"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
        f"{a.video.name}: {meta['frames']} frames, {seconds:.0f} s at {meta['fps']} fps, {len(meta['passes'])} passes, "
        f"plates in view in {sum(1 for t in meta['truth'] if t)} frames",
        flush=True,
    )
    rows = []
    for mode in filter(None, a.modes.split(",")):
        row = run_mode(a.video, meta, mode)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| mode | det calls/h | det input Mpx/h | rec calls/h | CPU s per hour of video | passes read "
        "| tracks per read plate | frames read | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        read = sum(1 for p in r["plates"] if p["frames_read"])
        tracks = sorted({p["tracks"] for p in r["plates"] if p["frames_read"]})
        print(
            f"| {r['mode']} | {r['det_calls_per_h']:.0f} | {r['det_mpx_per_h']:.0f} | {r['rec_calls_per_h']:.0f} | "
            f"{r['cpu_s_per_h']:.0f} | {read}/{len(r['plates'])} | {tracks if 'tracked' in r['mode'] else '-'} | "
            f"{sum(p['frames_read'] for p in r['plates'])} | {r['wall_s']:.0f} |"
        )
    if a.peer_frames:
        p = peer(a.video, meta, a.peer_start, a.peer_frames)
        per_h = p["cpu_s_per_frame"] * meta["fps"] * 3600
        print(
            f"\nRapidOCR (same models, det long side {DET_SIDE}), frames {a.peer_start}-{a.peer_start + p['frames'] - 1}: "
            f"{p['cpu_s_per_frame'] * 1000:.0f} ms CPU ({p['wall_s_per_frame'] * 1000:.0f} ms wall) a frame -> "
            f"{per_h:.0f} CPU s per hour of video "
            f"(every frame, extrapolated); plates read exactly in {p['exact']}/{p['with_text']} frames with a plate"
        )
        wall_h = p["wall_s_per_frame"] * meta["frames"]
        for r in rows:
            print(
                f"  RapidOCR / edged {r['mode']}: CPU per hour of video {per_h / r['cpu_s_per_h']:.2f}x, "
                f"wall for the whole video {wall_h / r['wall_s']:.2f}x ({wall_h:.0f} s extrapolated vs {r['wall_s']:.0f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
