"""Record what the bundled PP-OCR chain finds on every frame of the traffic sample (edged make-sample
--scene traffic), so the analytics tests run the tracker and the analytics on real detector output
without running the detector (tests/data/traffic_detections.json; tests/test_analytics_sample.py).

The chain is the one the daemon runs (config -> loaded models -> stages -> model servers), with the
settings of the daemon tests: the detector at 640 px (the frame's own size) on one thread, the recognizer on every box; no
tracking (the tests track). The file names the sample it was made from (scene, frames, seed and a
hash of its truth): the tests refuse a recording of another sample, so after changing the scene run
this again.

Usage: python scripts/record_traffic.py [--out tests/data/traffic_detections.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.config.loader import load_config  # noqa: E402
from edged.demo.sample_traffic import FRAMES, make_traffic_sample  # noqa: E402
from edged.demo.truth import read_video  # noqa: E402
from edged.observability.metrics import Metrics  # noqa: E402
from edged.pipeline.flow import run_frames  # noqa: E402
from edged.pipeline.runner import build_stages  # noqa: E402
from edged.serving.loading import load_model  # noqa: E402
from edged.types import Frame  # noqa: E402

CONFIG = """
models:
  det:
    path: {models}/PP-OCRv6_det_small.onnx
    kind: ppocr_det
    preprocess: {{limit_side: 640, limit_type: max}}
    onnxruntime: {{intra_op_threads: 1, inter_op_threads: 1}}
  rec:
    path: {models}/PP-OCRv6_rec_small.onnx
    kind: ppocr_rec
    onnxruntime: {{intra_op_threads: 1, inter_op_threads: 1}}
cameras:
  traffic:
    source: {video}
    chain:
      - {{model: det, min_score: 0.5}}
      - {{model: rec, on: det}}
"""


def truth_digest(sidecar: dict[str, object]) -> str:
    """What a recording is checked against: the sample's truth and traffic keys, hashed. The truth
    depends on the scene and on OpenCV's text metrics (its Hershey fonts differ between 4.x and 5.x)."""
    keep = {k: v for k, v in sidecar.items() if k != "video"}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def scene_sidecar(frames: int, fps: float, seed: int) -> dict[str, object]:
    """The sidecar make_traffic_sample writes (less `video`), computed without rendering."""
    from edged.demo.sample_traffic import TrafficScene, scene_extra

    scene = TrafficScene(frames, fps, seed)
    return {
        "frames": scene.frames,
        "fps": fps,
        "size": [scene.width, scene.height],
        "seed": scene.seed,
        **scene_extra(scene),
        "truth": [scene.truth(i) for i in range(scene.frames)],
    }


def check_recording(rec: dict[str, object]) -> None:
    """Raise if `rec` (a loaded recording) was made from another scene than this checkout draws."""
    s = rec["sample"]
    assert isinstance(s, dict)
    if truth_digest(scene_sidecar(s["frames"], s["fps"], s["seed"])) != s["truth_sha256"]:
        raise RuntimeError(
            "tests/data/traffic_detections.json was recorded from another traffic scene (or another "
            "OpenCV major version, whose fonts differ): run python scripts/record_traffic.py"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests/data/traffic_detections.json"))
    ap.add_argument("--models", default=str(ROOT / "models"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "traffic.mp4"
        make_traffic_sample(video, frames=FRAMES)
        sidecar = json.loads(video.with_suffix(".json").read_text())
        cfg_path = Path(tmp) / "edged.yaml"
        cfg_path.write_text(CONFIG.format(models=args.models, video=video))
        cfg = load_config(cfg_path)
        metrics = Metrics()
        models = {
            n: load_model(n, m, metrics, source_sizes=[tuple(sidecar["size"])]) for n, m in cfg.models.items()
        }
        try:
            frames = [Frame("traffic", i, img) for i, img in enumerate(read_video(video))]
            t0 = time.perf_counter()
            results, failed = run_frames("traffic", build_stages(cfg.cameras["traffic"], models), frames)
            wall = time.perf_counter() - t0
        finally:
            for m in models.values():
                m.close()
    if failed:
        print(f"{len(failed)} frames failed, first: {failed[0][1]}", file=sys.stderr)
        return 1
    out = {
        "about": "PP-OCRv6 det (640 px, 1 thread) + rec on each frame of `edged make-sample --scene traffic`; "
        "written by scripts/record_traffic.py",
        "sample": {
            "scene": "traffic",
            "frames": sidecar["frames"],
            "fps": sidecar["fps"],
            "seed": sidecar["seed"],
            "truth_sha256": truth_digest(sidecar),
        },
        "frames": [[d.to_dict() for d in r.detections] for r in sorted(results, key=lambda r: r.frame.seq)],
    }
    Path(args.out).write_text(json.dumps(out, separators=(",", ":")) + "\n")
    found = sum(len(f) for f in out["frames"])
    print(f"wrote {args.out}: {len(results)} frames, {found} detections, chain {wall:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
