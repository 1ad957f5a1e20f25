#!/usr/bin/env python3
"""Write the demo video of license-plate-like text and its per-frame ground truth (JSON sidecar).

    python scripts/make_sample.py                       # samples/plates.mp4 + samples/plates.json
    python scripts/make_sample.py --codec mjpg --out samples/plates.avi   # for OpenCV builds without FFmpeg
    python scripts/make_sample.py --codec h264 --size 1920x1080 --out samples/plates-1080.mp4  # as cameras send
    python scripts/make_sample.py --scene gate          # samples/gate.mp4: 10 min of a gate, 5 fps

The rendering lives in edged.demo.sample (make_sample) and edged.demo.sample_gate (make_gate_sample) so the CLI demo and the tests use the same code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from edged.demo.sample import CODECS, make_sample
from edged.demo.sample_gate import make_gate_sample


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, not {text!r}") from None
    if w < 320 or h < 240:  # plates are ~30-40 px text, up to ~260 px wide
        raise argparse.ArgumentTypeError("size must be at least 320x240")
    return w, h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--scene",
        choices=("plates", "gate"),
        default="plates",
        help="plates: plates moving all the time; gate: a mostly empty gate where a car passes now and then",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="video path (default samples/<scene>.mp4, .avi for mjpg)"
    )
    ap.add_argument("--frames", type=int, default=150, help="plates: frames (default 150 = 10 s at 15 fps)")
    ap.add_argument("--seconds", type=float, default=600.0, help="gate: length in seconds (default 600)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate (default 15 plates, 5 gate)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default 7 plates, 11 gate)")
    ap.add_argument("--size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    ap.add_argument(
        "--codec",
        choices=CODECS,
        default="mp4v",
        help="mp4v (.mp4), mjpg (.avi), or h264/h265 (.mp4, as IP cameras send it; needs the ffmpeg program)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path("samples") / f"{args.scene}.{'avi' if args.codec == 'mjpg' else 'mp4'}"
    if args.frames < 1:
        ap.error("--frames must be at least 1")
    if args.seconds <= 0 or (args.fps is not None and args.fps <= 0):
        ap.error("--seconds and --fps must be positive")
    try:
        if args.scene == "gate":
            make_gate_sample(
                out,
                seconds=args.seconds,
                fps=args.fps or 5.0,
                seed=11 if args.seed is None else args.seed,
                size=args.size,
                codec=args.codec,
            )
        else:
            make_sample(
                out,
                frames=args.frames,
                seed=7 if args.seed is None else args.seed,
                size=args.size,
                fps=args.fps or 15.0,
                codec=args.codec,
            )
    except (OSError, RuntimeError) as exc:
        logging.error("could not write %s: %s", out, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
