"""DB decoding of the PP-OCR detector's maps on the CPU: edged's decoder vs RapidOCR's DBPostProcess (the
peer) on the same maps, side by side in one run. The maps are the real detector's outputs for frames of a
generated 1080p sample (default) at full size (1088x1920), computed once up front (untimed).

    python scripts/bench_decode.py [--size 1920x1080] [--frames 12] [--repeat 5]

Prints ms per map for RapidOCR (float map), edged (float map: the CPU path) and edged (byte map: what
the GPU path downloads, `reduce_on_device`), the ratios, and whether the boxes agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODELS = Path(os.environ.get("EDGED_MODELS_DIR", ROOT / "models"))  # edged install-models --dest models

from edged.config.inference import ModelConfig  # noqa: E402
from edged.decoders.ppocr import PROB_U8  # noqa: E402
from edged.demo.sample import make_sample  # noqa: E402
from edged.demo.truth import read_video  # noqa: E402
from edged.serving.loading import load_model  # noqa: E402
from edged.types import Frame  # noqa: E402


def best_ms(fn: object, repeat: int) -> float:
    assert callable(fn)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return min(runs) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "sample.avi"
        make_sample(video, frames=a.frames, size=(w, h))
        images = read_video(video)
    det = load_model(
        "text_det",
        ModelConfig.model_validate({"path": MODELS / "PP-OCRv6_det_small.onnx", "kind": "ppocr_det"}),
    )
    maps, plans = [], []
    for i, img in enumerate(images):
        tensor, plan = det.preprocessor.frame(Frame("bench", i, img), det.spec)
        maps.append(next(iter(det.engine.infer({det.engine.inputs[0].name: tensor}).values())))
        plans.append(plan)
    det.close()
    as_bytes = [np.rint(np.clip(m, 0, 1) * 255).astype(np.uint8) for m in maps]
    p = det.decoder.params
    peer = DBPostProcess(
        thresh=p.thresh, box_thresh=p.box_thresh, max_candidates=p.max_candidates,
        unclip_ratio=p.unclip_ratio, score_mode=p.score_mode, use_dilation=p.use_dilation,
    )  # fmt: skip
    mh, mw = maps[0].shape[2:]

    def run_peer() -> list[int]:
        return [len(peer(m, (mh, mw))[0]) for m in maps]

    def run_float() -> list[int]:
        return [len(det.decoder.decode({"map": m}, [pl])[0]) for m, pl in zip(maps, plans, strict=True)]

    def run_bytes() -> list[int]:
        return [len(det.decoder.decode({PROB_U8: b}, [pl])[0]) for b, pl in zip(as_bytes, plans, strict=True)]

    counts = {"peer": run_peer(), "float": run_float(), "bytes": run_bytes()}
    ms = {
        k: best_ms(f, a.repeat) / len(maps)
        for k, f in (("peer", run_peer), ("float", run_float), ("bytes", run_bytes))
    }
    print(f"{len(maps)} maps of {mw}x{mh} (frames {w}x{h}); boxes per map: {counts}")
    print("| decoder | ms per map | vs RapidOCR |\n|---|---|---|")
    print(f"| RapidOCR DBPostProcess (float map) | {ms['peer']:.2f} | 1.00 |")
    print(f"| edged (float map, CPU path) | {ms['float']:.2f} | {ms['peer'] / ms['float']:.2f}x |")
    print(f"| edged (byte map, GPU path) | {ms['bytes']:.2f} | {ms['peer'] / ms['bytes']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
