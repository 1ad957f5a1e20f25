"""CPU decoding of a video file: OpenCV's FFmpeg backend against FFmpeg through PyAV (edged's default CPU
source for files and streams), side by side in one run, as the capture thread uses them (grab every
frame, convert every --take-th to BGR).

Prints per source: frames, wall ms per frame and the process's CPU ms per frame (user + system, all
threads: FFmpeg decodes on threads of its own), and the ratio. Each source reads the whole file
--repeat times; the first pass is a warm-up and not counted.

Usage: python scripts/bench_cpu_decode.py --video samples/plates.mp4 [--take 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from edged.capture.base import Source, SourceEnded
from edged.capture.ffmpeg import FFmpegSource
from edged.capture.opencv import OpenCVSource


def one_pass(make: Callable[[], Source], take: int) -> int:
    src = make()
    src.open()
    n = 0
    try:
        while True:
            src.grab(1.0)  # type: ignore[attr-defined]
            if n % take == 0:
                src.retrieve()  # type: ignore[attr-defined]
            n += 1
    except SourceEnded:
        return n
    finally:
        src.close()


def measure(make: Callable[[], Source], take: int, repeat: int) -> tuple[int, float, float]:
    one_pass(make, take)  # warm-up: page cache, codec init
    frames, wall, cpu = 0, 0.0, 0.0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), sum(os.times()[:2])
        frames += one_pass(make, take)
        wall += time.perf_counter() - t0
        cpu += sum(os.times()[:2]) - c0
    return frames, 1000 * wall / frames, 1000 * cpu / frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=Path("samples/plates.mp4"))
    ap.add_argument("--take", type=int, default=1, help="convert every N-th frame (the camera's fps share)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = str(args.video.resolve())
    sources: dict[str, Callable[[], Source]] = {
        "opencv": lambda: OpenCVSource(f"file://{path}", path=path),
        "pyav": lambda: FFmpegSource(f"file://{path}", target=path, live=False),
    }
    results = {name: measure(make, args.take, args.repeat) for name, make in sources.items()}
    print(f"{args.video} (every {args.take}. frame converted), {args.repeat} passes after a warm-up")
    print(f"{'source':<8} {'frames':>7} {'wall ms/frame':>14} {'CPU ms/frame':>13}")
    for name, (frames, wall_ms, cpu_ms) in results.items():
        print(f"{name:<8} {frames:>7} {wall_ms:>14.2f} {cpu_ms:>13.2f}")
    (_, w0, c0), (_, w1, c1) = results["opencv"], results["pyav"]
    print(f"pyav / opencv: wall {w1 / w0:.2f}x, CPU {c1 / c0:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
