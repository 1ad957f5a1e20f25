#!/usr/bin/env python3
"""What event thumbnails cost the camera's thread: the result sink per frame without thumbnails, with
them (frames mode: name + queue) and with per-track best crops (tracks mode), and what the shared
encoder thread spends per thumbnail.

    python scripts/bench_thumbnails.py [--frames 2000] [--size 1920x1080]

Frames are the demo's plates drawn into a frame of `--size`; two plates per frame, moving a little.
No MQTT (publisher None): this measures edged's own work, not the broker.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import cv2
import numpy as np

from edged.chain.tracker import IouTracker
from edged.config.models import ThumbnailsConfig
from edged.metrics import Metrics
from edged.publish.thumbnails import Thumbnailer
from edged.sinks import ResultSink
from edged.types import Detection, Frame, FrameResult


def frames(n: int, size: tuple[int, int], tracked: bool) -> list[FrameResult]:
    rng = np.random.default_rng(7)
    base = rng.integers(60, 200, (size[1], size[0], 3), np.uint8)
    tracker = IouTracker() if tracked else None
    out = []
    for seq in range(n):
        img = base.copy()  # a new array per frame, as OpenCV capture gives
        dets = []
        for i, text in enumerate(("DY03 UUR", "UGG-6244")):
            x, y = 100 + 300 * i + seq % 40, 200 + 200 * i
            cv2.rectangle(img, (x, y), (x + 260, y + 70), (255, 255, 255), cv2.FILLED)
            cv2.putText(img, text, (x + 10, y + 50), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 4)
            d = Detection("text", 0.9, (x, y, x + 260, y + 70))
            d.children["text_rec"] = [Detection(text, 0.99, d.box)]
            dets.append(d)
        upd = tracker.update(dets, seq) if tracker is not None else None
        out.append(FrameResult(Frame("gate", seq, img), dets, {"total": 40.0}, upd))
    return out


def per_frame_us(results: list[FrameResult], mode: str, thumbs: Thumbnailer | None) -> list[float]:
    sink = ResultSink("bench", Metrics(), events_mode=lambda cam: mode)
    sink.thumbnails = thumbs
    times = []
    for r in results:
        t0 = time.perf_counter()
        sink(r)
        times.append((time.perf_counter() - t0) * 1e6)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", default="1920x1080", help="frame WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    assert len(size) == 2
    for mode in ("frames", "tracks"):
        results = frames(args.frames, (size[0], size[1]), tracked=mode == "tracks")
        off = per_frame_us(results, mode, None)
        with tempfile.TemporaryDirectory() as tmp:
            # A queue as deep as the run, so nothing is dropped and every encode is counted below.
            thumbs = Thumbnailer(
                ThumbnailsConfig(queue=args.frames + 1), Path(tmp), Metrics().registry, cameras=["gate"]
            )
            on = per_frame_us(results, mode, thumbs)  # the worker is not started yet: queueing only
            queued = thumbs._queue.qsize()
            t0 = time.perf_counter()
            thumbs.start()
            thumbs.stop(timeout_s=600)
            encode_ms = (time.perf_counter() - t0) * 1e3 / max(queued, 1)
            written = thumbs.store.count
        print(
            f"{mode:6s} sink per frame: off median {statistics.median(off):7.1f} us mean {statistics.mean(off):6.1f} us p99 "
            f"{np.percentile(off, 99):7.1f} us | on median {statistics.median(on):7.1f} us mean {statistics.mean(on):6.1f} us p99 "
            f"{np.percentile(on, 99):7.1f} us | encoder {encode_ms:.2f} ms per thumbnail "
            f"({queued} queued, {written} files)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
