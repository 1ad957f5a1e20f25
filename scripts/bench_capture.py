"""Capture alone: what decoding costs the host, CPU (FFmpeg via PyAV) against GPU (NVDEC / nvJPEG), on N cameras of one
video, side by side in one run. No models: the part of a frame's host CPU that GPU decoding removes.

Each camera is the daemon's own `CameraCapture` (edged.capture) over `make_source(video, decode=...)`,
read as fast as a consumer thread takes its frames (realtime off, nothing dropped); the consumer drops
each frame (a GPU frame's memory returns to its pool). Reported per (cameras, decode): frames/s over all
cameras, and the process's CPU ms per frame (user + system, every thread, from the wall-clock window).

Usage: python scripts/bench_capture.py --video samples/plates-1080.mp4 --cameras 1 16 --decode cpu gpu
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edged.capture.sources import make_source
from edged.capture.worker import CameraCapture


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(video: str, cameras: int, decode: str, timeout_s: float) -> dict[str, object]:
    caps = [
        CameraCapture(f"cam{i:02d}", lambda: make_source(video, decode=decode), fps=1000, realtime=False)  # type: ignore[arg-type]
        for i in range(cameras)
    ]
    counts = [0] * cameras
    decoders: set[str] = set()

    def consume(i: int) -> None:
        cap = caps[i]
        while True:
            frame = cap.get(timeout_s=2.0)
            if frame is None:
                if cap.state in ("ended", "stopped"):
                    return
                continue
            counts[i] += 1
            decoders.add(str(cap.decoding.get("decoder")))

    t0, c0 = time.monotonic(), cpu_s()
    for cap in caps:
        cap.start()
    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(cameras)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    t1, c1 = time.monotonic(), cpu_s()
    notes = {str(c.decoding.get("note")) for c in caps if c.decoding.get("note")}
    for cap in caps:
        cap.stop()
    frames = sum(counts)
    return {
        "cameras": cameras,
        "decode": decode,
        "decoder": sorted(decoders),
        "frames": frames,
        "fps": round(frames / (t1 - t0), 1),
        "cpu_ms_per_frame": round((c1 - c0) * 1000 / max(frames, 1), 3),
        "notes": sorted(notes),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", required=True)
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--decode", nargs="+", choices=("cpu", "gpu", "auto"), default=["cpu", "gpu"])
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json")
    a = ap.parse_args()
    if any(d != "cpu" for d in a.decode):
        from edged.gpu.context import gpu_available, init

        if gpu_available() is None:
            init()  # in the main thread, as the daemon does (the context then outlives the capture threads)
    rows = []
    for n in a.cameras:
        for d in a.decode:
            try:
                row = run(a.video, n, d, a.timeout)
            except Exception as e:
                print(f"{n} cameras, decode {d}: {type(e).__name__}: {e}", flush=True)
                continue
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps({**row, "video": Path(a.video).name}) + "\n")
    print("\n| cameras | decode | decoder | frames/s | host CPU ms/frame |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['cameras']} | {r['decode']} | {', '.join(r['decoder'])} | {r['fps']} | {r['cpu_ms_per_frame']} |"
        )
    for n in a.cameras:
        by = {r["decode"]: r for r in rows if r["cameras"] == n}
        if "cpu" in by and "gpu" in by and by["gpu"]["cpu_ms_per_frame"]:
            print(
                f"{n} cameras: GPU decode {by['gpu']['fps'] / max(by['cpu']['fps'], 1e-9):.2f}x the frames/s, "
                f"{by['cpu']['cpu_ms_per_frame'] / by['gpu']['cpu_ms_per_frame']:.2f}x less host CPU per frame"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
