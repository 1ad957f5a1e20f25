"""CPU path vs GPU path of one chain on identical decoded frames, frame by frame (issue 5's proof that
the GPU path reads the same strings as the CPU path).

The frames are decoded once and every variant runs the same chain (`run_frames`: the camera flow over model servers, in order,
none dropped) with only the device changed, so a difference points at one part:
  cpu            CPU preprocessing (OpenCV), ONNX Runtime CPU      -- the reference
  cpu-pre+cuda   CPU preprocessing, ONNX Runtime CUDA (TF32 on)    -- how RapidOCR-CUDA runs
  gpu            fused kernel, ONNX Runtime CUDA (TF32 on)         -- edged's GPU path, ORT defaults
  gpu-fp32       fused kernel, ONNX Runtime CUDA, TF32 off         -- the same with full fp32
Variants that cannot run here (no GPU) are skipped with the reason.

Usage: python scripts/compare_paths.py [--config configs/examples/gpu.yaml] [--video samples/plates.avi] [--frames 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.config.inference import ModelConfig  # noqa: E402
from edged.config.loader import load_config  # noqa: E402
from edged.demo.truth import read_video, result_texts, sample_truth  # noqa: E402
from edged.pipeline.flow import run_frames  # noqa: E402
from edged.pipeline.runner import build_stages  # noqa: E402
from edged.serving.loading import LoadedModel, load_model  # noqa: E402
from edged.types import Frame  # noqa: E402

VARIANTS = {  # name: (preprocess device, providers, tf32)
    "cpu": ("cpu", ["CPUExecutionProvider"], True),
    "cpu-pre+cuda": ("cpu", ["CUDAExecutionProvider"], True),
    "gpu": ("kernel", ["CUDAExecutionProvider"], True),
    "gpu-fp32": ("kernel", ["CUDAExecutionProvider"], False),
}


def variant_model(m: ModelConfig, device: str, providers: list[str], tf32: bool) -> ModelConfig:
    return m.model_copy(
        update={
            "preprocess": m.preprocess.model_copy(update={"device": device}),
            "onnxruntime": m.onnxruntime.model_copy(update={"providers": providers, "tf32": tf32}),
        }
    )


def run_variant(name: str, cfg: Any, frames: list[Any]) -> list[list[str]] | str:
    device, providers, tf32 = VARIANTS[name]
    try:
        models: dict[str, LoadedModel] = {
            n: load_model(n, variant_model(m, device, providers, tf32)) for n, m in cfg.models.items()
        }
    except Exception as e:  # e.g. no GPU on this machine
        return f"skipped: {str(e).splitlines()[0]}"
    if "CUDAExecutionProvider" in providers and any(m.engine.info.device != "cuda" for m in models.values()):
        return "skipped: the CUDA provider is not available here"
    if device != "cpu" and any(m.preprocessor.name == "cpu" for m in models.values()):
        return "skipped: GPU preprocessing is not available here"
    cam = next(iter(cfg.cameras.values()))
    try:
        results, failed = run_frames(
            f"compare-{name}",
            build_stages(cam, models),
            (Frame("compare", i, img) for i, img in enumerate(frames)),
        )
    finally:
        for m in models.values():
            m.close()
    if failed:
        return f"failed: frame {failed[0][0].seq}: {failed[0][1]}"
    return [result_texts(r) for r in results]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs/examples/gpu.yaml"))
    ap.add_argument("--video", default=str(ROOT / "samples/plates.avi"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    a = ap.parse_args()
    video = Path(a.video)
    frames = read_video(video, a.frames)
    want = sample_truth(video, len(frames))
    cfg = load_config(a.config, env={})
    reads = {v: run_variant(v, cfg, frames) for v in a.variants}
    ran = {v: r for v, r in reads.items() if isinstance(r, list)}
    for v, r in reads.items():
        if isinstance(r, str):
            print(f"{v}: {r}")
    print(
        f"{len(frames)} frames of {video.name}; rows: frames where any variant differs from the truth or the cpu path"
    )
    print("| frame | truth | " + " | ".join(ran) + " |")
    print("|---" * (len(ran) + 2) + "|")
    for i in range(len(frames)):
        row = [r[i] for r in ran.values()]
        ref = ran["cpu"][i] if "cpu" in ran else want[i]
        if any(x != want[i] or x != ref for x in row):
            print(f"| {i} | {want[i]} | " + " | ".join(str(x) for x in row) + " |")
    with_text = [i for i in range(len(frames)) if want[i]]
    for v, r in ran.items():
        exact = sum(r[i] == want[i] for i in with_text)
        same = sum(r[i] == ran["cpu"][i] for i in range(len(frames))) if "cpu" in ran else "-"
        print(
            f"{v:13}: exact reads {exact}/{len(with_text)}; same strings as the cpu path on {same}/{len(frames)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
