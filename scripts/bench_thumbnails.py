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

from edged.config.schema import ThumbnailsConfig
from edged.observability.metrics import Metrics
from edged.pipeline.tracker import IouTracker
from edged.publish.routing import ResultSink
from edged.publish.thumbnails.thumbnailer import Thumbnailer
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

    def stats(us: list[float]) -> str:
        return f"median {statistics.median(us):6.1f} mean {statistics.mean(us):6.1f} p99 {np.percentile(us, 99):7.1f} us"

    for mode in ("frames", "tracks"):
        results = frames(args.frames, (size[0], size[1]), tracked=mode == "tracks")
        off = per_frame_us(results, mode, None)
        runs = {}
        for concurrent in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                # A queue as deep as the run: nothing is dropped, every thumbnail is made.
                thumbs = Thumbnailer(
                    ThumbnailsConfig(queue=min(args.frames + 1, 4096)),
                    Path(tmp),
                    Metrics().registry,
                    cameras=["gate"],
                )
                if concurrent:  # the encoder runs meanwhile, as in the daemon: same cores, same GIL
                    thumbs.start()
                runs[concurrent] = per_frame_us(results, mode, thumbs)
                if concurrent:
                    thumbs.stop(timeout_s=600)
                    continue
                t0 = time.perf_counter()  # the encoder alone, on the queue the idle run filled
                thumbs.start()
                thumbs.stop(timeout_s=600)
                n = thumbs.store.count
                encode_ms = (time.perf_counter() - t0) * 1e3 / max(n, 1)
        print(f"{mode}: sink per frame without thumbnails: {stats(off)}")
        print(f"{mode}: with, encoder idle (all crops pile up in memory): {stats(runs[False])}")
        print(f"{mode}: with, encoder running alongside (as in the daemon): {stats(runs[True])}")
        print(f"{mode}: encoder: {n} thumbnails, {encode_ms:.2f} ms each (resize, JPEG, write)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
